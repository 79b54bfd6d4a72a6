//! Graph monitoring: timely's own logging streams (Operates, Channels, Messages, Schedule) turned
//! into per-operator and per-channel figures for one job on one worker, plus frontier lag
//! sampled from probes on each stage. `flowsense run --stats` prints them; the lake keeps them as
//! the `flowsense_operators` and `flowsense_channels` tables; the web UI will read the same.

use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use arrow::array::{ArrayRef, Int64Array, RecordBatch, StringArray, UInt64Array};
use flowsense_core::{Lake, Table};
use timely::logging::{StartStop, TimelyEvent, TimelyEventBuilder};
use timely::worker::Worker;

/// One operator's figures on one worker.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct OperatorStats {
    /// Global worker index.
    pub worker: usize,
    /// Worker-unique operator id.
    pub id: usize,
    /// Address in the dataflow (`0.2` is the second operator of the first dataflow).
    pub addr: String,
    /// The operator's name (for ours, the trait's name).
    pub name: String,
    /// Times scheduled.
    pub schedules: u64,
    /// Time spent scheduled, nanoseconds.
    pub busy_ns: u64,
    /// Records received on its inputs.
    pub records_in: u64,
    /// Records sent from its outputs.
    pub records_out: u64,
    /// Messages (batches) received.
    pub messages_in: u64,
    /// Messages sent.
    pub messages_out: u64,
    /// Largest lag seen between the input's time and this operator's output frontier, in
    /// event-time nanoseconds (stages with a probe only).
    pub frontier_lag_ns: Option<i64>,
}

/// One channel's figures on one worker.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ChannelStats {
    /// Global worker index.
    pub worker: usize,
    /// Worker-unique channel id.
    pub id: usize,
    /// Source operator address and output port.
    pub source: String,
    /// Target operator address and input port.
    pub target: String,
    /// The data type carried.
    pub typ: String,
    /// Messages sent by this worker.
    pub messages_sent: u64,
    /// Records sent by this worker.
    pub records_sent: u64,
    /// Messages received by this worker.
    pub messages_received: u64,
    /// Records received by this worker.
    pub records_received: u64,
}

#[derive(Default)]
struct Raw {
    ops: BTreeMap<usize, (Vec<usize>, String, u64, Duration)>,
    running: HashMap<usize, Duration>,
    channels: BTreeMap<usize, RawChannel>,
}

/// A channel as logged: scope address, source and target (operator index, port), data type, and
/// counts (messages sent, records sent, messages received, records received).
type RawChannel = (Vec<usize>, (usize, usize), (usize, usize), String, [u64; 4]);

/// Figures of one worker, filled by timely's logging as the worker runs.
#[derive(Clone, Default)]
pub struct WorkerMonitor {
    raw: Rc<RefCell<Raw>>,
    lag: Rc<RefCell<HashMap<(usize, String), i64>>>,
    worker: usize,
}

impl WorkerMonitor {
    /// Registers the logging streams on a worker; do it before building dataflows.
    pub fn register(worker: &mut Worker) -> Self {
        let m = WorkerMonitor {
            worker: worker.index(),
            ..Default::default()
        };
        let raw = m.raw.clone();
        if let Some(mut reg) = worker.log_register() {
            reg.insert::<TimelyEventBuilder, _>("timely", move |_time, data| {
                let Some(data) = data else {
                    return;
                };
                let mut r = raw.borrow_mut();
                for (t, ev) in data.iter() {
                    match ev {
                        TimelyEvent::Operates(o) => {
                            r.ops
                                .insert(o.id, (o.addr.clone(), o.name.clone(), 0, Duration::ZERO));
                        }
                        TimelyEvent::Channels(c) => {
                            r.channels.insert(
                                c.id,
                                (
                                    c.scope_addr.clone(),
                                    c.source,
                                    c.target,
                                    c.typ.clone(),
                                    [0; 4],
                                ),
                            );
                        }
                        TimelyEvent::Messages(m) => {
                            if let Some(ch) = r.channels.get_mut(&m.channel) {
                                let k = if m.is_send { 0 } else { 2 };
                                ch.4[k] += 1;
                                ch.4[k + 1] += m.record_count.max(0) as u64;
                            }
                        }
                        TimelyEvent::Schedule(s) => match s.start_stop {
                            StartStop::Start => {
                                r.running.insert(s.id, *t);
                            }
                            StartStop::Stop => {
                                if let Some(start) = r.running.remove(&s.id)
                                    && let Some(op) = r.ops.get_mut(&s.id)
                                {
                                    op.2 += 1;
                                    op.3 += t.saturating_sub(start);
                                }
                            }
                        },
                        _ => {}
                    }
                }
            });
        }
        m
    }

