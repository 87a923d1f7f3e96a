//! One WebSocket connection: authentication, then a reader loop that
//! dispatches each frame to its handler in `frames/`, while `writer` owns
//! the sending half.

use super::frames;
use super::rate::{RateLimiter, Verdict};
use super::session::Session;
use crate::auth::{Authed, authenticate};
use crate::conns::Slot;
use crate::outbound::{Closer, Out, Outbound, SocketHandle};
use crate::state::Shared;
use axum::extract::ws::{Message, WebSocket};
use chat_core::protocol::{ClientFrame, ErrorCode, FrameLimits, Refusal, ServerFrame, close};
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};
use tracing::Instrument;

use chat_core::clock::now_secs;

/// Why a socket never got `ready`.
struct AuthFailure {
    refusal: Refusal,
    reference: Option<Value>,
    close: u16,
    /// The `chat_upgrades_refused_total` reason.
    reason: &'static str,
}

impl AuthFailure {
    fn new(code: ErrorCode, message: &'static str, reference: Option<Value>) -> Self {
        Self::refused(Refusal::new(code, message), reference)
    }

    fn refused(refusal: Refusal, reference: Option<Value>) -> Self {
        let (close, reason) = match refusal.code {
            // Redis down: the client retries like after a drain.
            ErrorCode::Unavailable => (close::GOING_AWAY, "unavailable"),
            _ => (close::UNAUTHENTICATED, "auth"),
        };
        Self {
            refusal,
            reference,
            close,
            reason,
        }
    }

    /// Evicted at the connection cap before it authenticated.
    fn capacity() -> Self {
        Self {
            refusal: Refusal::new(ErrorCode::Unavailable, "node at capacity, try again"),
            reference: None,
            close: close::TRY_AGAIN_LATER,
            reason: "capacity",
        }
    }

    fn policy(message: &'static str) -> Self {
        Self {
            close: close::POLICY,
            reason: "rate",
            ..Self::new(ErrorCode::RateLimited, message, None)
        }
    }
}

