//! The HTTP/1 accept loop. `axum::serve` gives hyper no timer and no cap, so
//! a client that opens connections and never finishes a request would hold
//! sockets and tasks forever. Here hyper gets a deadline for every request
//! head (the first and each keep-alive one), and every connection holds a
//! slot of the listener's [`Budget`] from accept to close; at the cap the
//! oldest evictable connection makes room (ingress/src/conns.rs).

use crate::conns::{Budget, Slot};
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How long a connection accepted at the cap waits for the slot its
/// eviction frees.
const ADMIT_WAIT: Duration = Duration::from_secs(1);
/// The pause after a failed accept (out of descriptors): long enough not to
/// spin, short enough to pick up the connection the eviction made room for.
const ACCEPT_PAUSE: Duration = Duration::from_millis(10);

/// Serves `app` until `stop`, then lets each connection finish the request
/// in hand (upgraded WebSockets are no longer hyper's and are drained by the
/// caller) and returns once they have.
pub async fn serve(
    listener: TcpListener,
    budget: Arc<Budget>,
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
    let mut warned: Option<Instant> = None;
    loop {
        let (stream, peer) = tokio::select! {
            _ = stop.cancelled() => break,
            r = listener.accept() => match r {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors and the like: free one by shedding
                    // the oldest evictable connection, and pause instead of
                    // spinning. Logged at most once a second.
                    metrics::counter!("chat_accept_errors_total").increment(1);
                    let shed = budget.evict_oldest();
                    if warned.is_none_or(|t| t.elapsed() >= Duration::from_secs(1)) {
                        tracing::warn!(error = %e, shed, open = budget.open(), "accept failed");
                        warned = Some(Instant::now());
                    }
                    tokio::select! {
                        _ = stop.cancelled() => break,
                        _ = tokio::time::sleep(ACCEPT_PAUSE) => continue,
                    }
                }
            },
        };
        let slot = match budget.try_admit() {
            Some(slot) => slot,
            // The evicted connection's task frees its slot and descriptor
            // at once. Waiting for it here, not accepting meanwhile, keeps
            // the descriptors we hold at the cap: newcomers wait in the
            // kernel's backlog instead.
            None if budget.evict_oldest() => {
                let admitted = tokio::select! {
                    _ = stop.cancelled() => break,
                    a = tokio::time::timeout(ADMIT_WAIT, budget.admit()) => a,
                };
                match admitted {
                    Ok(Some(slot)) => slot,
                    _ => {
                        refuse(&stream, &budget);
                        continue;
                    }
                }
            }
            None => {
                refuse(&stream, &budget);
                continue;
            }
        };
        let (app, stop, builder) = (app.clone(), stop.clone(), builder.clone());
        conns.spawn(async move {
            serve_connection(stream, peer, slot, app, stop, &builder).await;
        });
    }
    // Refuse new connections at once, not when the last request is done.
    drop(listener);
    conns.close();
    if tokio::time::timeout(grace, conns.wait()).await.is_err() {
        tracing::warn!(left = conns.len(), "requests still running after the grace");
    }
}

/// A best-effort 503 for a connection there is no slot for, then close.
fn refuse(stream: &TcpStream, budget: &Budget) {
    budget.refused();
    let _ = stream.try_write(
        b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 12\r\nretry-after: 1\r\nconnection: close\r\n\r\nno capacity\n",
    );
}

async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    app: Router,
    stop: CancellationToken,
    builder: &http1::Builder,
) {
    let _ = stream.set_nodelay(true);
    let mut evicted = std::pin::pin!(slot.evicted());
    // Each request carries its connection's slot (a WebSocket keeps it after
    // the upgrade) and peer address, and holds the slot from eviction until
    // its response body is done.
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        let hold = slot.hold();
        req.extensions_mut().insert(slot.clone());
        req.extensions_mut().insert(ConnectInfo(peer));
        let call = tower::ServiceExt::oneshot(app.clone(), req);
        async move {
            let response = call.await?;
            Ok::<_, Infallible>(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &hold;
                    frame
                }))
            }))
        }
    });
    let conn = builder
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades();
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        r = conn.as_mut() => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended");
            }
            return;
        }
        // Dropping the connection closes it.
        _ = &mut evicted => return,
        _ = stop.cancelled() => conn.as_mut().graceful_shutdown(),
    }
    tokio::select! {
        r = conn => {
            if let Err(e) = r {
                tracing::debug!(error = %e, "connection ended");
            }
        }
        _ = evicted => {}
    }
}
