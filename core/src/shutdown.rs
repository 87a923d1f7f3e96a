//! Graceful shutdown: SIGTERM or Ctrl-C cancels one token that every loop watches.

use tokio_util::sync::CancellationToken;

/// Runs `work` (which stops by itself once `token` is cancelled, after
/// finishing what it holds) but gives it only `grace` after the cancel:
/// `None` when the grace ran out (unfinished consumer-group work stays
/// pending and is taken over by another worker).
pub async fn with_grace<T>(
    work: impl std::future::Future<Output = T>,
    token: CancellationToken,
    grace: std::time::Duration,
) -> Option<T> {
    tokio::select! {
        r = work => Some(r),
        _ = async {
            token.cancelled().await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "shutdown grace ran out; stopping with work unfinished");
            None
        }
    }
}

/// Cancels `token` on SIGTERM or SIGINT.
pub fn cancel_on_signal(token: CancellationToken) {
    tokio::spawn(async move {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::error!(error = %e, "cannot listen for SIGTERM");
                        let _ = ctrl_c.await;
                        token.cancel();
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {}
                _ = term.recv() => {}
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutdown requested");
        token.cancel();
    });
}
