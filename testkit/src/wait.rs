//! Waiting with a timeout: [`wait_for`] polls a check, never sleeps-and-hopes.

use std::future::Future;
use std::time::{Duration, Instant};

/// Generous default for anything that waits on the API server.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Polls `check` every 100 ms until it returns `Ok(value)`, or until `timeout` passes.
/// `check` returns `Err(reason)` while the condition does not hold yet; on timeout the result
/// is `Err` naming `what` and the last reason.
///
/// ```no_run
/// # async fn demo(api: kube::Api<k8s_openapi::api::core::v1::ServiceAccount>) -> Result<(), String> {
/// use manager_operator_testkit::{TIMEOUT, wait_for};
/// let sa = wait_for("default SA", TIMEOUT, || async {
///     api.get_opt("default").await.map_err(|e| e.to_string())?.ok_or("not yet".to_string())
/// }).await?;
/// # Ok(()) }
/// ```
pub async fn wait_for<T, F, Fut>(what: &str, timeout: Duration, mut check: F) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match check().await {
            Ok(v) => return Ok(v),
            Err(reason) => reason,
        };
        if start.elapsed() >= timeout {
            return Err(format!(
                "timed out after {:?} waiting for {what}; last observation: {last}",
                timeout
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
