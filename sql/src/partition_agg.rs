//! Aggregation grouped by the lake's partition columns, without hashing every row.
//!
//! The lake is Hive-partitioned by `date` and `symbol`, so a scan's batches hold one value of
//! each partition column throughout (every batch comes from one file). DataFusion's partial
//! aggregation still hashes and compares the group key of every row: on `GROUP BY symbol,
//! date` over 51 M BBO rows that is a third of the query. [`PartitionKeyAggregate`] is a
//! physical optimizer rule that replaces such a partial aggregation with
//! [`PartitionKeyAggregateExec`], which finds the runs of equal keys in each batch (one run per
//! batch in practice), looks each run's key up once, and feeds the run to that group's plain
//! accumulators, as an aggregation without `GROUP BY` would (vectorised, no per-row group
//! index). The final aggregation above it is unchanged, and so are the results: the
//! operator is correct for any input order, it is only *fast* when keys come in long runs, which
//! is why the rule fires only for keys that trace back to a scan's partition columns.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, RecordBatch};
use arrow::compute::filter as filter_array;
use arrow::datatypes::SchemaRef;
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, ScalarValue};
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::Accumulator;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_expr::expressions::Column;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_expr_common::utils::evaluate_expressions_to_arrays;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::aggregates::{AggregateExec, AggregateMode};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::filter::FilterExec;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::projection::ProjectionExec;
use datafusion::physical_plan::repartition::RepartitionExec;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, Partitioning,
    PlanProperties,
};
use futures::StreamExt;

use crate::plan_util::{AggregateParts, replace_nodes, runs};

/// The optimizer rule: partial aggregations grouped only by partition columns become
/// [`PartitionKeyAggregateExec`].
///
/// ```
/// # async fn f() -> datafusion::error::Result<()> {
/// use std::sync::Arc;
/// use datafusion::execution::SessionStateBuilder;
/// use datafusion::prelude::SessionContext;
/// use flowsense_sql::PartitionKeyAggregate;
/// let state = SessionStateBuilder::new()
///     .with_default_features()
///     .with_physical_optimizer_rule(Arc::new(PartitionKeyAggregate))
///     .build();
/// let ctx = SessionContext::new_with_state(state);
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct PartitionKeyAggregate;

