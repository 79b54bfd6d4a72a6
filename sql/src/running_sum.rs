//! Running sums (`sum(x) OVER (PARTITION BY .. ORDER BY .. ROWS BETWEEN UNBOUNDED PRECEDING AND
//! CURRENT ROW)`) computed as a prefix sum per batch.
//!
//! DataFusion evaluates a window aggregate row by row: for every row it slices the new input,
//! updates an accumulator and boxes the result as a scalar, about 100 ns a row. Running sums are
//! how as-of joins and sessionisation are written in SQL without `ASOF JOIN` (number the rows of
//! one side, join on the number), so the lake's as-of query spent most of its time there.
//! [`RunningSum`] is a physical optimizer rule that replaces a window operator whose every
//! expression is such a running `sum` over `BIGINT` or `DOUBLE` with [`RunningSumExec`]: the
//! input is already sorted with each partition's rows together, so one pass adds each value to
//! its partition's total, restarting where the partition key changes. Sums are added in row
//! order, as DataFusion's accumulator adds them, so the results are the same to the bit.

use std::fmt;
use std::sync::Arc;

use arrow::array::{
    Array, ArrayRef, ArrowNativeTypeOp, ArrowPrimitiveType, AsArray, PrimitiveArray, RecordBatch,
};
use arrow::datatypes::{DataType, Float64Type, Int64Type, SchemaRef};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::TreeNodeRecursion;
use datafusion::common::{Result, ScalarValue};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::{WindowFrameBound, WindowFrameUnits};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::window::PlainAggregateWindowExpr;
use datafusion::physical_expr_common::utils::evaluate_expressions_to_arrays;
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::metrics::{BaselineMetrics, ExecutionPlanMetricsSet, MetricsSet};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::windows::BoundedWindowAggExec;
use datafusion::physical_plan::{
    DisplayAs, DisplayFormatType, ExecutionPlan, ExecutionPlanProperties, PlanProperties,
};
use futures::StreamExt;

use crate::plan_util::{replace_nodes, runs, visit_expressions};

/// The optimizer rule: window operators made only of running sums become [`RunningSumExec`].
///
/// ```
/// # async fn f() -> datafusion::error::Result<()> {
/// use std::sync::Arc;
/// use datafusion::execution::SessionStateBuilder;
/// use datafusion::prelude::SessionContext;
/// use flowsense_sql::RunningSum;
/// let state = SessionStateBuilder::new()
///     .with_default_features()
///     .with_physical_optimizer_rule(Arc::new(RunningSum))
///     .build();
/// let ctx = SessionContext::new_with_state(state);
/// let df = ctx
///     .sql("SELECT sum(x) OVER (ORDER BY x ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW) \
///           FROM (VALUES (1), (2), (3)) AS t(x)")
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Debug, Default)]
pub struct RunningSum;

impl PhysicalOptimizerRule for RunningSum {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        _config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        replace_nodes(plan, RunningSumExec::try_from_window)
    }

    fn name(&self) -> &str {
        "running_sum"
    }

    fn schema_check(&self) -> bool {
        true
    }
}

/// A window operator of running sums over input sorted partition by partition.
#[derive(Debug)]
pub struct RunningSumExec {
    input: Arc<dyn ExecutionPlan>,
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    /// Each sum's argument, and its name for display.
    sums: Vec<(Arc<dyn PhysicalExpr>, String)>,
    schema: SchemaRef,
    properties: Arc<PlanProperties>,
    metrics: ExecutionPlanMetricsSet,
}

impl RunningSumExec {
    /// The replacement for `plan` when it is a window operator whose expressions are all
    /// `sum` of a `BIGINT` or `DOUBLE` over `ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW`
    /// with one `PARTITION BY`, and whose input keeps each partition's rows together.
    pub fn try_from_window(plan: &Arc<dyn ExecutionPlan>) -> Option<Self> {
        let window = plan.downcast_ref::<BoundedWindowAggExec>()?;
        let exprs = window.window_expr();
        let partition_by = exprs.first()?.partition_by().to_vec();
        let mut sums = Vec::with_capacity(exprs.len());
        for w in exprs {
            let plain = w.as_any().downcast_ref::<PlainAggregateWindowExpr>()?;
            let agg = plain.get_aggregate_expr();
            let frame = w.get_window_frame();
            let args = agg.expressions();
            let running = frame.units == WindowFrameUnits::Rows
                && matches!(&frame.start_bound, WindowFrameBound::Preceding(v) if v.is_null())
                && matches!(frame.end_bound, WindowFrameBound::CurrentRow);
            let same_partition = w.partition_by().len() == partition_by.len()
                && w.partition_by()
                    .iter()
                    .zip(&partition_by)
                    .all(|(a, b)| a.eq(b));
            let input_schema = window.input().schema();
            let numeric = args.len() == 1
                && matches!(
                    args[0].data_type(&input_schema).ok()?,
                    DataType::Int64 | DataType::Float64
                );
            if agg.fun().name() != "sum"
                || agg.is_distinct()
                || agg.ignore_nulls()
                // A `FILTER (WHERE ..)` is not reachable through the public API; its name shows it.
                || w.name().contains("FILTER (")
                || !running
                || !same_partition
                || !numeric
            {
                return None;
            }
            sums.push((Arc::clone(&args[0]), w.name().to_string()));
        }
        // Each partition's rows must be contiguous: the input's ordering starts with every
        // partition key.
        let ordering = window.input().output_ordering()?;
        let prefix: Vec<_> = ordering
            .iter()
            .take(partition_by.len())
            .map(|s| &s.expr)
            .collect();
        if prefix.len() < partition_by.len()
            || !partition_by.iter().all(|p| prefix.iter().any(|e| e.eq(&p)))
        {
            return None;
        }
        Some(RunningSumExec {
            input: Arc::clone(window.input()),
            partition_by,
            sums,
            schema: window.schema(),
            properties: Arc::clone(window.properties()),
            metrics: ExecutionPlanMetricsSet::new(),
        })
    }
}

