//! Feeding a job's input a step at a time: a [`Feeder`] sends what its pace allows and returns,
//! so one worker can drive one job to its end ([`crate::run::feed_batch`]) or many jobs side
//! by side (the service's worker loop), with the same batches and the same input times.

use std::iter::Peekable;
use std::time::{Duration, Instant};

use flowsense_core::MarketEvent;

use crate::job::JobHandles;
use crate::run::input_time;

/// Batches in flight before the feeder waits for the graph to catch up.
const IN_FLIGHT: usize = 16;
/// Most events a paced feeder sends in one call, so a burst does not starve other jobs.
const PACED_CHUNK: usize = 1024;

/// How fast the events go in.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Pace {
    /// As fast as the graph takes them, `batch` events per input advance.
    Batch {
        /// Events per input advance.
        batch: usize,
    },
    /// As a live feed would arrive: each event when its time comes, at `speed` x real time
    /// (the wall clock enters here, in the driver, never in an operator).
    Replay {
        /// Multiple of real time.
        speed: f64,
    },
}

/// What one call to [`Feeder::feed`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fed {
    /// Sent this many events and advanced the input.
    Sent(usize),
    /// Sent nothing: the graph is behind by the batches allowed in flight; step the worker.
    Behind,
    /// Sent nothing: the next event is due at this instant (paced feeds).
    Until(Instant),
    /// The source has ended; nothing more will be sent.
    Exhausted,
}

/// What a feeder shows each event before it goes in ([`Feeder::observe`]).
pub type Observer = Box<dyn FnMut(&MarketEvent)>;

/// Sends a source's events into a job's input, a step at a time.
///
/// ```
/// use flowsense_dataflows::feed::{Feeder, Pace};
/// let f = Feeder::new(std::iter::empty(), Pace::Batch { batch: 4096 }, 1_000_000);
/// assert_eq!(f.events(), 0);
/// ```
pub struct Feeder<S: Iterator<Item = MarketEvent>> {
    source: Peekable<S>,
    pace: Pace,
    epoch: u64,
    high: i64,
    events: u64,
    since_wait: usize,
    origin: Option<(i64, Instant)>,
    observer: Option<Observer>,
}

impl<S: Iterator<Item = MarketEvent>> Feeder<S> {
    /// A feeder of `source` at `pace`, with input times rounded down to `epoch` nanoseconds.
    pub fn new(source: S, pace: Pace, epoch: u64) -> Self {
        Feeder {
            source: source.peekable(),
            pace,
            epoch: epoch.max(1),
            high: i64::MIN,
            events: 0,
            since_wait: 0,
            origin: None,
            observer: None,
        }
    }

    /// Shows `f` every event before it goes in (the service keeps a paced job's books with it,
    /// for its stream).
    ///
    /// ```
    /// use flowsense_dataflows::feed::{Feeder, Pace};
    /// let f = Feeder::new(std::iter::empty(), Pace::Replay { speed: 1.0 }, 1_000_000)
    ///     .observe(Box::new(|ev| println!("{:?}", ev.ts())));
    /// assert_eq!(f.events(), 0);
    /// ```
    pub fn observe(mut self, f: Observer) -> Self {
        self.observer = Some(f);
        self
    }

    /// The pace the events go in at.
    pub fn pace(&self) -> Pace {
        self.pace
    }

    /// Events sent so far.
    pub fn events(&self) -> u64 {
        self.events
    }

    /// Sends what the pace allows now. The input's time trails the latest event time by
    /// [`crate::run::LATENESS_NS`], so the frontier never passes an event still to come.
    pub fn feed(&mut self, h: &mut JobHandles) -> Fed {
        match self.pace {
            Pace::Batch { batch } => self.feed_batch(h, batch.max(1)),
            Pace::Replay { speed } => self.feed_paced(h, speed),
        }
    }

    fn advance(&mut self, h: &mut JobHandles) {
        let t = input_time(self.high, self.epoch);
        if t > *h.input.time() {
            h.input.advance_to(t);
        }
    }

    fn feed_batch(&mut self, h: &mut JobHandles, batch: usize) -> Fed {
        if self.since_wait >= IN_FLIGHT {
            if h.probe.less_than(h.input.time()) {
                return Fed::Behind;
            }
            self.since_wait = 0;
        }
        let mut n = 0;
        while n < batch {
            let Some(ev) = self.source.next() else { break };
            self.high = self.high.max(ev.ts().0);
            if let Some(o) = &mut self.observer {
                o(&ev);
            }
            h.input.send(ev);
            n += 1;
        }
        if n == 0 {
            return Fed::Exhausted;
        }
        self.events += n as u64;
        self.since_wait += 1;
        self.advance(h);
        Fed::Sent(n)
    }

    fn feed_paced(&mut self, h: &mut JobHandles, speed: f64) -> Fed {
        let now = Instant::now();
        let mut n = 0;
        while n < PACED_CHUNK {
            let Some(ts) = self.source.peek().map(|e| e.ts().0) else {
                break;
            };
            let (t0, w0) = *self.origin.get_or_insert((ts, now));
            let due = w0 + Duration::from_secs_f64(((ts - t0).max(0) as f64 * 1e-9) / speed);
            if due > now {
                if n == 0 {
                    return Fed::Until(due);
                }
                break;
            }
            self.high = self.high.max(ts);
            self.advance(h);
            if let Some(ev) = self.source.next() {
                if let Some(o) = &mut self.observer {
                    o(&ev);
                }
                h.input.send(ev);
            }
            n += 1;
        }
        if n == 0 {
            return Fed::Exhausted;
        }
        self.events += n as u64;
        Fed::Sent(n)
    }
}
