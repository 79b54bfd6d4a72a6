//! Pieces the lake's physical operators share: replacing plan nodes, visiting an operator's
//! expressions, and finding runs of equal keys in a batch.

use std::ops::Range;
use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray};
use arrow::compute::partition;
use datafusion::common::Result;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::physical_expr::PhysicalExpr;
use datafusion::physical_plan::ExecutionPlan;

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
