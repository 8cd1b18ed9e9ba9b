//! Starting build processes from a thread that lives as long as the process, so their
//! parent-death signal fires when the builder ends, not when a tokio thread does.

/// Spawns a build command from a thread that lives as long as the process.
///
/// Build processes get `PR_SET_PDEATHSIG`, which fires when the *thread* that forked
/// them ends, not the process. A tokio thread can end: a worker that went through
/// `block_in_place` carries on as a blocking-pool thread, which exits after 10 s idle.
/// A build spawned there was SIGKILLed mid-install, "killed by a signal" with no reason.
pub async fn spawn(cmd: tokio::process::Command) -> std::io::Result<tokio::process::Child> {
    type Reply = tokio::sync::oneshot::Sender<std::io::Result<tokio::process::Child>>;
    type Job = (tokio::process::Command, tokio::runtime::Handle, Reply);
    static SPAWNER: std::sync::OnceLock<std::sync::mpsc::Sender<Job>> = std::sync::OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("cdeploy-spawner".into())
            .spawn(move || {
                for (mut cmd, handle, reply) in rx {
                    let _enter = handle.enter();
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the spawner thread");
        tx
    });
    let gone = || std::io::Error::other("the spawner thread is gone");
    let (reply, answer) = tokio::sync::oneshot::channel();
    tx.send((cmd, tokio::runtime::Handle::current(), reply))
        .map_err(|_| gone())?;
    answer.await.map_err(|_| gone())?
}

#[cfg(test)]
mod tests {
    use super::super::{sys, Limits};
    use super::*;

    /// A child with PDEATHSIG, spawned from a thread that ends right after: it must live
    /// on (the spawner thread is its parent), not be killed with that thread.
    #[test]
    fn builds_outlive_the_thread_that_asked_for_them() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let child = std::thread::spawn(move || {
            handle.block_on(async {
                let mut cmd = std::process::Command::new("sleep");
                cmd.arg("1");
                // The set-up of every build process, PDEATHSIG included.
                let setup = sys::ChildSetup {
                    procs: Vec::new(),
                    limits: Limits::default(),
                    user: None,
                    nproc_fallback: false,
                };
                sys::pre_exec(&mut cmd, setup);
                spawn(tokio::process::Command::from(cmd)).await.unwrap()
            })
        })
        .join()
        .unwrap();
        let status = rt.block_on(async move {
            let mut child = child;
            child.wait().await.unwrap()
        });
        assert!(status.success(), "killed with the thread: {status:?}");
    }
}
