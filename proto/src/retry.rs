//! Reaching a party that may not be up yet: the one connect-and-retry loop
//! of every client (the aggregator reaching its teachers, the student its
//! aggregator). Parties start in any order, so a refused connection only
//! means "try again shortly", until the caller's patience runs out.

use std::future::Future;
use std::time::Duration;

/// Pause between two attempts.
pub const RETRY_PAUSE: Duration = Duration::from_millis(250);

/// Awaits `attempt()` until it succeeds, pausing [`RETRY_PAUSE`] between
/// tries. The first failure once `wait` has passed since the first try is
/// returned (so there is always at least one try).
pub async fn retry_for<T, E, F, Fut>(wait: Duration, mut attempt: F) -> Result<T, E>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        match attempt().await {
            Ok(v) => return Ok(v),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(_) => tokio::time::sleep(RETRY_PAUSE).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn retries_until_success_and_gives_up_after_the_wait() {
        let mut tries = 0;
        let ok: Result<u32, &str> = retry_for(Duration::from_secs(5), || {
            tries += 1;
            let t = tries;
            async move {
                if t < 3 {
                    Err("not yet")
                } else {
                    Ok(t)
                }
            }
        })
        .await;
        assert_eq!(ok, Ok(3));

        let mut tries = 0;
        let started = tokio::time::Instant::now();
        let err: Result<(), u32> = retry_for(Duration::from_millis(600), || {
            tries += 1;
            let t = tries;
            async move { Err(t) }
        })
        .await;
        let n = err.expect_err("never succeeds");
        assert!((2..=5).contains(&n), "{n} tries in 600 ms at {RETRY_PAUSE:?} apart");
        assert!(started.elapsed() >= Duration::from_millis(600));

        let once: Result<(), &str> = retry_for(Duration::ZERO, || async { Err("down") }).await;
        assert_eq!(once, Err("down"), "one try even with no patience");
    }
}
