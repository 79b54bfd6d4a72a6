//! The broker a trading job's orders go to: the simulated exchange (backtests, replays and
//! paper trading on a live feed) or Interactive Brokers (`[broker] kind = "ibkr"`).

use std::sync::Arc;

use anyhow::Context;
use flowsense_core::job::JobSpec;
use flowsense_core::order::{Broker, BrokerNotice, ClientOrderId, ExecReport, Order, Waker};
use flowsense_core::{MarketEvent, Price, Symbol, UnixNanos};
use flowsense_operators::SimExchange;
use flowsense_sinks::ibkr::{IbBroker, IbConfig, IbSession};

/// One symbol's broker, of the kind the job's spec names.
pub enum JobBroker {
    /// The simulated exchange of `[execution]`.
    Sim(Box<SimExchange>),
    /// Interactive Brokers.
    Ib(Box<IbBroker>),
}

/// Makes the brokers of one worker's symbols: the worker's IB session, if the job has one, is
/// opened here (connected and reconciled before the first event).
///
/// ```
/// use flowsense_core::job::JobSpec;
/// use flowsense_core::Symbol;
/// use flowsense_dataflows::broker::{BrokerFactory, JobBroker};
/// let spec = JobSpec::from_toml("name = \"j\"\n[source.synthetic]\nsymbols = 1\n\
///     [strategy]\nbucket = \"1s\"\nsignal = \"buy_volume\"\nentry = 1\n\
///     [strategy.sizing]\nmethod = \"fixed\"\nsize = 1").unwrap();
/// let f = BrokerFactory::open(&spec, 0).unwrap();
/// assert!(matches!(f.make(&Symbol::new("A").unwrap()), JobBroker::Sim(_)));
/// ```
pub struct BrokerFactory {
    exec: flowsense_core::strategy::ExecutionSpec,
    ib: Option<Arc<IbSession>>,
}

impl BrokerFactory {
    /// The factory of worker `worker` of the job.
    pub fn open(spec: &JobSpec, worker: usize) -> anyhow::Result<BrokerFactory> {
        let ib = match spec.live_broker() {
            Some(b) => {
                let config = IbConfig::from_spec(&spec.name, b, worker);
                let session = IbSession::connect(config)
                    .with_context(|| format!("job {}: [broker]", spec.name))?;
                Some(Arc::new(session))
            }
            None => None,
        };
        Ok(BrokerFactory {
            exec: spec.execution.clone(),
            ib,
        })
    }

    /// The broker of one symbol.
    pub fn make(&self, symbol: &Symbol) -> JobBroker {
        match &self.ib {
            Some(s) => JobBroker::Ib(Box::new(s.broker(symbol))),
            None => JobBroker::Sim(Box::new(SimExchange::new(symbol.clone(), &self.exec))),
        }
    }
}

impl Broker for JobBroker {
    fn submit(&mut self, order: Order) {
        match self {
            JobBroker::Sim(b) => b.submit(order),
            JobBroker::Ib(b) => b.submit(order),
        }
    }

    fn cancel(&mut self, id: ClientOrderId, at: UnixNanos) {
        match self {
            JobBroker::Sim(b) => b.cancel(id, at),
            JobBroker::Ib(b) => b.cancel(id, at),
        }
    }

    fn modify(&mut self, id: ClientOrderId, price: Price, at: UnixNanos) -> bool {
        match self {
            JobBroker::Sim(b) => b.modify(id, price, at),
            JobBroker::Ib(b) => b.modify(id, price, at),
        }
    }

    fn on_market(&mut self, ev: &MarketEvent) {
        match self {
            JobBroker::Sim(b) => b.on_market(ev),
            JobBroker::Ib(b) => b.on_market(ev),
        }
    }

    fn reports(&mut self, now: UnixNanos, out: &mut Vec<ExecReport>) {
        match self {
            JobBroker::Sim(b) => b.reports(now, out),
            JobBroker::Ib(b) => b.reports(now, out),
        }
    }

    fn flush(&mut self, out: &mut Vec<ExecReport>) {
        match self {
            JobBroker::Sim(b) => b.flush(out),
            JobBroker::Ib(b) => b.flush(out),
        }
    }

    fn set_waker(&mut self, wake: Waker) {
        match self {
            JobBroker::Sim(b) => b.set_waker(wake),
            JobBroker::Ib(b) => b.set_waker(wake),
        }
    }

    fn notices(&mut self, out: &mut Vec<BrokerNotice>) {
        match self {
            JobBroker::Sim(b) => b.notices(out),
            JobBroker::Ib(b) => b.notices(out),
        }
    }
}