    /// Records a frontier lag sample for the operator called `name` in dataflow `dataflow`.
    pub fn lag(&self, dataflow: usize, name: &str, lag_ns: i64) {
        let mut l = self.lag.borrow_mut();
        let e = l.entry((dataflow, name.to_string())).or_insert(lag_ns);
        *e = (*e).max(lag_ns);
    }

    /// The figures so far (flush the worker's log registry first to include the latest events).
    pub fn snapshot(&self) -> (Vec<OperatorStats>, Vec<ChannelStats>) {
        let r = self.raw.borrow();
        let lag = self.lag.borrow();
        let dotted = |a: &[usize]| {
            a.iter()
                .map(|x| x.to_string())
                .collect::<Vec<_>>()
                .join(".")
        };
        let mut by_addr: HashMap<Vec<usize>, OperatorStats> = r
            .ops
            .iter()
            .map(|(id, (addr, name, n, busy))| {
                (
                    addr.clone(),
                    OperatorStats {
                        worker: self.worker,
                        id: *id,
                        addr: dotted(addr),
                        name: name.clone(),
                        schedules: *n,
                        busy_ns: busy.as_nanos() as u64,
                        frontier_lag_ns: addr
                            .first()
                            .and_then(|&d| lag.get(&(d, name.clone())))
                            .copied(),
                        ..Default::default()
                    },
                )
            })
            .collect();
        let mut channels = Vec::new();
        for (id, (scope, src, dst, typ, c)) in &r.channels {
            let mut s = scope.clone();
            s.push(src.0);
            let mut d = scope.clone();
            d.push(dst.0);
            if let Some(op) = by_addr.get_mut(&s) {
                op.records_out += c[1];
                op.messages_out += c[0];
            }
            if let Some(op) = by_addr.get_mut(&d) {
                op.records_in += c[3];
                op.messages_in += c[2];
            }
            channels.push(ChannelStats {
                worker: self.worker,
                id: *id,
                source: format!("{}:{}", dotted(&s), src.1),
                target: format!("{}:{}", dotted(&d), dst.1),
                typ: typ.clone(),
                messages_sent: c[0],
                records_sent: c[1],
                messages_received: c[2],
                records_received: c[3],
            });
        }
        let mut ops: Vec<OperatorStats> = by_addr.into_values().collect();
        ops.sort_by_key(|o| o.id);
        (ops, channels)
    }

    /// Drops the figures of dataflow `dataflow` (a long-running worker, once its job is done).
    pub fn forget(&self, dataflow: usize) {
        let mut r = self.raw.borrow_mut();
        r.ops.retain(|_, o| o.0.first() != Some(&dataflow));
        r.channels.retain(|_, c| c.0.first() != Some(&dataflow));
        self.lag.borrow_mut().retain(|k, _| k.0 != dataflow);
    }
}

impl WorkerMonitor {
    /// The figures of one dataflow's operators and channels (those whose address starts with
    /// its index), as [`WorkerMonitor::snapshot`] gives them.
    pub fn snapshot_of(&self, dataflow: usize) -> (Vec<OperatorStats>, Vec<ChannelStats>) {
        let (mut ops, mut channels) = self.snapshot();
        let prefix = format!("{dataflow}");
        let mine = |addr: &str| addr.split('.').next() == Some(prefix.as_str());
        ops.retain(|o| mine(&o.addr));
        channels.retain(|c| mine(&c.source));
        (ops, channels)
    }
}

/// Removes a job's figures of an earlier run (worker 0 does it before its input starts; no
/// worker writes its figures before every input has ended, so none is removed by mistake).
pub fn clear_stats(lake: &Lake, job: &str) -> anyhow::Result<()> {
    use object_store::ObjectStoreExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let store = lake.store();
    let prefix = format!("{job}-w");
    for table in [Table::Operators, Table::Channels] {
        let listing = rt.block_on(lake.list_table(table))?;
        for meta in listing {
            if meta
                .location
                .filename()
                .is_some_and(|f| f.starts_with(&prefix))
            {
                rt.block_on(store.delete(&meta.location))?;
            }
        }
    }
    Ok(())
}

