//! Pieces the lake's physical operators share: replacing plan nodes, visiting an operator's
//! expressions, what the aggregation operators take from the plan they replace, and finding runs
//! of equal keys in a batch.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::partition;
use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_expr::aggregate::AggregateFunctionExpr;
use datafusion::physical_plan::ExecutionPlan;
use datafusion::physical_plan::aggregates::AggregateExec;

/// Replaces, bottom up, every node for which `replacement` gives an operator.
pub(crate) fn replace_nodes<E: ExecutionPlan + 'static>(
    plan: Arc<dyn ExecutionPlan>,
    replacement: impl Fn(&Arc<dyn ExecutionPlan>) -> Option<E>,
) -> Result<Arc<dyn ExecutionPlan>> {
    plan.transform_up(|plan| {
        Ok(match replacement(&plan) {
            Some(exec) => Transformed::yes(Arc::new(exec) as Arc<dyn ExecutionPlan>),
            None => Transformed::no(plan),
        })
    })
    .map(|t| t.data)
}

/// [`ExecutionPlan::apply_expressions`] over a list of expressions: `f` on each until it stops.
pub(crate) fn visit_expressions<'a>(
    exprs: impl IntoIterator<Item = &'a Arc<dyn PhysicalExpr>>,
    f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
) -> Result<TreeNodeRecursion> {
    for e in exprs {
        if f(e)? == TreeNodeRecursion::Stop {
            return Ok(TreeNodeRecursion::Stop);
        }
    }
    Ok(TreeNodeRecursion::Continue)
}

/// What the lake's aggregation operators take from the `AggregateExec` they replace: one
/// grouping set of keys, and aggregates without `DISTINCT` or an `ORDER BY` inside, with their
/// `FILTER` clauses.
#[derive(Debug, Clone)]
pub(crate) struct AggregateParts {
    /// The keys and their output names.
    pub(crate) group: Vec<(Arc<dyn PhysicalExpr>, String)>,
    pub(crate) aggr: Vec<Arc<AggregateFunctionExpr>>,
    pub(crate) filters: Vec<Option<Arc<dyn PhysicalExpr>>>,
}

impl AggregateParts {
    /// The parts of `agg`, when it is an aggregation of that shape with no limit and no dynamic
    /// filter to feed.
    pub(crate) fn of(agg: &AggregateExec) -> Option<Self> {
        let group = agg.group_expr();
        let plain = agg
            .aggr_expr()
            .iter()
            .all(|a| !a.is_distinct() && a.order_bys().is_empty());
        let ok = plain
            && group.is_single()
            && !group.expr().is_empty()
            && agg.limit_options().is_none()
            && agg.dynamic_expressions_produced().is_empty();
        ok.then(|| AggregateParts {
            group: group.expr().to_vec(),
            aggr: agg.aggr_expr().to_vec(),
            filters: agg.filter_expr().to_vec(),
        })
    }

    /// The keys' expressions.
    pub(crate) fn keys(&self) -> Vec<Arc<dyn PhysicalExpr>> {
        self.group.iter().map(|(e, _)| Arc::clone(e)).collect()
    }

    /// Each aggregate's argument expressions.
    pub(crate) fn args(&self) -> Vec<Vec<Arc<dyn PhysicalExpr>>> {
        self.aggr.iter().map(|a| a.expressions()).collect()
    }

    /// `NAME: mode=MODE, gby=[..], aggr=[..]`, for `EXPLAIN`.
    pub(crate) fn fmt_as(
        &self,
        f: &mut std::fmt::Formatter<'_>,
        name: &str,
        mode: &str,
    ) -> std::fmt::Result {
        let gby: Vec<&str> = self.group.iter().map(|(_, n)| n.as_str()).collect();
        let aggr: Vec<&str> = self.aggr.iter().map(|a| a.name()).collect();
        write!(
            f,
            "{name}: mode={mode}, gby=[{}], aggr=[{}]",
            gby.join(", "),
            aggr.join(", ")
        )
    }

    /// [`ExecutionPlan::apply_expressions`] over the keys, arguments and filters.
    pub(crate) fn apply_expressions(
        &self,
        f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        let args: Vec<_> = self.aggr.iter().flat_map(|a| a.expressions()).collect();
        let exprs = self.group.iter().map(|(e, _)| e);
        visit_expressions(exprs.chain(&args).chain(self.filters.iter().flatten()), f)
    }
}

/// The ranges of consecutive rows with equal keys; one range when the whole batch shares a key.
pub(crate) fn runs(keys: &[ArrayRef]) -> Result<Vec<Range<usize>>> {
    let n = keys.first().map_or(0, |k| k.len());
    if keys.iter().all(|k| is_constant(k.as_ref())) {
        return Ok(std::iter::once(0..n).collect());
    }
    Ok(partition(keys)?.ranges())
}

/// True when every row holds the same non-null value, judged cheaply: string views that are
/// all equal and inline (the value lives in the view itself), or a run-of-one array.
pub(crate) fn is_constant(a: &dyn Array) -> bool {
    if a.len() <= 1 {
        return true;
    }
    if a.null_count() > 0 {
        return false;
    }
    match a.as_string_view_opt() {
        Some(s) => {
            let views = s.views();
            let first = views[0];
            // The low 32 bits hold the length; at most 12 bytes means the value is inline.
            (first as u32) <= 12 && views.iter().all(|&v| v == first)
        }
        None => false,
    }
}