pub async fn run(state: Shared, ws: WebSocket, header_token: Option<String>, slot: Option<Slot>) {
    let limits = state.settings.limits.clone();
    let (sink, stream) = ws.split();
    let mut stream = Input {
        stream,
        state: ReadState::Open,
    };
    let (out, inbox) = Outbound::channel(limits.outbound_queue, limits.outbound_queue_bytes);
    let closer = Closer::default();
    let writer = tokio::spawn(super::writer::run(
        state.clone(),
        sink,
        inbox,
        closer.clone(),
    ));
    let id = state.next_socket.fetch_add(1, Ordering::Relaxed);
    // Every frame counts from the first, control frames included.
    let mut rate = RateLimiter::new(limits.rate_per_sec, limits.rate_burst);

    // The handlers' futures are boxed while they run: inline, the largest
    // of them would sit in this task's state for the socket's whole life
    // (memory per idle connection is a target, docs/benchmarks.md (d)).
    let authed = {
        let auth = async {
            match header_token {
                Some(token) => authenticate(&state, &token)
                    .await
                    .map(|a| (a, None))
                    .map_err(|r| AuthFailure::refused(r, None)),
                None => first_frame_auth(&state, &mut stream, &closer, &mut rate).await,
            }
        };
        let evicted = async {
            match &slot {
                Some(slot) => slot.evicted().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            biased;
            _ = evicted => Err(AuthFailure::capacity()),
            a = Box::pin(auth) => a,
        }
    };
    let (authed, auth_ref): (Authed, Option<Value>) = match authed {
        Ok(a) => a,
        Err(f) => {
            metrics::counter!("chat_upgrades_refused_total", "reason" => f.reason).increment(1);
            tracing::info!(socket = id, reason = f.reason, close = f.close, error = %f.refusal.message, "socket refused");
            let _ = out.try_push(Out::Frame(
                ServerFrame::Error {
                    code: f.refusal.code,
                    message: &f.refusal.message,
                }
                .to_json(f.reference.as_ref())
                .into(),
            ));
            closer.close(f.close);
            drop(out);
            Box::pin(finish(writer, &mut stream, slot.as_ref())).await;
            return;
        }
    };
    // Authenticated: the connection cap no longer evicts it.
    let held = slot.as_ref().map(Slot::hold);
    let claims = authed.claims;
    let user: Arc<str> = Arc::from(claims.sub.as_str());
    let sid: Option<Arc<str>> = claims.sid.as_deref().map(Arc::from);
    let socket = SocketHandle::new(id, user.clone(), out, closer.clone());
    state
        .sockets
        .insert(socket.clone(), sid.clone(), authed.session_ttl);
    metrics::gauge!("chat_connections").increment(1.0);
    let mut conn = Session {
        state: state.clone(),
        socket,
        sid,
        exp: claims.exp,
        rooms_claim: claims.rooms,
        joined: HashMap::new(),
        expiring_sent: false,
    };
    conn.reply(
        &ServerFrame::Ready {
            user: &user,
            session: conn.sid.as_deref(),
            exp: conn.exp,
        },
        auth_ref.as_ref(),
    );
    let span = tracing::info_span!("socket", user = %user, socket = id);
    reader_loop(&mut conn, &mut stream, &mut rate)
        .instrument(span.clone())
        .await;
    span.in_scope(|| tracing::debug!(rooms = conn.joined.len(), "socket closing"));

    // Leave every room without `left` frames: the socket is going.
    for (room, joined) in std::mem::take(&mut conn.joined) {
        joined.active.store(false, Ordering::Release);
        state.hubs.leave(&room, id);
        Box::pin(state.presence.left(&room, &user)).await;
    }
    state.sockets.remove(id);
    metrics::gauge!("chat_connections").decrement(1.0);
    closer.close(1000);
    drop(conn);
    drop(held);
    // Boxed: inline, its state would sit in every socket's task (see above).
    Box::pin(finish(writer, &mut stream, slot.as_ref())).await;
}

/// How long the closing handshake may take: the close frame written, the
/// peer's own close read back.
const CLOSING: Duration = Duration::from_secs(5);
/// After the read side failed, how long the socket stays open so the peer
/// can read the close frame before the kernel resets the connection.
const LINGER: Duration = Duration::from_secs(1);
/// What a closing socket evicted at the connection cap has left to write
/// its close frame: short, as the listener waits for its slot before it
/// accepts the next connection.
const EVICTED_CLOSE: Duration = Duration::from_millis(50);

/// Where the read half stands.
#[derive(Clone, Copy, PartialEq, Eq)]
enum ReadState {
    Open,
    /// The peer closed (its close frame, or end of stream).
    PeerClosed,
    /// A read failed (too large, protocol error): reading on could buffer
    /// whatever the peer still sends, so it stops here.
    Failed,
}

/// The socket's read half, remembering when it may no longer be read.
struct Input {
    stream: SplitStream<WebSocket>,
    state: ReadState,
}

impl Input {
    /// The next message; cancel-safe, as `StreamExt::next`.
    async fn next(&mut self) -> Option<Result<Message, axum::Error>> {
        if self.state != ReadState::Open {
            return None;
        }
        let m = self.stream.next().await;
        match &m {
            None | Some(Ok(Message::Close(_))) => self.state = ReadState::PeerClosed,
            Some(Err(_)) => self.state = ReadState::Failed,
            Some(Ok(_)) => {}
        }
        m
    }
}

/// Ends a socket with its closing handshake: while the writer sends the
/// close frame, input is read and discarded until the peer's own close.
/// Dropping a socket with unread input makes the kernel answer with a
/// reset, which can destroy the close frame before the peer reads it (the
/// client would see 1006 instead of the code).
///
/// A closing socket still holds its slot of the connection cap; evicted, it
/// gets a moment for its close frame and goes.
async fn finish(writer: tokio::task::JoinHandle<()>, input: &mut Input, slot: Option<&Slot>) {
    let abort = writer.abort_handle();
    let evicted = async {
        match slot {
            Some(s) => {
                s.evicted().await;
                tokio::time::sleep(EVICTED_CLOSE).await;
            }
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = closing_handshake(writer, input) => {}
        _ = evicted => abort.abort(),
    }
}

async fn closing_handshake(writer: tokio::task::JoinHandle<()>, input: &mut Input) {
    let deadline = tokio::time::Instant::now() + CLOSING;
    let drain = async {
        while input.state == ReadState::Open {
            if tokio::time::timeout_at(deadline, input.next())
                .await
                .is_err()
            {
                return;
            }
        }
        if input.state == ReadState::Failed {
            // Unread input may be left: give the peer a moment to read the
            // close frame before the reset.
            tokio::time::sleep_until(deadline.min(tokio::time::Instant::now() + LINGER)).await;
        }
    };
    tokio::join!(finish_writer(writer), drain);
}

/// The writer bounds its own writes; this bounds the wait anyway.
async fn finish_writer(mut writer: tokio::task::JoinHandle<()>) {
    if tokio::time::timeout(Duration::from_secs(15), &mut writer)
        .await
        .is_err()
    {
        writer.abort();
    }
}

async fn first_frame_auth(
    state: &Shared,
    stream: &mut Input,
    closer: &Closer,
    rate: &mut RateLimiter,
) -> Result<(Authed, Option<Value>), AuthFailure> {
    let limits = &state.settings.limits;
    let deadline = tokio::time::sleep(limits.auth_timeout);
    tokio::pin!(deadline);
    loop {
        let msg = tokio::select! {
            _ = &mut deadline => {
                return Err(AuthFailure::new(ErrorCode::Unauthorized, "no auth frame in time", None));
            }
            _ = closer.closed() => return Err(AuthFailure::new(ErrorCode::Unauthorized, "closed", None)),
            m = stream.next() => m,
        };
        if let Verdict::Abuse = rate.check() {
            return Err(AuthFailure::policy("too many frames"));
        }
        match msg {
            Some(Ok(Message::Text(t))) => {
                let (reference, frame) = ClientFrame::parse(
                    &t,
                    FrameLimits {
                        max_text_bytes: limits.max_text_bytes,
                    },
                );
                return match frame {
                    Ok(ClientFrame::Auth { token }) => match authenticate(state, &token).await {
                        Ok(a) => Ok((a, reference)),
                        Err(r) => Err(AuthFailure::refused(r, reference)),
                    },
                    _ => Err(AuthFailure::new(
                        ErrorCode::Unauthorized,
                        "authenticate first",
                        reference,
                    )),
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            _ => {
                return Err(AuthFailure::new(
                    ErrorCode::Unauthorized,
                    "authenticate first",
                    None,
                ));
            }
        }
    }
}

async fn reader_loop(conn: &mut Session, stream: &mut Input, rate: &mut RateLimiter) {
    let state = conn.state.clone();
    let limits = state.settings.limits.clone();
    let frame_limits = FrameLimits {
        max_text_bytes: limits.max_text_bytes,
    };
    let mut last_seen = Instant::now();
    let mut liveness = tokio::time::interval(limits.ping_interval);
    liveness.reset();
    let closer = conn.socket.closer.clone();
    let removed = conn.socket.removed.clone();
    // Registered once, re-armed after it fires: not a waiter per frame.
    let mut removed_wait = std::pin::pin!(removed.notified());
    loop {
        let timer = expiry_deadline(conn, limits.expiring_notice);
        tokio::select! {
            biased;
            _ = closer.closed() => return,
            _ = state.shutdown.cancelled() => {
                closer.close(close::GOING_AWAY);
                return;
            }
            _ = tokio::time::sleep_until(timer) => {
                if conn.expiring_sent || now_secs() >= conn.exp {
                    conn.error(ErrorCode::Unauthorized, "token expired", None);
                    closer.close(close::UNAUTHENTICATED);
                    return;
                }
                conn.expiring_sent = true;
                conn.reply(&ServerFrame::Expiring { exp: conn.exp }, None);
            }
            _ = &mut removed_wait => {
                removed_wait.set(removed.notified());
                Box::pin(conn.drop_removed_rooms()).await;
            }
            _ = liveness.tick() => {
                if last_seen.elapsed() > limits.ping_interval * 2 {
                    tracing::info!("no pong for two ping intervals, closing");
                    closer.close(close::POLICY);
                    return;
                }
            }
            msg = stream.next() => {
                last_seen = Instant::now();
                match msg {
                    None | Some(Ok(Message::Close(_))) => return,
                    Some(Err(e)) => {
                        if is_over_size(e) {
                            conn.error(ErrorCode::TooLarge, "frame over the size limit", None);
                            closer.close(close::TOO_LARGE);
                        }
                        return;
                    }
                    Some(Ok(Message::Binary(_))) => {
                        conn.error(ErrorCode::BadRequest, "binary frames are not supported", None);
                        closer.close(close::UNSUPPORTED);
                        return;
                    }
                    // Control frames cost what any frame costs: counted, and
                    // a flood of them closes the socket like any other.
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {
                        if let Verdict::Abuse = rate.check() {
                            conn.error(ErrorCode::RateLimited, "too many frames", None);
                            closer.close(close::POLICY);
                            return;
                        }
                    }
                    Some(Ok(Message::Text(t))) => {
                        conn.socket.active.store(true, Ordering::Release);
                        match rate.check() {
                            Verdict::Allow => {}
                            Verdict::Refuse => {
                                let (reference, _) = ClientFrame::parse(&t, frame_limits);
                                conn.error(ErrorCode::RateLimited, "too many frames", reference.as_ref());
                                continue;
                            }
                            Verdict::Abuse => {
                                conn.error(ErrorCode::RateLimited, "too many frames", None);
                                closer.close(close::POLICY);
                                return;
                            }
                        }
                        let (reference, frame) = ClientFrame::parse(&t, frame_limits);
                        match frame {
                            Ok(f) => Box::pin(frames::handle(conn, f, reference)).await,
                            Err(e) => conn.error(e.code, &e.message, e.reference.as_ref()),
                        }
                    }
                }
            }
        }
    }
}

/// When the next expiry event is due: `expiring`, then the close at `exp`.
fn expiry_deadline(conn: &Session, notice: Duration) -> tokio::time::Instant {
    // Capped: a token may carry any `exp`, and an Instant overflow would panic.
    const MAX_WAIT_MS: u64 = 365 * 86_400 * 1000;
    let now_ms = chat_core::clock::now_ms();
    let exp_ms = conn.exp.saturating_mul(1000);
    let at_ms = if conn.expiring_sent {
        exp_ms
    } else {
        exp_ms.saturating_sub(chat_core::clock::millis(notice))
    };
    tokio::time::Instant::now()
        + Duration::from_millis(at_ms.saturating_sub(now_ms).min(MAX_WAIT_MS))
}

/// Whether a read failed on a frame or message over the size limit
/// (tungstenite's capacity error, passed through by axum).
fn is_over_size(e: axum::Error) -> bool {
    use tokio_tungstenite::tungstenite::Error;
    matches!(
        e.into_inner().downcast_ref::<Error>(),
        Some(Error::Capacity(_))
    )
}
