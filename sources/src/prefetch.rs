//! Reading a source ahead on a thread of its own, so that decoding overlaps the graph's work.

use std::collections::VecDeque;
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;

/// Events per hand-over between the reading thread and the consumer.
const CHUNK: usize = 4096;

/// Chunks read ahead of the consumer: a bound on the memory the thread may fill.
const AHEAD: usize = 4;

/// An iterator that runs another on a thread of its own and hands its items over in chunks, in
/// the same order. Lake replays use it: listing, reading and decoding Parquet files and merging
/// their streams by time then use a second core while the dataflow worker runs the graph.
///
/// Dropping it closes the channel, which stops the thread at its next hand-over (it is not
/// waited for).
///
/// ```
/// use flowsense_sources::prefetch::Prefetched;
/// let ahead = Prefetched::new(0..10_000u32);
/// assert!(ahead.eq(0..10_000u32));
/// ```
pub struct Prefetched<T> {
    rx: Option<Receiver<VecDeque<T>>>,
    chunk: VecDeque<T>,
    /// Emptied chunks go back to be filled again.
    spare: SyncSender<VecDeque<T>>,
    thread: Option<JoinHandle<()>>,
}

impl<T: Send + 'static> Prefetched<T> {
    /// Starts reading `source` on a new thread.
    pub fn new<I>(source: I) -> Self
    where
        I: Iterator<Item = T> + Send + 'static,
    {
        let (tx, rx) = sync_channel::<VecDeque<T>>(AHEAD);
        let (spare, spares) = sync_channel::<VecDeque<T>>(AHEAD + 2);
        let thread = std::thread::Builder::new()
            .name("flowsense-prefetch".into())
            .spawn(move || {
                let fresh = || {
                    spares
                        .try_recv()
                        .unwrap_or_else(|_| VecDeque::with_capacity(CHUNK))
                };
                let mut chunk = fresh();
                for item in source {
                    chunk.push_back(item);
                    if chunk.len() == CHUNK
                        && tx.send(std::mem::replace(&mut chunk, fresh())).is_err()
                    {
                        return;
                    }
                }
                if !chunk.is_empty() {
                    let _ = tx.send(chunk);
                }
            })
            .expect("spawning a prefetch thread");
        Prefetched {
            rx: Some(rx),
            chunk: VecDeque::new(),
            spare,
            thread: Some(thread),
        }
    }
}

impl<T> Iterator for Prefetched<T> {
    type Item = T;

    fn next(&mut self) -> Option<T> {
        loop {
            if let Some(item) = self.chunk.pop_front() {
                return Some(item);
            }
            let next = self.rx.as_ref()?.recv();
            match next {
                Ok(chunk) => {
                    // The emptied chunk goes back to be refilled; a full spare queue drops it.
                    let done = std::mem::replace(&mut self.chunk, chunk);
                    let _ = self.spare.try_send(done);
                }
                Err(_) => {
                    // The thread finished (or panicked: joining re-raises its panic here).
                    self.rx = None;
                    if let Some(t) = self.thread.take()
                        && let Err(panic) = t.join()
                    {
                        std::panic::resume_unwind(panic);
                    }
                    return None;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gives_every_item_in_order() {
        let n = CHUNK * 5 + 17;
        assert!(Prefetched::new(0..n).eq(0..n));
        assert_eq!(Prefetched::new(std::iter::empty::<u8>()).count(), 0);
    }

    #[test]
    fn stops_when_dropped_early() {
        let mut ahead = Prefetched::new(0u64..);
        assert_eq!(ahead.nth(CHUNK * 3), Some(CHUNK as u64 * 3));
        drop(ahead); // an endless source: the thread must stop on its own
    }

    #[test]
    #[should_panic(expected = "source failed")]
    fn a_panicking_source_panics_the_consumer() {
        let source = (0..10).map(|i| if i == 5 { panic!("source failed") } else { i });
        let _ = Prefetched::new(source).count();
    }
}