impl DisplayAs for RunningSumExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.sums.iter().map(|(_, n)| n.as_str()).collect();
        write!(f, "RunningSumExec: [{}]", names.join(", "))
    }
}

impl ExecutionPlan for RunningSumExec {
    fn name(&self) -> &str {
        "RunningSumExec"
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
        visit_expressions(
            self.partition_by
                .iter()
                .chain(self.sums.iter().map(|(e, _)| e)),
            f,
        )
    }

    fn with_new_children(
        self: Arc<Self>,
        mut children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        Ok(Arc::new(RunningSumExec {
            input: children.swap_remove(0),
            partition_by: self.partition_by.clone(),
            sums: self.sums.clone(),
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
        let input = self.input.execute(partition, context)?;
        let mut state = Totals {
            partition_by: self.partition_by.clone(),
            sums: self.sums.iter().map(|(e, _)| Arc::clone(e)).collect(),
            key: None,
            totals: self
                .sums
                .iter()
                .map(|(e, _)| match e.data_type(&self.input.schema()) {
                    Ok(DataType::Int64) => Ok(Total::Int(None)),
                    Ok(_) => Ok(Total::Float(None)),
                    Err(e) => Err(e),
                })
                .collect::<Result<_>>()?,
            schema: Arc::clone(&self.schema),
            baseline: BaselineMetrics::new(&self.metrics, partition),
        };
        let out = input.map(move |batch| state.next(batch?));
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            Arc::clone(&self.schema),
            out,
        )))
    }

    fn metrics(&self) -> Option<MetricsSet> {
        Some(self.metrics.clone_inner())
    }
}

/// A running total of the argument's type: `None` until the partition has a non-null value.
#[derive(Clone, Copy, Debug)]
enum Total {
    Int(Option<i64>),
    Float(Option<f64>),
}

/// One partition stream's state across batches.
struct Totals {
    partition_by: Vec<Arc<dyn PhysicalExpr>>,
    sums: Vec<Arc<dyn PhysicalExpr>>,
    /// The partition key of the last row seen.
    key: Option<Vec<ScalarValue>>,
    totals: Vec<Total>,
    schema: SchemaRef,
    baseline: BaselineMetrics,
}

impl Totals {
    fn next(&mut self, batch: RecordBatch) -> Result<RecordBatch> {
        let _timer = self.baseline.elapsed_compute().timer();
        let n = batch.num_rows();
        let keys = evaluate_expressions_to_arrays(&self.partition_by, &batch)?;
        let args = evaluate_expressions_to_arrays(&self.sums, &batch)?;
        // Where each run of one partition starts, and whether it continues the last batch's.
        let mut starts = Vec::new();
        for run in if n == 0 { Vec::new() } else { runs(&keys)? } {
            let key = keys
                .iter()
                .map(|k| ScalarValue::try_from_array(k, run.start))
                .collect::<Result<Vec<_>>>()?;
            let fresh = self.key.as_ref() != Some(&key);
            starts.push((run, fresh));
            self.key = Some(key);
        }
        let mut columns = batch.columns().to_vec();
        for (arg, total) in args.iter().zip(&mut self.totals) {
            columns.push(match total {
                Total::Int(t) => running::<Int64Type>(arg.as_primitive(), &starts, t),
                Total::Float(t) => running::<Float64Type>(arg.as_primitive(), &starts, t),
            });
        }
        let out = RecordBatch::try_new(Arc::clone(&self.schema), columns)?;
        self.baseline.record_output(n);
        Ok(out)
    }
}

