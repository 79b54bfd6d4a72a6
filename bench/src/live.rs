//! `flowsense bench live`: the live path's tick-to-order latency and decode throughput.
//!
//! - **Tick to order**: a local Binance ([`crate::venue`]) replays a capture at `speed` times
//!   real time, its stamps moved to the present. A paper strategy trades it through the same
//!   `Trade` operator and simulated exchange as `flowsense run`, behind a broker wrapper that
//!   measures each order as it is handed over. Two clocks are read: from the message's receive
//!   stamp on the feed thread (socket to order: decode, the queue, the worker's wake, the
//!   graph), and from the event's entry into the graph's input (graph to order). The baseline
//!   is the same graph fed the same events from memory at the same pace, graph to order.
//! - **Decode throughput**: the whole capture sent at once through the local venue and decoded
//!   by the live feed, beside the file reader of the same lines and the live decoder alone on
//!   them in memory.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::BufRead;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context;
use flowsense_core::job::{JobSpec, Source};
use flowsense_core::order::{Broker, ClientOrderId, ExecReport, Order};
use flowsense_core::{MarketEvent, UnixNanos};
use flowsense_dataflows::feed::{Feeder, LiveInput, Pace};
use flowsense_dataflows::job::SourceCounts;
use flowsense_dataflows::run::drive;
use flowsense_operators::SimExchange;
use flowsense_operators::trade_strategy::{KillSwitch, TradeStrategy};
use flowsense_sources::Record;
use flowsense_sources::binance::BinanceReader;
use flowsense_sources::live::{BinanceConfig, BinanceVenue, LiveFeed, LiveOptions};
use hdrhistogram::Histogram;
use timely::dataflow::InputHandleVec;
use timely::dataflow::operators::{Input, Probe};

use crate::venue::{Script, now_offset, rest_server, shift_times, snapshot_and_frames, ws_server};

/// Options of the live benchmark.
#[derive(Clone, Debug)]
pub struct LiveBench {
    /// One symbol's USD-M capture (`<local ns> <json>` lines, gzip).
    pub capture: PathBuf,
    /// Replay speed of the latency run (times real time).
    pub speed: f64,
    /// Runs of the throughput stages; medians are reported.
    pub repeat: usize,
    /// The live run's worker polls without parking (`[source.live] busy_poll`).
    pub busy_poll: bool,
}

/// The paper strategy of the latency run: market orders on the best level's imbalance over
/// 100 ms buckets, so that orders are many.
const STRATEGY: &str = r#"
[features]
buckets = ["100ms"]
levels = 5
[strategy]
bucket = "100ms"
signal = "ofi_l1 / (bid_size + ask_size)"
entry = 0.1
exit = 0.0
max_hold = "200ms"
order = "market"
[strategy.sizing]
method = "fixed"
size = 0.001
[risk]
capital = 100000
[execution]
order_latency = "1ms"
response_latency = "1ms"
"#;

/// What the measuring broker shares with the bench.
#[derive(Default)]
struct Clocks {
    /// When each event went into the graph's input, oldest first (one worker, one symbol:
    /// the broker sees them in this order).
    sent: VecDeque<Instant>,
    /// Socket receive to order, ns.
    socket: Option<Histogram<u64>>,
    /// Graph input to order, ns.
    graph: Option<Histogram<u64>>,
}

/// The simulated exchange behind a broker that times each order as it is handed over.
struct Timed {
    inner: SimExchange,
    clocks: Rc<RefCell<Clocks>>,
    /// The event being handled: its receive stamp and when it entered the graph.
    current: (Option<UnixNanos>, Option<Instant>),
}

fn wall_ns() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

impl Broker for Timed {
    fn submit(&mut self, order: Order) {
        let mut c = self.clocks.borrow_mut();
        if let (Some(h), Some(local)) = (c.socket.as_mut(), self.current.0) {
            let _ = h.record((wall_ns() - local.0).max(1) as u64);
        }
        if let (Some(h), Some(sent)) = (c.graph.as_mut(), self.current.1) {
            let _ = h.record(sent.elapsed().as_nanos().max(1) as u64);
        }
        drop(c);
        self.inner.submit(order);
    }
    fn cancel(&mut self, id: ClientOrderId, at: UnixNanos) {
        self.inner.cancel(id, at);
    }
    fn on_market(&mut self, ev: &MarketEvent) {
        let sent = self.clocks.borrow_mut().sent.pop_front();
        self.current = (ev.local_ts(), sent);
        self.inner.on_market(ev);
    }
    fn reports(&mut self, now: UnixNanos, out: &mut Vec<ExecReport>) {
        self.inner.reports(now, out);
    }
    fn flush(&mut self, out: &mut Vec<ExecReport>) {
        self.inner.flush(out);
    }
}

fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("static bounds")
}

/// The figures of one latency run.
struct Latency {
    socket: Option<Histogram<u64>>,
    graph: Histogram<u64>,
    events: u64,
    seconds: f64,
}

/// Runs the paper strategy on one worker, fed by `feeder(worker)`; the broker's clocks.
fn trade_timed(
    spec: &JobSpec,
    socket: bool,
    feeder: impl Fn() -> anyhow::Result<Feeder<flowsense_sources::merge::EventStream>>
    + Send
    + Sync
    + 'static,
) -> anyhow::Result<Latency> {
    let spec = spec.clone();
    let guards = timely::execute(
        timely::Config::thread(),
        move |worker| -> anyhow::Result<Latency> {
            let clocks = Rc::new(RefCell::new(Clocks {
                sent: VecDeque::new(),
                socket: socket.then(histogram),
                graph: Some(histogram()),
            }));
            let (c, sp) = (clocks.clone(), spec.clone());
            let mut h = worker.dataflow::<u64, _, _>(move |scope| {
                let mut input = InputHandleVec::new();
                let probe = timely::dataflow::ProbeHandle::new();
                let exec = sp.execution.clone();
                scope
                    .input_from(&mut input)
                    .trade_with_kill(
                        &sp.name,
                        &sp.features,
                        sp.strategy.as_ref().expect("the bench's strategy"),
                        &sp.risk,
                        move |s| Timed {
                            inner: SimExchange::new(s.clone(), &exec),
                            clocks: c.clone(),
                            current: (None, None),
                        },
                        KillSwitch::default(),
                    )
                    .expect("a valid strategy")
                    .probe_with(&probe);
                flowsense_dataflows::job::JobHandles {
                    dataflow: 0,
                    input,
                    probe,
                    stages: Vec::new(),
                    counters: Rc::default(),
                    kill: None,
                }
            });
            let c = clocks.clone();
            let f = feeder()?.observe(Box::new(move |_| {
                c.borrow_mut().sent.push_back(Instant::now())
            }));
            let start = Instant::now();
            let events = drive(worker, &mut h, f, None, None);
            drop(h.input);
            worker.step_while(|| !h.probe.done());
            let seconds = start.elapsed().as_secs_f64();
            let mut c = clocks.borrow_mut();
            Ok(Latency {
                socket: c.socket.take(),
                graph: c.graph.take().expect("made above"),
                events,
                seconds,
            })
        },
    )
    .map_err(|e| anyhow::anyhow!("starting timely: {e}"))?;
    guards
        .join()
        .pop()
        .context("no worker")?
        .map_err(|e| anyhow::anyhow!("the worker failed: {e}"))?
}

fn read_lines(path: &std::path::Path) -> anyhow::Result<Vec<String>> {
    let reader = flowsense_sources::binance::open_text(path)?;
    Ok(reader.lines().collect::<std::io::Result<Vec<_>>>()?)
}

pub(crate) fn quantiles(h: &Histogram<u64>) -> String {
    let us = |q: f64| h.value_at_quantile(q) as f64 / 1e3;
    format!(
        "p50 {:>9.1} us   p99 {:>9.1} us   p999 {:>9.1} us   max {:>9.1} us   ({} orders)",
        us(0.5),
        us(0.99),
        us(0.999),
        h.max() as f64 / 1e3,
        h.len()
    )
}

