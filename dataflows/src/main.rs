//! The `flowsense` binary: parses the command line and dispatches to the library.

use clap::Parser;

// mimalloc: the ingest's reader and writer threads free each other's buffers, which glibc's
// allocator serialises on a lock, and DataFusion's hash tables allocate heavily (BENCHMARKS.md).
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc v3's `mimalloc.h` (the `-sys` crate names no constant).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// mimalloc hands freed memory back to the OS after 1 s by default; timely's channel buffers and
/// DataFusion's batches are then faulted in and zeroed again and again (the in-memory feature
/// graph ran 20 % slower, BENCHMARKS.md). Ten seconds keeps a busy process's memory while still
/// returning an idle one's.
#[allow(unsafe_code)]
fn tune_allocator() {
    // SAFETY: `mi_option_set` stores one integer option; it is called first thing in `main`,
    // before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 10_000) };
}

fn main() -> std::process::ExitCode {
    tune_allocator();
    let cli = flowsense::cli::Cli::parse();
    match flowsense::cli::run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", chain(&e));
            std::process::ExitCode::FAILURE
        }
    }
}

/// The error and its causes joined by `: `, leaving out a cause whose text the message already
/// holds (many errors print their source in their own message too).
fn chain(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let text = cause.to_string();
        if !msg.contains(&text) {
            msg.push_str(": ");
            msg.push_str(&text);
        }
    }
    msg
}
