//! Stopping `skiff serve`. The first SIGTERM or SIGINT starts a drain: the
//! listener closes, each connection closes once the request it is serving
//! (if any) is answered, and a request that arrives meanwhile gets 503. The
//! drain ends when every connection has closed or `http.shutdownTimeout` is
//! up; then request bodies still streaming in are cut off, so their
//! requests are answered 503 (retry later) rather than dropped mid-body,
//! and whatever is still open after [`CUT_OFF_GRACE`] goes with the process.
//! A second signal ends the process at once.
//!
//! Nothing here waits for work to reach a safe point: every change the host
//! makes to storage is atomic (a rename, a create-if-absent, or a
//! compare-and-swap), so the process may end between any two of them.

use anyhow::{Context, Result};
use std::time::Duration;
use tokio::signal::unix::{signal, Signal, SignalKind};
use tokio::sync::watch;

/// Where the server is in its life; connections and request bodies watch it.
/// The phases come in this order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    Serving,
    /// No new connections; open ones close once their request is answered.
    Draining,
    /// The drain timed out: request bodies still streaming in fail.
    CutOff,
}

/// After the cut-off, how long the requests it cut off have to be answered
/// (the guest notices the failed body at once; this only bounds it).
pub const CUT_OFF_GRACE: Duration = Duration::from_secs(2);

/// How the server stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// After the drain (complete or timed out): exit 0.
    Drained,
    /// A second signal (its number) ended the drain: exit at once, with
    /// 128 + the number, as a shell reports a process the signal killed,
    /// since requests in flight were dropped rather than finished.
    Forced(i32),
}

impl Stopped {
    pub fn exit_code(self) -> i32 {
        match self {
            Stopped::Drained => 0,
            Stopped::Forced(signal) => 128 + signal,
        }
    }
}

/// SIGTERM and SIGINT, caught from the moment this is made: installed
/// before the server says it listens, so a signal sent as soon as it does
/// is handled rather than killing the process by default.
pub struct Signals {
    term: Signal,
    int: Signal,
}

impl Signals {
    pub fn install() -> Result<Signals> {
        Ok(Signals {
            term: signal(SignalKind::terminate()).context("installing the SIGTERM handler")?,
            int: signal(SignalKind::interrupt()).context("installing the SIGINT handler")?,
        })
    }

    /// The next SIGTERM or SIGINT (one that came earlier counts): its number.
    pub async fn next(&mut self) -> i32 {
        tokio::select! {
            Some(()) = self.term.recv() => libc::SIGTERM,
            Some(()) = self.int.recv() => libc::SIGINT,
            // Both streams ended (the runtime is going away): no more signals.
            else => std::future::pending().await,
        }
    }
}

/// Resolves once `phase` reaches `at` (or its sender is gone, which means
/// the server is going away as well).
pub async fn reached(mut phase: watch::Receiver<Phase>, at: Phase) {
    let _ = phase.wait_for(|p| *p >= at).await.map(|_| ());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_say_whether_the_drain_finished() {
        assert_eq!(Stopped::Drained.exit_code(), 0);
        assert_eq!(Stopped::Forced(libc::SIGTERM).exit_code(), 143);
        assert_eq!(Stopped::Forced(libc::SIGINT).exit_code(), 130);
    }

    #[test]
    fn later_phases_count_as_reached() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, rx) = watch::channel(Phase::Serving);
            let draining = tokio::spawn(reached(rx.clone(), Phase::Draining));
            tokio::task::yield_now().await;
            assert!(!draining.is_finished());
            // Straight to the cut-off: a wait for the drain ends too.
            tx.send_replace(Phase::CutOff);
            draining.await.unwrap();
            reached(rx.clone(), Phase::CutOff).await;
            // The sender gone: nothing more will change; waits end.
            let (tx, rx) = watch::channel(Phase::Serving);
            drop(tx);
            reached(rx, Phase::CutOff).await;
        });
    }
}
