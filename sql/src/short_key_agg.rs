//! Aggregation grouped by a few short string keys, found by their 16-byte views.
//!
//! The lake's low-cardinality string columns (`side`, `action`, `interval`, `kind`, `status`)
//! are a few bytes each, and DataFusion reads them as `Utf8View`, where a string of up to 12
//! bytes lives whole in its 16-byte view. DataFusion's partial aggregation hashes each row's
//! key, then compares it with its group's stored key column by column (about 8 ns a row for
//! `GROUP BY action, side` over 51 M order messages: half of that query). [`ShortKeyAggregate`]
//! is a physical optimizer rule that replaces such a partial aggregation with
//! [`ShortKeyAggregateExec`], which gives each distinct view of a key column a small code from a
//! little open-addressing table (the view itself is the whole key, so one 16-byte comparison
//! finds it), packs the codes of a row's columns into one word, finds that word's group the
//! same way, and hands the group indices to DataFusion's own vectorised group accumulators.
//!
//! It is made for few groups. A key longer than 12 bytes (its view holds only a prefix), more
//! than [`MAX_KEYS`] distinct values in a column or more than [`MAX_KEYS`] groups make it hand
//! over: it emits the states of the groups so far and runs the original partial aggregation
//! over the rest of its input, the batch that did not fit included. The final aggregation above
//! merges both, so results never depend on which path ran.

use std::fmt;
use std::sync::{Arc, Mutex};

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch, StringViewArray};
use arrow::buffer::{NullBuffer, ScalarBuffer};
use arrow::datatypes::{DataType, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{EmitTo, GroupsAccumulator};
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_expr_common::utils::evaluate_expressions_to_arrays;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{
    Boundedness, ChildrenPropertiesMode, EmissionType, ReplaceChildrenOptions,
};
use datafusion::physical_plan::metrics::{
    BaselineMetrics, Count, ExecutionPlanMetricsSet, MetricBuilder, MetricsSet,
};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};

use crate::plan_util::{AggregateParts, replace_nodes};

/// Distinct values a key column, and groups the aggregation, may have before the operator hands
/// over to DataFusion's own.
pub const MAX_KEYS: usize = 1024;

/// Bits of a column's code in a row's packed key: codes are below [`MAX_KEYS`].
const CODE_BITS: usize = 10;

/// Key columns a row's packed key (128 bits) holds.
const MAX_COLUMNS: usize = 128 / CODE_BITS;

/// The optimizer rule: partial aggregations grouped by `Utf8View` columns become
/// [`ShortKeyAggregateExec`].
///
/// ```
/// use std::sync::Arc;
/// use datafusion::execution::SessionStateBuilder;
/// use datafusion::prelude::SessionContext;
/// use flowsense_sql::ShortKeyAggregate;
/// let state = SessionStateBuilder::new()
///     .with_default_features()
///     .with_physical_optimizer_rule(Arc::new(ShortKeyAggregate))
///     .build();
/// let ctx = SessionContext::new_with_state(state);
/// ```
#[derive(Debug, Default)]
pub struct ShortKeyAggregate;

