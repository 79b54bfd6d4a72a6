//! The `flowsense` binary: parses the command line and dispatches to the library.

use clap::Parser;

// mimalloc: the ingest's reader and writer threads free each other's buffers, which glibc's
// allocator serialises on a lock, and DataFusion's hash tables allocate heavily (BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