impl PhysicalOptimizerRule for PartitionKeyAggregate {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        replace_nodes(plan, PartitionKeyAggregateExec::try_from_partial)
    }

    fn name(&self) -> &str {
        "partition_key_aggregate"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// True when every name is a partition column of the file scan under `plan`, reached through
/// projections of plain columns, filters and round-robin repartitioning. Those
/// keep keys in long runs; the operator is correct either way, this only decides whether it pays.
fn are_partition_columns(mut plan: &Arc<dyn ExecutionPlan>, names: &[String]) -> bool {
    let mut names = names.to_vec();
    loop {
        let any = plan.as_ref();
        if let Some(p) = any.downcast_ref::<ProjectionExec>() {
            let mapped: Option<Vec<String>> = names
                .iter()
                .map(|n| {
                    p.expr()
                        .iter()
                        .find(|e| e.alias == *n)
                        .and_then(|e| e.expr.downcast_ref::<Column>())
                        .map(|c| c.name().to_string())
                })
                .collect();
            let Some(mapped) = mapped else {
                return false;
            };
            names = mapped;
            plan = p.input();
        } else if let Some(f) = any.downcast_ref::<FilterExec>() {
            plan = f.input();
        } else if let Some(r) = any.downcast_ref::<RepartitionExec>() {
            if !matches!(r.partitioning(), Partitioning::RoundRobinBatch(_)) {
                return false;
            }
            plan = r.input();
        } else if let Some(d) = any.downcast_ref::<DataSourceExec>() {
            let Some(scan) = d.data_source().downcast_ref::<FileScanConfig>() else {
                return false;
            };
            let parts = scan.table_partition_cols();
            return names.iter().all(|n| parts.iter().any(|f| f.name() == n));
        } else {
            return false;
        }
    }
}

/// A partial (or single-stage) aggregation that looks group keys up once per run of equal keys.
#[derive(Debug)]
pub struct PartitionKeyAggregateExec {
    input: Arc<dyn ExecutionPlan>,
    parts: AggregateParts,
    schema: SchemaRef,
    /// Emit the aggregates' values (a `Single` aggregation) rather than their states (`Partial`).
    final_values: bool,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl PartitionKeyAggregateExec {
    /// The replacement for `plan` when it is a partial or single-stage aggregation this operator
    /// can run: one
    /// grouping set of partition columns, no `DISTINCT`,
    /// no ordered aggregates, no limit.
    pub fn try_from_partial(plan: &Arc<dyn ExecutionPlan>) -> Option<Self> {
        Self::from_aggregate(plan, true)
    }

    /// [`try_from_partial`](Self::try_from_partial), checking that the keys are partition
    /// columns only when `partition_keys_only` (tests run it over keys in short runs).
    fn from_aggregate(plan: &Arc<dyn ExecutionPlan>, partition_keys_only: bool) -> Option<Self> {
        let agg = plan.downcast_ref::<AggregateExec>()?;
        let final_values = match agg.mode() {
            AggregateMode::Partial => false,
            AggregateMode::Single | AggregateMode::SinglePartitioned => true,
            _ => return None,
        };
        let parts = AggregateParts::of(agg)?;
        let names: Option<Vec<String>> = (parts.group.iter())
            .map(|(e, _)| e.downcast_ref::<Column>().map(|c| c.name().to_string()))
            .collect();
        if partition_keys_only && !are_partition_columns(agg.input(), &names?) {
            return None;
        }
        let schema = agg.schema();
        let properties = PlanProperties::new(
            EquivalenceProperties::new(Arc::clone(&schema)),
            Partitioning::UnknownPartitioning(agg.input().output_partitioning().partition_count()),
            EmissionType::Final,
            Boundedness::Bounded,
        );
        Some(PartitionKeyAggregateExec {
            input: Arc::clone(agg.input()),
            parts,
            schema,
            final_values,
            properties: Arc::new(properties),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }

    fn with_input(&self, input: Arc<dyn ExecutionPlan>) -> Self {
        PartitionKeyAggregateExec {
            input,
            parts: self.parts.clone(),
            schema: Arc::clone(&self.schema),
            final_values: self.final_values,
            properties: Arc::clone(&self.properties),
            metrics: ExecutionPlanMetricsSet::new(),
        }
    }
}

impl DisplayAs for PartitionKeyAggregateExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mode = if self.final_values {
            "Single"
        } else {
            "Partial"
        };
        self.parts.fmt_as(f, "PartitionKeyAggregateExec", mode)
    }
}

impl ExecutionPlan for PartitionKeyAggregateExec {
    fn name(&self) -> &str {
        "PartitionKeyAggregateExec"
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
        Ok(Arc::new(self.with_input(children.swap_remove(0))))
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        let input = self.input.execute(partition, context)?;
        let run = Run {
            group: self.parts.keys(),
            args: self.parts.args(),
            filters: self.parts.filters.clone(),
            aggr: self.parts.aggr.clone(),
            schema: Arc::clone(&self.schema),
            final_values: self.final_values,
            baseline: BaselineMetrics::new(&self.metrics, partition),
        };
        let out = futures::stream::once(run.aggregate(input));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            out,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// One partition's aggregation.
struct Run {
    group: Vec<Arc<dyn PhysicalExpr>>,
    args: Vec<Vec<Arc<dyn PhysicalExpr>>>,
    filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
    aggr: Vec<Arc<AggregateFunctionExpr>>,
    schema: SchemaRef,
    final_values: bool,
    baseline: BaselineMetrics,
}

/// One group's key and its aggregates' plain (ungrouped) accumulators: a run of rows with one
/// key is a whole slice for them, summed with the same vectorised kernels as an aggregate
/// without `GROUP BY`.
struct Group {
    key: Vec<ScalarValue>,
    accumulators: Vec<Box<dyn Accumulator>>,
}

impl Run {
    async fn aggregate(self, mut input: SendableRecordBatchStream) -> Result<RecordBatch> {
        let mut index: HashMap<Vec<ScalarValue>, usize> = HashMap::new();
        let mut groups: Vec<Group> = Vec::new();
        while let Some(batch) = input.next().await {
            let batch = batch?;
            let _timer = self.baseline.elapsed_compute().timer();
            let n = batch.num_rows();
            if n == 0 {
                continue;
            }
            let key_cols = evaluate_expressions_to_arrays(&self.group, &batch)?;
            let values = self
                .args
                .iter()
                .map(|args| evaluate_expressions_to_arrays(args, &batch))
                .collect::<Result<Vec<_>>>()?;
            let filters = self
                .filters
                .iter()
                .map(|f| {
                    f.as_ref()
                        .map(|f| f.evaluate(&batch)?.into_array(n))
                        .transpose()
                })
                .collect::<Result<Vec<_>>>()?;
            for run in runs(&key_cols)? {
                let key = key_cols
                    .iter()
                    .map(|c| ScalarValue::try_from_array(c, run.start))
                    .collect::<Result<Vec<_>>>()?;
                let g = match index.get(&key) {
                    Some(&g) => g,
                    None => {
                        let accumulators = self
                            .aggr
                            .iter()
                            .map(|a| a.create_accumulator())
                            .collect::<Result<_>>()?;
                        index.insert(key.clone(), groups.len());
                        groups.push(Group { key, accumulators });
                        groups.len() - 1
                    }
                };
                let whole = run.start == 0 && run.end == n;
                for ((acc, args), filter) in
                    groups[g].accumulators.iter_mut().zip(&values).zip(&filters)
                {
                    let mut args: Vec<ArrayRef> = if whole {
                        args.clone()
                    } else {
                        args.iter().map(|a| a.slice(run.start, run.len())).collect()
                    };
                    if let Some(f) = filter {
                        let f = f.slice(run.start, run.len());
                        let f = f.as_boolean();
                        args = args
                            .iter()
                            .map(|a| Ok(filter_array(a, f)?))
                            .collect::<Result<_>>()?;
                    }
                    acc.update_batch(&args)?;
                }
            }
        }
        let _timer = self.baseline.elapsed_compute().timer();
        let batch = self.emit(groups)?;
        self.baseline.record_output(batch.num_rows());
        Ok(batch)
    }

    /// One row per group: its key, then each aggregate's state (or value, for `Single`).
    fn emit(&self, mut groups: Vec<Group>) -> Result<RecordBatch> {
        if groups.is_empty() {
            return Ok(RecordBatch::new_empty(Arc::clone(&self.schema)));
        }
        let mut columns = Vec::with_capacity(self.schema.fields().len());
        for j in 0..self.group.len() {
            columns.push(ScalarValue::iter_to_array(
                groups.iter().map(|g| g.key[j].clone()),
            )?);
        }
        for i in 0..self.aggr.len() {
            if self.final_values {
                let values = groups
                    .iter_mut()
                    .map(|g| g.accumulators[i].evaluate())
                    .collect::<Result<Vec<_>>>()?;
                columns.push(ScalarValue::iter_to_array(values)?);
            } else {
                let states = groups
                    .iter_mut()
                    .map(|g| g.accumulators[i].state())
                    .collect::<Result<Vec<_>>>()?;
                for j in 0..states[0].len() {
                    columns.push(ScalarValue::iter_to_array(
                        states.iter().map(|s| s[j].clone()),
                    )?);
                }
            }
        }
        Ok(RecordBatch::try_new(Arc::clone(&self.schema), columns)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan_util::is_constant;
    use arrow::array::{Float64Array, Int64Array, StringViewArray};
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::common::tree_node::{Transformed, TreeNode};
    use datafusion::datasource::MemTable;
    use datafusion::prelude::SessionContext;

    /// Keys that change inside batches (runs of 1 to 3 rows) exercise the sliced path.
    #[tokio::test]
    async fn short_runs_and_filters_give_what_datafusion_gives() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8View, false),
            Field::new("g", DataType::Int64, false),
            Field::new("v", DataType::Float64, true),
        ]));
        let batches: Vec<RecordBatch> = (0..4)
            .map(|b| {
                let n = 50;
                let k: Vec<String> = (0..n).map(|i| format!("key{}", (i / 3 + b) % 4)).collect();
                let g: Vec<i64> = (0..n).map(|i| ((i + b) % 2) as i64).collect();
                let v: Vec<Option<f64>> = (0..n)
                    .map(|i| (i % 7 != 0).then_some((i * 3 + b) as f64 * 0.5))
                    .collect();
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(StringViewArray::from_iter_values(k)),
                        Arc::new(Int64Array::from(g)),
                        Arc::new(Float64Array::from(v)),
                    ],
                )
                .unwrap()
            })
            .collect();
        let ctx = SessionContext::new();
        let table = MemTable::try_new(schema, vec![batches[..2].to_vec(), batches[2..].to_vec()]);
        ctx.register_table("t", Arc::new(table.unwrap())).unwrap();
        for sql in [
            "SELECT k, g, count(*) AS n, sum(v) AS s, avg(v) AS a, min(v) AS lo FROM t GROUP BY k, g",
            "SELECT k, count(v) FILTER (WHERE g = 1) AS n1, sum(v) FILTER (WHERE v > 10) AS s FROM t GROUP BY k",
        ] {
            let plan = ctx
                .sql(sql)
                .await
                .unwrap()
                .create_physical_plan()
                .await
                .unwrap();
            let mut swapped = 0;
            let ours = Arc::clone(&plan)
                .transform_up(|p| {
                    Ok(match PartitionKeyAggregateExec::from_aggregate(&p, false) {
                        Some(e) => {
                            swapped += 1;
                            Transformed::yes(Arc::new(e) as Arc<dyn ExecutionPlan>)
                        }
                        None => Transformed::no(p),
                    })
                })
                .unwrap()
                .data;
            assert_eq!(swapped, 1, "{sql}");
            let render = |b: Vec<RecordBatch>| {
                let mut rows: Vec<String> = arrow::util::pretty::pretty_format_batches(&b)
                    .unwrap()
                    .to_string()
                    .lines()
                    .map(String::from)
                    .collect();
                rows.sort();
                rows
            };
            let want = datafusion::physical_plan::collect(plan, ctx.task_ctx())
                .await
                .unwrap();
            let got = datafusion::physical_plan::collect(ours, ctx.task_ctx())
                .await
                .unwrap();
            assert_eq!(render(got), render(want), "{sql}");
        }
    }

    #[test]
    fn runs_split_where_any_key_changes() {
        let a: ArrayRef = Arc::new(StringViewArray::from_iter_values(["x", "x", "y", "y", "y"]));
        let b: ArrayRef = Arc::new(Int64Array::from(vec![1, 2, 2, 2, 2]));
        assert_eq!(runs(&[Arc::clone(&a), b]).unwrap(), vec![0..1, 1..2, 2..5]);
        let c: ArrayRef = Arc::new(StringViewArray::from_iter_values(
            ["a long key, not inline"; 3],
        ));
        let one = runs(&[c]).unwrap();
        assert_eq!((one.len(), one[0].clone()), (1, 0..3));
        assert!(!is_constant(a.as_ref()));
    }
}
