//! `flowsense tws`: a scripted TWS on loopback that speaks the IB API's wire protocol (the one
//! the `ibapi` crate speaks), so a job with `[broker] kind = "ibkr"` can be tried with no IB
//! account. It is a script, not a market: every order gets the answer `--on-order` names (a
//! limit order fills at its limit, a market order at `--price`); trade on paper to simulate.

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, ValueEnum};
use flowsense_bench::tws::{FakeTws, OnOrder, TwsScript};

/// What every order gets.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Answer {
    /// Accepted and filled at once, with its commission report.
    Fill,
    /// Accepted; rests until cancelled.
    Rest,
    /// Refused (error 201).
    Reject,
    /// Half filled at once; the rest rests.
    Partial,
}

/// `flowsense tws`'s arguments.
#[derive(Args, Debug)]
pub struct TwsArgs {
    /// Where it listens (IB Gateway's paper port by default).
    #[arg(long, default_value = "127.0.0.1:4002")]
    pub listen: String,
    /// What every order gets.
    #[arg(long, value_enum, default_value = "fill")]
    pub on_order: Answer,
    /// The price market orders fill at.
    #[arg(long, default_value_t = 100.0)]
    pub price: f64,
    /// The commission of each execution.
    #[arg(long, default_value_t = 0.35)]
    pub commission: f64,
    /// The account it manages.
    #[arg(long, default_value = "DU0000001")]
    pub account: String,
}

impl TwsArgs {
    /// Serves until killed.
    pub fn execute(self) -> anyhow::Result<ExitCode> {
        let on_order = match self.on_order {
            Answer::Fill => OnOrder::Fill,
            Answer::Rest => OnOrder::Rest,
            Answer::Reject => OnOrder::Reject(" refused by flowsense tws --on-order reject".into()),
            Answer::Partial => OnOrder::Partial(vec![0.5]),
        };
        let script = TwsScript {
            on_order,
            account: self.account.clone(),
            commission: self.commission,
            price: self.price,
            ..TwsScript::default()
        };
        let tws = FakeTws::start_on(&self.listen, script)
            .with_context(|| format!("listening on {}", self.listen))?;
        let mut out = std::io::stdout();
        let _ = writeln!(
            out,
            "scripted TWS on {} (IB API, protobuf), account {}: every order: {:?}; Ctrl-C stops it",
            tws.address(),
            self.account,
            self.on_order
        );
        let _ = writeln!(
            out,
            "try: flowsense venue --speed 10 & flowsense run examples/live-ibkr-local.toml"
        );
        let _ = out.flush();
        loop {
            std::thread::park();
        }
    }
}
