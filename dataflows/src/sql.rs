//! `flowsense sql`: one query or an interactive prompt, printed as a table, CSV, JSON or Parquet.

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use flowsense_sinks::Lake;
use flowsense_sql::LakeSession;

use crate::output::{OutputFormat, write_batches};

/// Runs `flowsense sql`.
pub async fn run(
    lake: &Lake,
    format: OutputFormat,
    output: Option<&Path>,
    query: Option<&str>,
) -> anyhow::Result<ExitCode> {
    let session = LakeSession::open(lake).await?;
    let mut out: Box<dyn Write> = match output {
        Some(p) => Box::new(std::io::BufWriter::new(std::fs::File::create(p)?)),
        None => Box::new(std::io::BufWriter::new(std::io::stdout().lock())),
    };
    if let Some(q) = query {
        let batches = session.query(q).await?;
        write_batches(&batches, format, &mut out)?;
        out.flush()?;
        return Ok(ExitCode::SUCCESS);
    }
    drop(out);
    repl(&session, format).await
}

async fn repl(session: &LakeSession, format: OutputFormat) -> anyhow::Result<ExitCode> {
    let mut rl = rustyline::DefaultEditor::new()?;
    let history = std::env::var_os("HOME").map(|h| Path::new(&h).join(".flowsense_history"));
    if let Some(h) = &history {
        let _ = rl.load_history(h);
    }
    eprintln!("flowsense sql: end statements with ';', \\q to quit. Tables: SHOW TABLES;");
    let mut buffer = String::new();
    loop {
        let prompt = if buffer.is_empty() {
            "flowsense> "
        } else {
            "       ..> "
        };
        let line = match rl.readline(prompt) {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let trimmed = line.trim();
        if buffer.is_empty() && matches!(trimmed, "\\q" | "quit" | "exit") {
            break;
        }
        buffer.push_str(&line);
        buffer.push('\n');
        if !trimmed.ends_with(';') {
            continue;
        }
        let sql = std::mem::take(&mut buffer);
        let _ = rl.add_history_entry(sql.trim());
        let started = std::time::Instant::now();
        match session.query(sql.trim().trim_end_matches(';')).await {
            Ok(batches) => {
                let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
                let mut stdout = std::io::stdout().lock();
                write_batches(&batches, format, &mut stdout)?;
                eprintln!("{rows} rows in {:.3} s", started.elapsed().as_secs_f64());
            }
            Err(e) => eprintln!("error: {e}"),
        }
    }
    if let Some(h) = &history {
        let _ = rl.save_history(h);
    }
    Ok(ExitCode::SUCCESS)
}
