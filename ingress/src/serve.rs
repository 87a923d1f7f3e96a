//! The HTTP/1 accept loop. `axum::serve` gives hyper no timer, so a client
//! that opens a connection and never finishes its request head would hold a
//! socket and a task forever; here hyper gets a timer and a deadline for
//! every request head (the first and each keep-alive one).

use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Serves `app` until `stop`, then lets each connection finish the request
/// in hand (upgraded WebSockets are no longer hyper's and are drained by the
/// caller) and returns once they have.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    stop: CancellationToken,
    head_timeout: Duration,
    grace: Duration,
) {
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(head_timeout)
        .keep_alive(true);
    let conns = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // Out of descriptors and the like: pause instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = TowerToHyperService::new(app.clone());
        let conn = builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades();
        let stop = stop.clone();
        conns.spawn(async move {
            let mut conn = std::pin::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!(error = %e, "connection ended");
                    }
                    return;
                }
                _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
            }
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "connection ended");
            }
        });
    }
    // Refuse new connections at once, not when the last request is done.
    drop(listener);
    conns.close();
    if tokio::time::timeout(grace, conns.wait()).await.is_err() {
        tracing::warn!(left = conns.len(), "requests still running after the grace");
    }
}