impl PhysicalOptimizerRule for ShortKeyAggregate {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        replace_nodes(plan, ShortKeyAggregateExec::try_from_partial)
    }

    fn name(&self) -> &str {
        "short_key_aggregate"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A partial aggregation that finds each row's group through its key columns' string views.
#[derive(Debug)]
pub struct ShortKeyAggregateExec {
    /// The aggregation it replaces, which takes over when the keys do not fit.
    original: Arc<dyn ExecutionPlan>,
    input: Arc<dyn ExecutionPlan>,
    parts: AggregateParts,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl ShortKeyAggregateExec {
    /// The replacement for `plan` when it is a partial aggregation this operator can run: one
    /// grouping set of 1 to 12 plain `Utf8View` columns; no `DISTINCT`, ordered aggregates or
    /// limit; every aggregate with a group accumulator (`count`, `sum`, `avg`, `min`, `max` ...).
    pub fn try_from_partial(plan: &Arc<dyn ExecutionPlan>) -> Option<Self> {
        let agg = plan.downcast_ref::<AggregateExec>()?;
        if *agg.mode() != AggregateMode::Partial {
            return None;
        }
        let parts = AggregateParts::of(agg)?;
        let input_schema = agg.input().schema();
        let views = parts.group.len() <= MAX_COLUMNS
            && parts.group.iter().all(|(e, _)| {
                e.downcast_ref::<Column>().is_some_and(|c| {
                    input_schema
                        .fields()
                        .get(c.index())
                        .is_some_and(|f| f.data_type() == &DataType::Utf8View)
                })
            });
        if !views || !parts.aggr.iter().all(|a| a.groups_accumulator_supported()) {
            return None;
        }
        let schema = agg.schema();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(agg.input().output_partitioning().partition_count()),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Some(ShortKeyAggregateExec {
            original: Arc::clone(plan),
            input: Arc::clone(agg.input()),
            parts,
            schema,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for ShortKeyAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.parts.fmt_as(f, "ShortKeyAggregateExec", "Partial")
    }
}

impl ExecutionPlan for ShortKeyAggregateExec {
    fn name(&self) -> &str {
        "ShortKeyAggregateExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        self.parts.apply_expressions(f)
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let input = children.swap_remove(0);
        let original =
            Arc::clone(&self.original).replace_children(vec![Arc::clone(&input)], RECOMPUTE)?;
        Ok(Arc::new(ShortKeyAggregateExec {
            original,
            input,
            parts: self.parts.clone(),
            schema: Arc::clone(&self.schema),
            properties: Arc::clone(&self.properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, Arc::clone(&context))?;
        let keys = self.parts.group.len();
        let accumulators = (self.parts.aggr.iter())
            .map(|a| a.create_groups_accumulator())
            .collect::<Result<Vec<_>>>()?;
        let run = Run {
            group: self.parts.keys(),
            args: self.parts.args(),
            filters: self.parts.filters.clone(),
            accumulators,
            columns: (0..keys).map(|_| KeyCodes::new()).collect(),
            groups: Groups::new(keys),
            codes: vec![Vec::new(); keys],
            done: 0,
            schema: Arc::clone(&self.schema),
            baseline: BaselineMetrics::new(&self.metrics, partition),
            handed_over: MetricBuilder::new(&self.metrics).counter("handed_over", partition),
        };
        let original = Arc::clone(&self.original);
        let out = futures::stream::once(run.aggregate(input, original, context)).try_flatten();
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            out,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// The key of a null: its length field (the low 32 bits) is beyond any inline string's.
const NULL_KEY: u128 = u128::MAX;

/// Table slots: twice [`MAX_KEYS`], so a lookup rarely probes past its first slot.
const SLOTS: usize = 2 * MAX_KEYS;

/// An empty slot's code.
const EMPTY: u32 = u32::MAX;

/// Small codes for up to [`MAX_KEYS`] distinct 16-byte keys, by open addressing.
struct KeyCodes {
    slots: Box<[(u128, u32)]>,
    /// The keys in code order.
    keys: Vec<u128>,
}

impl KeyCodes {
    fn new() -> Self {
        KeyCodes {
            slots: vec![(0, EMPTY); SLOTS].into_boxed_slice(),
            keys: Vec::new(),
        }
    }

    /// The key's code, given a new one when it is new; [`EMPTY`] when the table is full
    /// (callers OR their codes together and check once: any `EMPTY` shows as a high bit).
    #[inline(always)]
    fn code(&mut self, key: u128) -> u32 {
        let slot = slot_of(key);
        let (k, c) = self.slots[slot];
        if k == key && c != EMPTY {
            c
        } else {
            self.probe(key, slot)
        }
    }

    /// [`code`](Self::code) past the first slot: further slots, or a new code.
    #[cold]
    #[inline(never)]
    fn probe(&mut self, key: u128, mut slot: usize) -> u32 {
        loop {
            let (k, c) = self.slots[slot];
            if c == EMPTY {
                if self.keys.len() == MAX_KEYS {
                    return EMPTY;
                }
                let c = self.keys.len() as u32;
                self.slots[slot] = (key, c);
                self.keys.push(key);
                return c;
            }
            if k == key {
                return c;
            }
            slot = (slot + 1) % SLOTS;
        }
    }
}

/// The first slot to look in for a key: the halves mixed, then the product's top bits.
#[inline(always)]
fn slot_of(key: u128) -> usize {
    let x = (key as u64) ^ ((key >> 64) as u64).rotate_left(23);
    (x.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SLOTS.trailing_zeros())) as usize % SLOTS
}

/// Most cells the dense table of code combinations may have (4 MiB of group numbers).
const MAX_GRID_BITS: u32 = 20;

/// Groups of two or more key columns, found by their columns' codes: a dense table indexed by
/// the codes side by side (each column given as many bits as its codes need so far), falling
/// back to [`KeyCodes`] over the packed codes when the table would be too large.
struct Groups {
    /// Group numbers by packed codes ([`CODE_BITS`] a column), in group order.
    packed: KeyCodes,
    /// Bits of each column's code in a cell's index.
    bits: Vec<u32>,
    /// The group of each combination of codes, or [`EMPTY`]; empty when too large.
    cells: Vec<u32>,
}

impl Groups {
    fn new(columns: usize) -> Self {
        let mut g = Groups {
            packed: KeyCodes::new(),
            bits: vec![1; columns],
            cells: Vec::new(),
        };
        g.cells = vec![EMPTY; 1 << g.bits.iter().sum::<u32>()];
        g
    }

    /// Widens the dense table when a column now has more codes than its bits hold; false when
    /// the table is (now) too large and the packed codes must be looked up instead.
    fn fit(&mut self, columns: &[KeyCodes]) -> bool {
        let need = |c: &KeyCodes| c.keys.len().max(2).next_power_of_two().trailing_zeros();
        if self.bits.is_empty() || columns.iter().zip(&self.bits).all(|(c, &b)| need(c) <= b) {
            return !self.bits.is_empty();
        }
        self.bits = columns.iter().map(need).collect();
        let total: u32 = self.bits.iter().sum();
        if total > MAX_GRID_BITS {
            self.bits.clear();
            self.cells = Vec::new();
            return false;
        }
        self.cells = vec![EMPTY; 1 << total];
        for (g, &p) in self.packed.keys.iter().enumerate() {
            let codes =
                (0..columns.len()).map(|j| (p >> (j * CODE_BITS)) as u32 % (1 << CODE_BITS));
            let at = self.cell(codes);
            self.cells[at] = g as u32;
        }
        true
    }

    /// The group of a combination not in the dense table yet: its packed codes' group, new
    /// when they are new ([`EMPTY`] when the groups are full).
    #[cold]
    #[inline(never)]
    fn new_cell(&mut self, at: usize, packed: u128) -> u32 {
        let g = self.packed.code(packed);
        if g != EMPTY {
            self.cells[at] = g;
        }
        g
    }

    /// A combination's cell in the dense table.
    #[inline(always)]
    fn cell(&self, codes: impl Iterator<Item = u32>) -> usize {
        let (mut at, mut shift) = (0usize, 0u32);
        for (c, &b) in codes.zip(&self.bits) {
            at |= (c as usize) << shift;
            shift += b;
        }
        at
    }
}

/// Children replaced with their properties computed anew.
const RECOMPUTE: ReplaceChildrenOptions =
    ReplaceChildrenOptions::new(ChildrenPropertiesMode::Recompute);

/// Why a batch's keys do not fit this operator.
struct HandOver;

/// One partition's aggregation.
struct Run {
    group: Vec<Arc<dyn PhysicalExpr>>,
    args: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    accumulators: Vec<Box<dyn GroupsAccumulator>>,
    /// Each key column's codes.
    columns: Vec<KeyCodes>,
    /// With two or more key columns, their combinations (with one, a column's code is its
    /// group).
    groups: Groups,
    /// Each key column's codes for the batch at hand.
    codes: Vec<Vec<u32>>,
    /// Groups whose rows the accumulators have seen (a batch that hands over may have given
    /// codes to more).
    done: usize,
    schema: SchemaRef,
    baseline: BaselineMetrics,
    /// Partitions that handed over to DataFusion's aggregation (shown by `EXPLAIN ANALYZE`).
    handed_over: Count,
}

impl Run {
    async fn aggregate(
        mut self,
        mut input: SendableRecordBatchStream,
        original: Arc<dyn ExecutionPlan>,
        context: Arc<TaskContext>,
    ) -> Result<BoxStream<'static, Result<RecordBatch>>> {
        let mut indices = Vec::new();
        let elapsed = self.baseline.elapsed_compute().clone();
        while let Some(batch) = input.next().await {
            let batch = batch?;
            let timer = elapsed.timer();
            if batch.num_rows() == 0 {
                continue;
            }
            let keys = evaluate_expressions_to_arrays(&self.group, &batch)?;
            if self.group_indices(&keys, &mut indices).is_err() {
                timer.done();
                self.handed_over.add(1);
                return self.hand_over(batch, input, original, context);
            }
            self.accumulate(&batch, &indices)?;
        }
        let timer = elapsed.timer();
        let baseline = self.baseline.clone();
        let out = self.emit()?;
        baseline.record_output(out.num_rows());
        timer.done();
        Ok(futures::stream::once(async move { Ok(out) }).boxed())
    }

    /// Each row's group, from its key columns' views.
    fn group_indices(
        &mut self,
        keys: &[ArrayRef],
        indices: &mut Vec<usize>,
    ) -> Result<(), HandOver> {
        for ((key, table), codes) in keys.iter().zip(&mut self.columns).zip(&mut self.codes) {
            column_codes(key, table, codes)?;
        }
        let n = keys[0].len();
        indices.clear();
        indices.resize(n, 0);
        let (groups, all) = (&mut self.groups, self.codes.as_slice());
        let packed = |i: usize| {
            let codes = all.iter().enumerate();
            codes.fold(0u128, |p, (j, c)| p | (c[i] as u128) << (j * CODE_BITS))
        };
        // OR of every group number: an `EMPTY` among them (a full table) sets the high bits.
        let mut seen = 0u32;
        // Two or more columns: their codes side by side index the dense table while it fits.
        let dense = all.len() > 1 && groups.fit(&self.columns);
        match (all, dense) {
            ([codes], _) => {
                for (g, &c) in indices.iter_mut().zip(codes) {
                    *g = c as usize;
                }
            }
            ([first, second], true) => {
                let shift = groups.bits[0];
                for (i, ((g, &a), &b)) in indices.iter_mut().zip(first).zip(second).enumerate() {
                    let at = (a | b << shift) as usize;
                    let mut x = groups.cells[at];
                    if x == EMPTY {
                        x = groups.new_cell(at, packed(i));
                    }
                    seen |= x;
                    *g = x as usize;
                }
            }
            (_, true) => {
                for (i, g) in indices.iter_mut().enumerate() {
                    let at = groups.cell(all.iter().map(|c| c[i]));
                    let mut x = groups.cells[at];
                    if x == EMPTY {
                        x = groups.new_cell(at, packed(i));
                    }
                    seen |= x;
                    *g = x as usize;
                }
            }
            (_, false) => {
                for (i, g) in indices.iter_mut().enumerate() {
                    let x = groups.packed.code(packed(i));
                    seen |= x;
                    *g = x as usize;
                }
            }
        }
        if seen as usize >= MAX_KEYS {
            return Err(HandOver);
        }
        Ok(())
    }

    /// Feeds a batch's rows to the accumulators by group.
    fn accumulate(&mut self, batch: &RecordBatch, indices: &[usize]) -> Result<()> {
        let groups = self.group_count();
        for ((acc, args), filter) in self
            .accumulators
            .iter_mut()
            .zip(&self.args)
            .zip(&self.filters)
        {
            let values = evaluate_expressions_to_arrays(args, batch)?;
            let filter = filter
                .as_ref()
                .map(|f| f.evaluate(batch)?.into_array(batch.num_rows()))
                .transpose()?;
            acc.update_batch(
                &values,
                indices,
                filter.as_ref().map(|f| f.as_boolean()),
                groups,
            )?;
        }
        self.done = groups;
        Ok(())
    }

    fn group_count(&self) -> usize {
        if self.columns.len() == 1 {
            self.columns[0].keys.len()
        } else {
            self.groups.packed.keys.len()
        }
    }

    /// One row per group the accumulators have seen: its key, then each aggregate's state.
    fn emit(mut self) -> Result<RecordBatch> {
        let n = self.done;
        let mut columns: Vec<ArrayRef> = Vec::with_capacity(self.schema.fields().len());
        for (j, codes) in self.columns.iter().enumerate() {
            let keys = (0..n).map(|g| {
                if self.columns.len() == 1 {
                    codes.keys[g]
                } else {
                    let code =
                        (self.groups.packed.keys[g] >> (j * CODE_BITS)) as usize % (1 << CODE_BITS);
                    codes.keys[code]
                }
            });
            columns.push(key_column(keys.collect())?);
        }
        for acc in &mut self.accumulators {
            columns.extend(acc.state(EmitTo::All)?);
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }

    /// Emits the groups so far and runs the original aggregation over `batch` and the rest.
    fn hand_over(
        self,
        batch: RecordBatch,
        input: SendableRecordBatchStream,
        original: Arc<dyn ExecutionPlan>,
        context: Arc<TaskContext>,
    ) -> Result<BoxStream<'static, Result<RecordBatch>>> {
        let schema = input.schema();
        let rest = futures::stream::once(async move { Ok(batch) }).chain(input);
        let rest: SendableRecordBatchStream =
            Box::pin(RecordBatchStreamAdapter::new(Arc::clone(&schema), rest));
        let tail = original
            .replace_children(vec![Arc::new(StreamExec::new(schema, rest))], RECOMPUTE)?
            .execute(0, context)?;
        let head = (self.done > 0).then(|| self.emit()).transpose()?;
        Ok(futures::stream::iter(head.map(Ok)).chain(tail).boxed())
    }
}

/// Each row's code in a key column: the code of its view when the string is inline, of
/// [`NULL_KEY`] for a null. Hands over at a string too long to be inline or a full table.
fn column_codes(
    key: &ArrayRef,
    table: &mut KeyCodes,
    codes: &mut Vec<u32>,
) -> Result<(), HandOver> {
    let array = key.as_string_view_opt().ok_or(HandOver)?;
    let views = array.views();
    codes.clear();
    codes.resize(views.len(), 0);
    // The low 32 bits of a view hold the length: at most 12 bytes means the value is inline.
    // `longest` is the largest length, `seen` the OR of the codes (an `EMPTY` sets high bits).
    let (mut longest, mut seen) = (0u32, 0u32);
    match array.nulls().filter(|n| n.null_count() > 0) {
        None => {
            for (c, &v) in codes.iter_mut().zip(views.iter()) {
                longest = longest.max(v as u32);
                *c = table.code(v);
                seen |= *c;
            }
        }
        Some(nulls) => {
            for (i, (c, &v)) in codes.iter_mut().zip(views.iter()).enumerate() {
                let k = if nulls.is_null(i) {
                    NULL_KEY
                } else {
                    longest = longest.max(v as u32);
                    v
                };
                *c = table.code(k);
                seen |= *c;
            }
        }
    }
    if longest > 12 || seen as usize >= MAX_KEYS {
        Err(HandOver)
    } else {
        Ok(())
    }
}

/// A key column from inline views, [`NULL_KEY`] as null.
fn key_column(keys: Vec<u128>) -> Result<ArrayRef> {
    let nulls = keys
        .contains(&NULL_KEY)
        .then(|| keys.iter().map(|&k| k != NULL_KEY).collect::<NullBuffer>());
    let views: Vec<u128> = keys
        .into_iter()
        .map(|k| if k == NULL_KEY { 0 } else { k })
        .collect();
    Ok(Arc::new(StringViewArray::try_new(
        ScalarBuffer::from(views),
        Vec::new(),
        nulls,
    )?))
}

/// A plan node that yields one stream once: the rest of a partition's input, for the
/// aggregation [`ShortKeyAggregateExec`] hands over to.
struct StreamExec {
    stream: Mutex<Option<SendableRecordBatchStream>>,
    properties: Arc<PlanProperties>,
}

impl StreamExec {
    fn new(schema: SchemaRef, stream: SendableRecordBatchStream) -> Self {
        let properties = PlanProperties::new(
            EquivalenceProperties::new(schema),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Incremental,
            Boundedness::Bounded,
        );
        StreamExec {
            stream: Mutex::new(Some(stream)),
            properties: Arc::new(properties),
        }
    }
}

impl fmt::Debug for StreamExec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StreamExec")
    }
}

impl DisplayAs for StreamExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("StreamExec")
    }
}

impl ExecutionPlan for StreamExec {
    fn name(&self) -> &str {
        "StreamExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        Vec::new()
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        _children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(self)
    }

    fn execute(
        &self,
        _partition: usize,
        _ctx: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let taken = self.stream.lock().map(|mut s| s.take());
        taken.ok().flatten().ok_or_else(|| {
            DataFusionError::Internal("StreamExec's stream was already taken".into())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array};
    use arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::{SessionConfig, SessionContext};

    /// Two sessions over the same batches, with and without the rule.
    fn sessions(partitions: Vec<Vec<RecordBatch>>) -> (SessionContext, SessionContext) {
        let schema = partitions[0][0].schema();
        let make = |rule: bool| {
            let config = SessionConfig::new().with_target_partitions(2);
            let mut state = SessionStateBuilder::new()
                .with_config(config)
                .with_default_features();
            if rule {
                state = state.with_physical_optimizer_rule(Arc::new(ShortKeyAggregate));
            }
            let ctx = SessionContext::new_with_state(state.build());
            let table = MemTable::try_new(Arc::clone(&schema), partitions.clone()).unwrap();
            ctx.register_table("t", Arc::new(table)).unwrap();
            ctx
        };
        (make(true), make(false))
    }

    /// What a run of a query showed.
    struct Ran {
        /// Its rows, printed and sorted.
        rows: Vec<String>,
        /// Partitions of the operator in its plan (zero: the rule did not fire).
        partitions: usize,
        /// How many of them handed over.
        handed_over: usize,
    }

    /// Sums the operator's partitions and hand-overs in a plan that has run.
    fn tally(plan: &Arc<dyn ExecutionPlan>, ran: &mut Ran) {
        if plan.name() == "ShortKeyAggregateExec" {
            ran.partitions += plan.output_partitioning().partition_count();
            let m = plan.metrics().unwrap();
            ran.handed_over += m.sum_by_name("handed_over").map_or(0, |v| v.as_usize());
        }
        for child in plan.children() {
            tally(child, ran);
        }
    }

    async fn run(ctx: &SessionContext, sql: &str) -> Ran {
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.create_physical_plan().await.unwrap();
        let batches = datafusion::physical_plan::collect(Arc::clone(&plan), ctx.task_ctx())
            .await
            .unwrap();
        let mut rows: Vec<String> = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string()
            .lines()
            .map(String::from)
            .collect();
        rows.sort();
        let mut ran = Ran {
            rows,
            partitions: 0,
            handed_over: 0,
        };
        tally(&plan, &mut ran);
        ran
    }

    /// A batch of `n` rows: `a` from `a_values` (None is null), `b` from `b_values`, `v` a number.
    fn batch(seed: usize, n: usize, a_values: &[Option<&str>], b_values: &[&str]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8View, true),
            Field::new("b", DataType::Utf8View, false),
            Field::new("g", DataType::Int64, false),
            Field::new("v", DataType::Float64, true),
        ]));
        let pick = |i: usize, m: usize| (i * 31 + i / 3 + seed * 13) % m;
        let a: StringViewArray = (0..n).map(|i| a_values[pick(i, a_values.len())]).collect();
        let b: StringViewArray = (0..n)
            .map(|i| Some(b_values[pick(i + 3, b_values.len())]))
            .collect();
        let g: Int64Array = (0..n).map(|i| ((i + seed) % 3) as i64).collect();
        let v: Float64Array = (0..n)
            .map(|i| (i % 11 != 0).then_some(((i * 31 + seed) % 97) as f64 * 0.25))
            .collect();
        RecordBatch::try_new(
            schema,
            vec![Arc::new(a), Arc::new(b), Arc::new(g), Arc::new(v)],
        )
        .unwrap()
    }

    const QUERIES: [&str; 4] = [
        "SELECT a, b, count(*) AS n, sum(v) AS s, avg(v) AS m, min(v) AS lo, max(v) AS hi FROM t GROUP BY a, b",
        "SELECT b, count(v) AS n, sum(v) FILTER (WHERE g = 1) AS s1 FROM t GROUP BY b",
        "SELECT a, count(*) AS n FROM t WHERE v > 3 GROUP BY a",
        "SELECT b, a, max(g) AS g FROM t GROUP BY b, a, b",
    ];

    /// Runs the queries with and without the rule; the same rows, and how many partitions of
    /// each query handed over.
    async fn same_as_datafusion(partitions: Vec<Vec<RecordBatch>>, queries: &[&str]) -> Vec<usize> {
        let (ours, plain) = sessions(partitions);
        let mut handed_over = Vec::new();
        for sql in queries {
            let got = run(&ours, sql).await;
            let want = run(&plain, sql).await;
            assert!(got.partitions > 0, "the rule did not fire for {sql}");
            assert_eq!(want.partitions, 0);
            assert_eq!(got.rows, want.rows, "{sql}");
            handed_over.push(got.handed_over);
        }
        handed_over
    }

    #[tokio::test]
    async fn short_keys_with_nulls_give_what_datafusion_gives() {
        let a = [Some("add"), Some("cancel"), None, Some("execute"), Some("")];
        let b = ["buy", "sell"];
        let partitions = vec![
            (0..3).map(|s| batch(s, 300, &a, &b)).collect(),
            (3..5).map(|s| batch(s, 257, &a, &b)).collect(),
        ];
        assert_eq!(same_as_datafusion(partitions, &QUERIES).await, [0; 4]);
    }

    #[tokio::test]
    async fn a_long_key_mid_stream_hands_over_without_losing_rows() {
        let a = [Some("add"), Some("cancel"), Some("delete")];
        let long = [Some("add"), Some("a value longer than twelve bytes")];
        let b = ["buy", "sell"];
        let partitions = vec![
            vec![
                batch(0, 200, &a, &b),
                batch(1, 200, &long, &b),
                batch(2, 200, &a, &b),
            ],
            vec![batch(3, 100, &long, &b), batch(4, 100, &a, &b)],
        ];
        only_queries_keyed_by_a_hand_over(same_as_datafusion(partitions, &QUERIES).await);
    }

    /// Every query of [`QUERIES`] with `a` among its keys met the values of `a` that do not fit;
    /// `GROUP BY b` never does.
    fn only_queries_keyed_by_a_hand_over(handed_over: Vec<usize>) {
        assert!(
            handed_over[0] > 0 && handed_over[2] > 0 && handed_over[3] > 0,
            "{handed_over:?}"
        );
        assert_eq!(handed_over[1], 0);
    }

    #[tokio::test]
    async fn more_keys_than_the_table_holds_hand_over() {
        let many: Vec<String> = (0..MAX_KEYS + 200).map(|i| format!("k{i}")).collect();
        let many: Vec<Option<&str>> = many.iter().map(|s| Some(s.as_str())).collect();
        let few = [Some("x"), Some("y")];
        let b = ["buy", "sell", "none"];
        // The first batches fit; the wide ones overflow the first column's codes midway.
        let partitions = vec![
            vec![
                batch(0, 500, &few, &b),
                batch(1, 3000, &many, &b),
                batch(2, 50, &few, &b),
            ],
            vec![batch(3, 2000, &many, &b)],
        ];
        only_queries_keyed_by_a_hand_over(same_as_datafusion(partitions, &QUERIES).await);
    }

    /// Three columns of 300 values each need 27 bits side by side, more than the dense table
    /// takes: their combinations are found by their packed codes instead.
    #[tokio::test]
    async fn many_codes_in_three_columns_use_packed_codes() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", DataType::Utf8View, false),
            Field::new("b", DataType::Utf8View, false),
            Field::new("c", DataType::Utf8View, true),
            Field::new("v", DataType::Float64, false),
        ]));
        let make = |seed: usize| {
            let col = |p: &str| -> StringViewArray {
                (0..900)
                    .map(|i| Some(format!("{p}{}", (i * 7 + seed) % 300)))
                    .collect()
            };
            let c: StringViewArray = (0..900)
                .map(|i| ((i * 7 + seed) % 300 != 5).then(|| format!("c{}", (i * 7 + seed) % 300)))
                .collect();
            let v: Float64Array = (0..900).map(|i| (i % 13) as f64).collect();
            let columns: Vec<ArrayRef> = vec![
                Arc::new(col("a")),
                Arc::new(col("b")),
                Arc::new(c),
                Arc::new(v),
            ];
            RecordBatch::try_new(Arc::clone(&schema), columns).unwrap()
        };
        let partitions = vec![vec![make(0), make(1)], vec![make(2)]];
        let sql = "SELECT a, b, c, count(*) AS n, sum(v) AS s FROM t GROUP BY a, b, c";
        assert_eq!(same_as_datafusion(partitions, &[sql]).await, [0]);
    }

    #[test]
    fn codes_are_dense_and_stable_until_full() {
        let mut codes = KeyCodes::new();
        let views: Vec<u128> = (0..MAX_KEYS as u128).map(|i| (i << 32) | 3).collect();
        for (i, &v) in views.iter().enumerate() {
            assert_eq!(codes.code(v), i as u32);
        }
        assert_eq!(
            codes.code(0),
            EMPTY,
            "full: the empty string cannot get a code"
        );
        for (i, &v) in views.iter().enumerate().rev() {
            assert_eq!(codes.code(v), i as u32);
        }
        let mut empty = KeyCodes::new();
        assert_eq!(empty.code(0), 0, "the empty string's view is all zeros");
        assert_eq!(empty.code(NULL_KEY), 1);
        assert_eq!(empty.code(0), 0);
    }
}
