//! The `flowsense` binary: parses the command line and dispatches to the library.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = flowsense::cli::Cli::parse();
    match flowsense::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