/// Runs the benchmark and returns its report.
pub fn run(b: &LiveBench) -> anyhow::Result<String> {
    let lines =
        read_lines(&b.capture).with_context(|| format!("reading {}", b.capture.display()))?;
    let symbol = b
        .capture
        .file_name()
        .and_then(|n| n.to_str())
        .and_then(|n| n.split('_').next())
        .context("the capture's name is <symbol>_<date>.gz")?
        .to_string();
    let (snapshot, frames) =
        snapshot_and_frames(&lines).context("the capture holds no depth snapshot")?;
    let mut out = format!(
        "live path on {} ({} messages), release build expected; {} cores\n",
        b.capture.display(),
        frames.len(),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );

    // Tick to order, live: the venue at `speed` x, stamps moved to now.
    let ms = now_offset(&frames).context("the first frame has no E stamp")?;
    let ws = ws_server(vec![Script::paced(&lines, b.speed).shifted(ms)])?;
    let (rest, _) = rest_server(shift_times(&snapshot, ms))?;
    let spec = JobSpec::from_toml(&format!(
        "name = \"bench-live\"\n[source.live]\nexchange = \"binance-usdm\"\nsymbols = [\"{symbol}\"]\n\
         reconnect = false\nbusy_poll = {}\nws_url = \"{}\"\nrest_url = \"{rest}\"\n[sinks]\nlake = false\nstdout = true\n{STRATEGY}",
        b.busy_poll, ws.url
    ))?;
    let Source::Live(src) = spec.source.clone() else {
        unreachable!("a live spec")
    };
    let live = trade_timed(&spec, true, move || {
        let counts = Arc::new(Mutex::new(SourceCounts::default()));
        Ok(Feeder::live(
            LiveInput::open(&src, Vec::new(), None, counts)?,
            1_000_000,
        ))
    })?;

    // The baseline: the same events from memory, at the same pace, into the same graph.
    let mut reader = BinanceReader::live("bench", &symbol, true, Default::default());
    let mut events: Vec<MarketEvent> = Vec::new();
    for l in &lines {
        for r in reader.push_line(l) {
            if let Record::Event(e) = r
                && !matches!(e, MarketEvent::Bbo(..) | MarketEvent::Quote(..))
            {
                events.push(e);
            }
        }
    }
    let speed = b.speed;
    let n_events = events.len();
    let memory = trade_timed(&spec, false, move || {
        let evs: flowsense_sources::merge::EventStream = Box::new(events.clone().into_iter());
        Ok(Feeder::new(evs, Pace::Replay { speed }, 1_000_000))
    })?;
    out.push_str(&format!(
        "tick to order at {speed}x real time{} ({} events live in {:.1} s, {n_events} from memory in {:.1} s):\n",
        if b.busy_poll { ", the live worker busy-polling" } else { "" },
        live.events, live.seconds, memory.seconds
    ));
    if let Some(s) = &live.socket {
        out.push_str(&format!("  live, socket to order:  {}\n", quantiles(s)));
    }
    out.push_str(&format!(
        "  live, graph to order:   {}\n",
        quantiles(&live.graph)
    ));
    out.push_str(&format!(
        "  memory, graph to order: {}\n",
        quantiles(&memory.graph)
    ));
    if let Some(s) = &live.socket {
        let p99 = |h: &Histogram<u64>| h.value_at_quantile(0.99).max(1) as f64;
        out.push_str(&format!(
            "  socket-to-order p99 / memory graph-to-order p99: {:.2}x\n",
            p99(s) / p99(&memory.graph)
        ));
    }

    // Decode throughput.
    let mut live_t = Vec::new();
    let mut file_t = Vec::new();
    let mut mem_t = Vec::new();
    let dir = tempfile::tempdir()?;
    let file = dir.path().join(format!("{symbol}_20240808.gz"));
    std::fs::copy(&b.capture, &file)?;
    for _ in 0..b.repeat.max(1) {
        let ws = ws_server(vec![Script::at_once(frames.clone())])?;
        let (rest, _) = rest_server(snapshot.clone())?;
        let config = BinanceConfig {
            venue: BinanceVenue::UsdM,
            symbols: vec![symbol.clone()],
            ws_url: Some(ws.url.clone()),
            rest_url: Some(rest),
            streams: vec![],
        };
        let start = Instant::now();
        let feed = LiveFeed::binance(
            &config,
            &LiveOptions {
                reconnect: false,
                ..Default::default()
            },
        )?;
        let n = feed.filter(|r| matches!(r, Record::Event(_))).count();
        live_t.push((start.elapsed(), n));

        let start = Instant::now();
        let n = BinanceReader::open(vec![file.clone()], Default::default())?
            .filter(|r| matches!(r, Ok(Record::Event(_))))
            .count();
        file_t.push((start.elapsed(), n));

        let start = Instant::now();
        let mut r = BinanceReader::live("bench", &symbol, true, Default::default());
        let mut n = 0;
        for l in &lines {
            n += r
                .push_line(l)
                .filter(|r| matches!(r, Record::Event(_)))
                .count();
        }
        mem_t.push((start.elapsed(), n));
    }
    let med = |mut v: Vec<(Duration, usize)>| {
        v.sort();
        v[v.len() / 2]
    };
    let (lt, ln) = med(live_t);
    let (ft, fnn) = med(file_t);
    let (mt, mn) = med(mem_t);
    let rate = |d: Duration| frames.len() as f64 / d.as_secs_f64().max(1e-9);
    out.push_str(&format!(
        "decode throughput, median of {} (messages/s; events out):\n\
         \x20 live feed over the local socket: {:>10.0}/s ({ln} events)\n\
         \x20 file reader of the same lines:   {:>10.0}/s ({fnn} events)\n\
         \x20 live decoder alone, in memory:   {:>10.0}/s ({mn} events)\n\
         \x20 live / file: {:.2}x\n",
        b.repeat.max(1),
        rate(lt),
        rate(ft),
        rate(mt),
        rate(lt) / rate(ft)
    ));
    Ok(out)
}
