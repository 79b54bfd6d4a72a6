//! Feeding a job's input a step at a time: a [`Feeder`] sends what its pace allows and returns,
//! so one worker can drive one job to its end ([`crate::run::feed_batch`]) or many jobs side
//! by side (the service's worker loop), with the same batches and the same input times.
//! A live feed is polled the same way: what has arrived goes in, and the feeder never waits on
//! a socket.

use std::iter::Peekable;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use flowsense_core::job::{JobSpec, LiveSource, Source};
use flowsense_core::{DeadLetter, Lake, MarketEvent, Symbol};
use flowsense_sinks::dead::DeadLetterLog;
use flowsense_sources::Record;
use flowsense_sources::live::{
    BinanceConfig, BinanceVenue, LiveFeed, LiveOptions, Polled, StockConfig,
};
use flowsense_sources::merge::EventStream;
use flowsense_sources::stocks::Vendor;

use crate::job::{JobHandles, LiveReport, SourceCounts, symbols_of, worker_source};
use crate::run::input_time;

/// Batches in flight before the feeder waits for the graph to catch up.
const IN_FLIGHT: usize = 16;
/// Most events a paced feeder sends in one call, so a burst does not starve other jobs.
const PACED_CHUNK: usize = 1024;
/// How often a quiet live feed is looked at for the live clock (arrivals wake the worker at
/// once).
const LIVE_POLL: Duration = Duration::from_millis(10);

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
    /// A live feed: each event as it arrives.
    Live,
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
    source: Input<S>,
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
            source: Input::Events(source.peekable()),
            pace,
            epoch: epoch.max(1),
            high: i64::MIN,
            events: 0,
            since_wait: 0,
            origin: None,
            observer: None,
        }
    }

    /// A feeder of a live feed (see [`LiveInput`]); its pace is [`Pace::Live`]. Call it on
    /// the worker's thread: arrivals wake that thread.
    pub fn live(live: LiveInput, epoch: u64) -> Self {
        live.feed.wake(std::thread::current());
        Feeder {
            source: Input::Live(Box::new(live)),
            pace: Pace::Live,
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
            Pace::Live => self.feed_live(h),
        }
    }

    /// A live feed's counts so far (`None` for other sources).
    pub fn live_counts(&self) -> Option<LiveReport> {
        match &self.source {
            Input::Live(l) => Some(l.report()),
            Input::Events(_) => None,
        }
    }

    fn feed_live(&mut self, h: &mut JobHandles) -> Fed {
        let Input::Live(live) = &mut self.source else {
            return Fed::Exhausted;
        };
        let now = Instant::now();
        let mut n = 0;
        let mut ended = false;
        while n < PACED_CHUNK {
            match live.feed.try_next() {
                Polled::Record(Record::Event(ev)) => {
                    // Top-of-book rows are derived from the book the graph rebuilds itself.
                    if matches!(ev, MarketEvent::Bbo(..) | MarketEvent::Quote(..))
                        || (!live.only.is_empty() && !live.only.contains(ev.symbol()))
                    {
                        continue;
                    }
                    let ts = ev.ts().0;
                    if ts > self.high {
                        self.high = ts;
                        live.high_at = Some(now);
                    }
                    let t = input_time(self.high, self.epoch);
                    if t > *h.input.time() {
                        h.input.advance_to(t);
                    }
                    if let Some(o) = &mut self.observer {
                        o(&ev);
                    }
                    h.input.send(ev);
                    n += 1;
                }
                Polled::Record(Record::Dead(d)) => live.dead(&d),
                Polled::Record(_) => {}
                Polled::Empty => break,
                Polled::Ended => {
                    ended = true;
                    break;
                }
            }
        }
        // The live clock: with no event for a while, the input moves on as the last event's
        // time plus the wall time since it came, less the grace.
        if let Some(at) = live.high_at {
            let since = now.duration_since(at).as_nanos() as i64;
            let t = self
                .high
                .saturating_add(since)
                .saturating_sub(live.grace)
                .max(0) as u64;
            let t = t - t % self.epoch;
            if t > input_time(self.high, self.epoch) && t > *h.input.time() {
                // Counted once it passes the last event: the market has been quiet for longer
                // than the grace, and buckets close on the live clock alone.
                if t as i64 > self.high && (*h.input.time() as i64) <= self.high {
                    live.clock_advances += 1;
                }
                h.input.advance_to(t);
            }
        }
        live.publish(false);
        self.events += n as u64;
        if n > 0 {
            // What arrived goes in now, not when the input's buffer fills or its time moves:
            // a live event's latency is the graph's, not the batching's.
            h.input.flush();
            Fed::Sent(n)
        } else if ended {
            live.end();
            Fed::Exhausted
        } else if live.busy_poll {
            // Due at once: the worker steps and polls again without parking.
            Fed::Until(now)
        } else {
            Fed::Until(now + LIVE_POLL)
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
        let Input::Events(source) = &mut self.source else {
            return Fed::Exhausted;
        };
        let mut n = 0;
        while n < batch {
            let Some(ev) = source.next() else { break };
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
            let Input::Events(source) = &mut self.source else {
                break;
            };
            let Some(ts) = source.peek().map(|e| e.ts().0) else {
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
            let next = source.next();
            self.advance(h);
            if let Some(ev) = next {
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
        // Each event goes in when its time comes, as a live one would.
        h.input.flush();
        Fed::Sent(n)
    }
}

/// Where a feeder's events come from.
enum Input<S: Iterator<Item = MarketEvent>> {
    Events(Peekable<S>),
    Live(Box<LiveInput>),
}

/// A live feed as a job's input: its feed, the job's symbol filter, the grace of its live
/// clock, and where its dead letters go.
pub struct LiveInput {
    feed: LiveFeed,
    grace: i64,
    only: Vec<Symbol>,
    dead: Option<DeadLetterLog>,
    dead_error: Option<String>,
    counts: Arc<Mutex<SourceCounts>>,
    high_at: Option<Instant>,
    clock_advances: u64,
    published: Instant,
    busy_poll: bool,
}

impl LiveInput {
    /// Opens `source`'s feed; `dead` (if given) takes its dead letters into the lake, and
    /// `counts` gets its figures as it runs.
    pub fn open(
        source: &LiveSource,
        only: Vec<Symbol>,
        dead: Option<DeadLetterLog>,
        counts: Arc<Mutex<SourceCounts>>,
    ) -> anyhow::Result<LiveInput> {
        let opts = LiveOptions {
            reconnect: source.reconnect,
            record: source.record.as_ref().map(Into::into),
            ..Default::default()
        };
        let vendor = match source.exchange.as_str() {
            "alpaca-iex" | "alpaca-sip" => Some(Vendor::Alpaca),
            "polygon" => Some(Vendor::Polygon),
            _ => None,
        };
        let feed = match vendor {
            Some(vendor) => {
                let (key, secret) = StockConfig::credentials(vendor)?;
                let config = StockConfig {
                    vendor,
                    feed: source.exchange.trim_start_matches("alpaca-").to_string(),
                    symbols: source.symbols.clone(),
                    streams: source.streams.clone(),
                    ws_url: source.ws_url.clone(),
                    key,
                    secret,
                };
                LiveFeed::stocks(&config, &opts).context("source.live: connecting")?
            }
            None => {
                let venue = BinanceVenue::parse(&source.exchange)
                    .with_context(|| format!("source.live.exchange {:?}", source.exchange))?;
                let config = BinanceConfig {
                    venue,
                    symbols: source.symbols.clone(),
                    ws_url: source.ws_url.clone(),
                    rest_url: source.rest_url.clone(),
                    streams: source.streams.clone(),
                };
                LiveFeed::binance(&config, &opts).context("source.live: connecting")?
            }
        };
        Ok(LiveInput {
            feed,
            grace: source.grace.nanos() as i64,
            only,
            dead,
            dead_error: None,
            counts,
            high_at: None,
            clock_advances: 0,
            published: Instant::now(),
            busy_poll: source.busy_poll,
        })
    }

    fn dead(&mut self, d: &DeadLetter) {
        if let Ok(mut c) = self.counts.lock() {
            c.dead_letters += 1;
        }
        if let Some(log) = &mut self.dead
            && let Err(e) = log.push(d)
        {
            self.dead_error = Some(format!("writing dead letters: {e}"));
            self.dead = None;
        }
    }

    fn report(&self) -> LiveReport {
        LiveReport {
            feed: self.feed.counts(),
            clock_advances: self.clock_advances,
            error: self.feed.error().or_else(|| self.dead_error.clone()),
        }
    }

    /// Puts the figures where the run's owner reads them (at most every 100 ms unless forced).
    fn publish(&mut self, force: bool) {
        if !force && self.published.elapsed() < Duration::from_millis(100) {
            return;
        }
        self.published = Instant::now();
        let report = self.report();
        if let Ok(mut c) = self.counts.lock() {
            c.live = Some(report);
        }
    }

    /// The feed has ended: the dead letters are written out and the figures published.
    fn end(&mut self) {
        if let Some(log) = self.dead.take()
            && let Err(e) = log.finish()
        {
            self.dead_error = Some(format!("writing dead letters: {e}"));
        }
        self.publish(true);
    }
}

impl Drop for LiveInput {
    fn drop(&mut self) {
        // A job stopped before its feed ended still writes the dead letters it had.
        self.end();
    }
}

/// The feeder of worker `index` of `peers` for `spec`: its share of a history source at
/// `pace` (see [`worker_source`]), or, for a live source, the feed on worker 0 (the other
/// workers get theirs through the exchange) with its dead letters going to `lake`'s
/// `dead_letters` as source `live-<job>-<start>` when the job writes to the lake.
pub fn worker_feeder(
    spec: &JobSpec,
    lake: &Lake,
    index: usize,
    peers: usize,
    counts: Arc<Mutex<SourceCounts>>,
    pace: Pace,
) -> anyhow::Result<Feeder<EventStream>> {
    let epoch = spec.epoch.nanos();
    let Source::Live(live) = &spec.source else {
        let source = worker_source(spec, lake, index, peers, counts)?;
        return Ok(Feeder::new(source, pace, epoch));
    };
    if index != 0 {
        return Ok(Feeder::new(Box::new(std::iter::empty()), Pace::Live, epoch));
    }
    let dead = if spec.sinks.lake {
        let id = crate::wall::new_run_id(&format!("live-{}", spec.name));
        Some(DeadLetterLog::new(lake.clone(), &id).context("opening the dead letters' table")?)
    } else {
        None
    };
    let input = LiveInput::open(live, symbols_of(spec)?, dead, counts)?;
    Ok(Feeder::live(input, epoch))
}
