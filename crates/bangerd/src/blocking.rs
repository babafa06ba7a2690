//! Blocking work called from async code, handed off at the leaf: on the
//! daemon's multi-thread runtime the worker gives its other tasks away for
//! the call (`block_in_place`); on a current-thread runtime (unit tests)
//! the call runs inline, as it would without a runtime.

use tokio::runtime::{Handle, RuntimeFlavor};

/// Run the blocking `f` without stalling the runtime's other tasks.
pub fn leaf<T>(f: impl FnOnce() -> T) -> T {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_blocking_leaf_does_not_stall_other_tasks() {
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        // The other task can only answer while this one blocks if the
        // worker handed it off.
        let other = tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            tx.send(()).unwrap();
        });
        let got = leaf(|| rx.recv_timeout(std::time::Duration::from_secs(5)));
        assert!(got.is_ok());
        other.await.unwrap();
    }

    #[tokio::test]
    async fn on_a_current_thread_runtime_it_runs_inline() {
        assert_eq!(leaf(|| 7), 7);
    }

    #[test]
    fn without_a_runtime_it_runs_inline() {
        assert_eq!(leaf(|| 7), 7);
    }
}
