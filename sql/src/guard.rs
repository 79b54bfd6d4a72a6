//! The read-only guard: which statements `flowsense sql` and `/api/sql` may run.

use std::ops::ControlFlow;

use datafusion::sql::parser::{DFParser, Statement as DfStatement};
use datafusion::sql::sqlparser::ast::{Statement, TableFactor, Visit, Visitor};

use crate::{Error, Result};

/// Table functions that only generate rows and read nothing.
const SAFE_TABLE_FUNCTIONS: &[&str] = &["generate_series", "range", "unnest"];

struct TableFunctions(Vec<String>);

impl Visitor for TableFunctions {
    type Break = ();

    fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
        if let TableFactor::Table {
            name,
            args: Some(_),
            ..
        } = factor
        {
            self.0.push(name.to_string());
        }
        if let TableFactor::Function { name, .. } = factor {
            self.0.push(name.to_string());
        }
        ControlFlow::Continue(())
    }
}

/// Accepts exactly one `SELECT`, `WITH`, `EXPLAIN`, `SHOW` or `DESCRIBE` statement, and refuses
/// everything else (DDL, DML, `COPY`, `SET`, table functions that could read files) with a message
/// naming what was refused.
///
/// ```
/// use flowsense_sql::check_read_only;
/// assert!(check_read_only("SELECT * FROM trades").is_ok());
/// assert!(check_read_only("WITH t AS (SELECT 1) SELECT * FROM t").is_ok());
/// assert!(check_read_only("DROP TABLE trades").is_err());
/// assert!(check_read_only("COPY trades TO '/tmp/x.csv'").is_err());
/// assert!(check_read_only("SELECT * FROM read_csv('/etc/passwd')").is_err());
/// ```
pub fn check_read_only(sql: &str) -> Result<()> {
    let statements = DFParser::parse_sql(sql).map_err(|e| Error::Syntax(e.to_string()))?;
    if statements.len() != 1 {
        return Err(Error::Refused(format!(
            "one statement at a time ({} given)",
            statements.len()
        )));
    }
    let statement = &statements[0];
    let inner: &Statement = match statement {
        DfStatement::Statement(s) => s,
        DfStatement::Explain(e) => match e.statement.as_ref() {
            DfStatement::Statement(s) => s,
            other => return Err(Error::Refused(format!("EXPLAIN of {}", kind(other)))),
        },
        other => {
            return Err(Error::Refused(format!(
                "{} is not allowed: the lake is read-only through SQL",
                kind(other)
            )));
        }
    };
    let allowed = match inner {
        Statement::Query(_) => true,
        Statement::Explain { statement, .. } => matches!(statement.as_ref(), Statement::Query(_)),
        Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. } => true,
        _ => false,
    };
    if !allowed {
        let text = inner.to_string();
        let word = text
            .split_whitespace()
            .take(2)
            .collect::<Vec<_>>()
            .join(" ");
        return Err(Error::Refused(format!(
            "{word} ... is not allowed: only SELECT, WITH, EXPLAIN, SHOW and DESCRIBE run against the lake"
        )));
    }
    let mut functions = TableFunctions(Vec::new());
    let _ = inner.visit(&mut functions);
    if let Some(f) = functions
        .0
        .iter()
        .find(|f| !SAFE_TABLE_FUNCTIONS.contains(&f.to_ascii_lowercase().as_str()))
    {
        return Err(Error::Refused(format!(
            "table function {f}(...) is not allowed: it could read files outside the lake"
        )));
    }
    Ok(())
}

fn kind(s: &DfStatement) -> &'static str {
    match s {
        DfStatement::Statement(_) => "statement",
        DfStatement::CreateExternalTable(_) => "CREATE EXTERNAL TABLE",
        DfStatement::CopyTo(_) => "COPY",
        DfStatement::Explain(_) => "EXPLAIN",
        _ => "this statement",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_statement() {
        for (sql, word) in [
            ("INSERT INTO trades VALUES (1)", "INSERT"),
            ("CREATE TABLE x AS SELECT 1", "CREATE"),
            (
                "CREATE EXTERNAL TABLE x STORED AS CSV LOCATION '/etc/passwd'",
                "CREATE EXTERNAL TABLE",
            ),
            ("COPY (SELECT 1) TO '/tmp/x'", "COPY"),
            ("SET datafusion.execution.batch_size = 1", "SET"),
            ("DELETE FROM trades", "DELETE"),
            ("SELECT 1; DROP TABLE trades", "one statement"),
            (
                "SELECT * FROM parquet_metadata('/etc/passwd')",
                "parquet_metadata",
            ),
        ] {
            let e = check_read_only(sql).unwrap_err().to_string();
            assert!(e.contains(word), "{sql}: {e}");
        }
        for sql in [
            "SHOW TABLES",
            "DESCRIBE trades",
            "EXPLAIN SELECT 1",
            "SELECT * FROM generate_series(1, 3)",
            "SHOW COLUMNS FROM trades",
        ] {
            check_read_only(sql).unwrap_or_else(|e| panic!("{sql}: {e}"));
        }
    }
}
