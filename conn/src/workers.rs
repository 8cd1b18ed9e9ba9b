//! Serving threads. A listener given [`Workers`] hands each connection it accepts to one
//! of their threads, where it is served start to finish on that thread's own
//! single-threaded runtime, as each of nginx's worker processes serves its connections:
//! a request's socket events, its task and its response never hop between threads, so a
//! small answer costs no cross-thread wake-up. The thread with the fewest connections
//! takes the next one. (The multi-threaded runtime moves tasks between threads to keep
//! them busy; for many short requests that costs more than it balances.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

/// Threads that serve connections, each with a runtime of its own. They stop when the
/// last `Arc` to them is dropped (after the listeners that use them have drained).
pub struct Workers {
    threads: Vec<Worker>,
    stop: CancellationToken,
}

struct Worker {
    handle: Handle,
    /// Connections this thread serves now.
    load: Arc<AtomicUsize>,
}

/// A connection's place on a worker: counted while it lives.
pub(crate) struct Load(Arc<AtomicUsize>);

impl Drop for Load {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Workers {
    /// `n` serving threads (`0`: one per core).
    pub fn start(n: usize) -> std::io::Result<Arc<Workers>> {
        let n = match n {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        };
        let stop = CancellationToken::new();
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            match start_one(i, stop.clone()) {
                Ok(handle) => threads.push(Worker {
                    handle,
                    load: Arc::new(AtomicUsize::new(0)),
                }),
                Err(e) => {
                    // The threads started end with their runtimes.
                    stop.cancel();
                    return Err(e);
                }
            }
        }
        Ok(Arc::new(Workers { threads, stop }))
    }

    /// The thread with the fewest connections, and the new connection's count on it.
    pub(crate) fn pick(&self) -> (&Handle, Load) {
        let worker = self
            .threads
            .iter()
            .min_by_key(|w| w.load.load(Ordering::Relaxed))
            .expect("at least one worker");
        worker.load.fetch_add(1, Ordering::Relaxed);
        (&worker.handle, Load(worker.load.clone()))
    }
}

/// One serving thread: its runtime is built, run and dropped there (a runtime may not be
/// dropped on a thread that runs async code), and drives the connections spawned onto
/// it until `stop`; whatever is left ends with it.
fn start_one(i: usize, stop: CancellationToken) -> std::io::Result<Handle> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(format!("serve-{i}"))
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build();
            match rt {
                Ok(rt) => {
                    let _ = tx.send(Ok(rt.handle().clone()));
                    rt.block_on(stop.cancelled());
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                }
            }
        })?;
    rx.recv()
        .map_err(|_| std::io::Error::other("a serving thread ended before it started"))?
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl std::fmt::Debug for Workers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workers")
            .field("threads", &self.threads.len())
            .finish()
    }
}