/// Writes a job's figures as `flowsense_operators/<job>-w<worker>.parquet` and
/// `flowsense_channels/...` (one file per worker, replaced by the next run of the job).
pub fn write_stats(
    lake: &Lake,
    job: &str,
    worker: usize,
    ops: &[OperatorStats],
    channels: &[ChannelStats],
) -> anyhow::Result<()> {
    let s = |v: Vec<String>| Arc::new(StringArray::from(v)) as ArrayRef;
    let u = |v: Vec<u64>| Arc::new(UInt64Array::from(v)) as ArrayRef;
    let jobs = |n: usize| s(vec![job.to_string(); n]);
    let op_batch = RecordBatch::try_new(
        Table::Operators.file_schema(),
        vec![
            jobs(ops.len()),
            u(ops.iter().map(|o| o.worker as u64).collect()),
            u(ops.iter().map(|o| o.id as u64).collect()),
            s(ops.iter().map(|o| o.addr.clone()).collect()),
            s(ops.iter().map(|o| o.name.clone()).collect()),
            u(ops.iter().map(|o| o.schedules).collect()),
            u(ops.iter().map(|o| o.busy_ns).collect()),
            u(ops.iter().map(|o| o.records_in).collect()),
            u(ops.iter().map(|o| o.records_out).collect()),
            u(ops.iter().map(|o| o.messages_in).collect()),
            u(ops.iter().map(|o| o.messages_out).collect()),
            Arc::new(Int64Array::from(
                ops.iter().map(|o| o.frontier_lag_ns).collect::<Vec<_>>(),
            )),
        ],
    )?;
    let ch_batch = RecordBatch::try_new(
        Table::Channels.file_schema(),
        vec![
            jobs(channels.len()),
            u(channels.iter().map(|c| c.worker as u64).collect()),
            u(channels.iter().map(|c| c.id as u64).collect()),
            s(channels.iter().map(|c| c.source.clone()).collect()),
            s(channels.iter().map(|c| c.target.clone()).collect()),
            s(channels.iter().map(|c| c.typ.clone()).collect()),
            u(channels.iter().map(|c| c.messages_sent).collect()),
            u(channels.iter().map(|c| c.records_sent).collect()),
            u(channels.iter().map(|c| c.messages_received).collect()),
            u(channels.iter().map(|c| c.records_received).collect()),
        ],
    )?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    for (table, batch) in [(Table::Operators, op_batch), (Table::Channels, ch_batch)] {
        let buf = flowsense_sinks::encode_parquet(&batch, &Default::default())?;
        let path = lake.path(&[table.name(), &format!("{job}-w{worker:04}.parquet")]);
        let store = lake.store();
        rt.block_on(object_store::ObjectStoreExt::put(
            &*store,
            &path,
            object_store::PutPayload::from(buf),
        ))?;
    }
    Ok(())
}

/// The figures as a table for people.
pub fn render(ops: &[OperatorStats], channels: &[ChannelStats]) -> String {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    t.set_header([
        "worker",
        "operator",
        "addr",
        "records in",
        "records out",
        "schedules",
        "busy ms",
        "frontier lag ms",
    ]);
    for o in ops {
        t.add_row([
            o.worker.to_string(),
            o.name.clone(),
            o.addr.clone(),
            o.records_in.to_string(),
            o.records_out.to_string(),
            o.schedules.to_string(),
            format!("{:.1}", o.busy_ns as f64 / 1e6),
            o.frontier_lag_ns
                .map_or("-".into(), |l| format!("{:.1}", l as f64 / 1e6)),
        ]);
    }
    let mut c = comfy_table::Table::new();
    c.load_preset(comfy_table::presets::UTF8_FULL_CONDENSED);
    c.set_header([
        "worker",
        "channel",
        "from",
        "to",
        "records sent",
        "records received",
        "messages sent",
    ]);
    for ch in channels {
        c.add_row([
            ch.worker.to_string(),
            ch.id.to_string(),
            ch.source.clone(),
            ch.target.clone(),
            ch.records_sent.to_string(),
            ch.records_received.to_string(),
            ch.messages_sent.to_string(),
        ]);
    }
    format!("{t}\n{c}\n")
}