/// The running sums of one batch: each run adds onto `total` when it continues the last run's
/// partition, else starts afresh; `total` is left at the batch's last sum. Integers wrap, as
/// DataFusion's `sum` does.
fn running<T: ArrowPrimitiveType>(
    values: &PrimitiveArray<T>,
    runs: &[(std::ops::Range<usize>, bool)],
    total: &mut Option<T::Native>,
) -> ArrayRef {
    let mut out: Vec<Option<T::Native>> = Vec::with_capacity(values.len());
    for (run, fresh) in runs {
        let mut t = if *fresh { None } else { *total };
        for i in run.clone() {
            if values.is_valid(i) {
                t = Some(t.unwrap_or(T::Native::ZERO).add_wrapping(values.value(i)));
            }
            out.push(t);
        }
        *total = t;
    }
    Arc::new(out.into_iter().collect::<PrimitiveArray<T>>())
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Float64Array, Int64Array, StringViewArray};
    use arrow::datatypes::{Field, Schema};
    use datafusion::datasource::MemTable;
    use datafusion::execution::SessionStateBuilder;
    use datafusion::prelude::SessionContext;

    async fn context(rule: bool) -> SessionContext {
        let schema = Arc::new(Schema::new(vec![
            Field::new("k", DataType::Utf8View, false),
            Field::new("t", DataType::Int64, false),
            Field::new("i", DataType::Int64, true),
            Field::new("x", DataType::Float64, true),
        ]));
        let batches: Vec<RecordBatch> = (0..5)
            .map(|b| {
                let n = 40i64;
                let k: Vec<String> = (0..n).map(|r| format!("key{}", (r * 7 + b) % 3)).collect();
                let t: Vec<i64> = (0..n).map(|r| b * 100 + r).collect();
                let i: Vec<Option<i64>> = (0..n).map(|r| (r % 5 != 0).then_some(r - 10)).collect();
                let x: Vec<Option<f64>> = (0..n)
                    .map(|r| (r % 4 != 1).then_some(r as f64 * 0.1))
                    .collect();
                RecordBatch::try_new(
                    Arc::clone(&schema),
                    vec![
                        Arc::new(StringViewArray::from_iter_values(k)),
                        Arc::new(Int64Array::from(t)),
                        Arc::new(Int64Array::from(i)),
                        Arc::new(Float64Array::from(x)),
                    ],
                )
                .unwrap()
            })
            .collect();
        let mut state = SessionStateBuilder::new().with_default_features();
        if rule {
            state = state.with_physical_optimizer_rule(Arc::new(RunningSum));
        }
        let ctx = SessionContext::new_with_state(state.build());
        let table = MemTable::try_new(schema, vec![batches[..3].to_vec(), batches[3..].to_vec()]);
        ctx.register_table("w", Arc::new(table.unwrap())).unwrap();
        ctx
    }

    async fn rows(ctx: &SessionContext, sql: &str) -> (Vec<String>, String) {
        let df = ctx.sql(sql).await.unwrap();
        let plan = df.clone().create_physical_plan().await.unwrap();
        let shown = datafusion::physical_plan::displayable(plan.as_ref())
            .indent(false)
            .to_string();
        let batches = df.collect().await.unwrap();
        let text = arrow::util::pretty::pretty_format_batches(&batches)
            .unwrap()
            .to_string();
        let mut lines: Vec<String> = text.lines().map(String::from).collect();
        lines.sort();
        (lines, shown)
    }

    #[tokio::test]
    async fn running_sums_equal_datafusion_window_sums() {
        let (on, off) = (context(true).await, context(false).await);
        let frame = "ROWS BETWEEN UNBOUNDED PRECEDING AND CURRENT ROW";
        for (sql, fires) in [
            (
                format!(
                    "SELECT k, t, sum(i) OVER (PARTITION BY k ORDER BY t {frame}) AS si, \
                      sum(x) OVER (PARTITION BY k ORDER BY t {frame}) AS sx FROM w"
                ),
                true,
            ),
            (
                "SELECT k, t, sum(i) OVER (PARTITION BY k ORDER BY t) AS si FROM w".to_string(),
                false,
            ),
            (
                format!("SELECT k, t, avg(x) OVER (PARTITION BY k ORDER BY t {frame}) AS a FROM w"),
                false,
            ),
            (
                format!(
                    "SELECT k, t, sum(x) FILTER (WHERE i > 0) OVER (PARTITION BY k ORDER BY t {frame}) AS f FROM w"
                ),
                false,
            ),
        ] {
            let (a, plan) = rows(&on, &sql).await;
            let (b, _) = rows(&off, &sql).await;
            assert_eq!(plan.contains("RunningSumExec"), fires, "{sql}\n{plan}");
            assert_eq!(a, b, "{sql}");
        }
    }
}
