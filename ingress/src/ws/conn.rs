//! One WebSocket connection: authentication, then a reader loop that
//! dispatches each frame to its handler in `frames/`, while `writer` owns
//! the sending half.

use super::auth::{Authed, authenticate};
use super::frames;
use super::outbound::{Closer, SocketHandle};
use super::rate::{RateLimiter, Verdict};
use crate::state::Shared;
use axum::extract::ws::{Message, WebSocket};
use chat_core::protocol::{ClientFrame, ErrorCode, FrameLimits, ServerFrame, close};
use futures_util::StreamExt;
use futures_util::stream::SplitStream;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use tokio::sync::mpsc;
use tracing::Instrument;

/// A joined room as the connection sees it.
pub struct JoinedRoom {
    pub epoch: String,
    /// Shared with the room's hub; cleared on leave so delivery stops at once.
    pub active: Arc<std::sync::atomic::AtomicBool>,
}

/// The authenticated connection's state, owned by its reader task.
pub struct Conn {
    pub state: Shared,
    pub socket: SocketHandle,
    pub sid: Option<Arc<str>>,
    pub exp: u64,
    pub rooms_claim: Option<Vec<String>>,
    pub joined: HashMap<String, JoinedRoom>,
    pub expiring_sent: bool,
}

impl Conn {
    pub fn user(&self) -> &str {
        &self.socket.user
    }

    pub fn reply(&self, frame: &ServerFrame<'_>, reference: Option<&Value>) {
        self.socket.push(frame.to_json(reference).into());
    }

    pub fn error(&self, code: ErrorCode, message: &str, reference: Option<&Value>) {
        self.reply(&ServerFrame::Error { code, message }, reference);
    }

    /// Forgets rooms a hub removed this socket from (a deleted room): the hub
    /// has sent `left` and cleared the shared flag; the rest is done here,
    /// before the next frame is handled.
    pub async fn drop_removed_rooms(&mut self) {
        let gone: Vec<String> = self
            .joined
            .iter()
            .filter(|(_, j)| !j.active.load(Ordering::Acquire))
            .map(|(room, _)| room.clone())
            .collect();
        for room in gone {
            self.joined.remove(&room);
            self.state.hubs.leave(&room, self.socket.id);
            self.state
                .sockets
                .set_member_room(self.socket.id, &room, false);
            self.state.presence.left(&room, &self.socket.user).await;
        }
    }
}

pub fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn error_frame(
    code: ErrorCode,
    message: &str,
    reference: Option<&Value>,
) -> axum::extract::ws::Utf8Bytes {
    ServerFrame::Error { code, message }
        .to_json(reference)
        .into()
}

pub async fn run(state: Shared, ws: WebSocket, header_token: Option<String>) {
    let limits = state.settings.limits.clone();
    let (sink, mut stream) = ws.split();
    let (tx, rx) = mpsc::channel(limits.outbound_queue);
    let closer = Closer::default();
    let writer = tokio::spawn(super::writer::run(state.clone(), sink, rx, closer.clone()));
    let id = state.next_socket.fetch_add(1, Ordering::Relaxed);

    // The handlers' futures are boxed while they run: inline, the largest
    // of them would sit in this task's state for the socket's whole life
    // (memory per idle connection is a target, docs/benchmarks.md (d)).
    let authed = match header_token {
        Some(token) => Box::pin(authenticate(&state, &token))
            .await
            .map(|a| (a, None))
            .map_err(|e| (e, None)),
        None => Box::pin(first_frame_auth(&state, &mut stream, &closer)).await,
    };
    let (authed, auth_ref): (Authed, Option<Value>) = match authed {
        Ok(a) => a,
        Err(((code, message), reference)) => {
            let _ = tx.try_send(super::outbound::Out::Frame(error_frame(
                code,
                &message,
                reference.as_ref(),
            )));
            closer.close(if code == ErrorCode::Unavailable {
                close::GOING_AWAY
            } else {
                close::UNAUTHENTICATED
            });
            drop(tx);
            finish_writer(writer).await;
            return;
        }
    };
    let claims = authed.claims;
    let user: Arc<str> = Arc::from(claims.sub.as_str());
    let sid: Option<Arc<str>> = claims.sid.as_deref().map(Arc::from);
    let socket = SocketHandle::new(id, user.clone(), tx, closer.clone());
    state
        .sockets
        .insert(socket.clone(), sid.clone(), authed.session_ttl);
    metrics::gauge!("chat_connections").increment(1.0);
    let mut conn = Conn {
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
    reader_loop(&mut conn, &mut stream).instrument(span).await;

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
    finish_writer(writer).await;
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

type AuthFailure = ((ErrorCode, String), Option<Value>);

async fn first_frame_auth(
    state: &Shared,
    stream: &mut SplitStream<WebSocket>,
    closer: &Closer,
) -> Result<(Authed, Option<Value>), AuthFailure> {
    let limits = &state.settings.limits;
    let deadline = tokio::time::sleep(limits.auth_timeout);
    tokio::pin!(deadline);
    loop {
        let msg = tokio::select! {
            _ = &mut deadline => {
                return Err(((ErrorCode::Unauthorized, "no auth frame in time".into()), None));
            }
            _ = closer.closed() => return Err(((ErrorCode::Unauthorized, "closed".into()), None)),
            m = stream.next() => m,
        };
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
                        Err(e) => Err((e, reference)),
                    },
                    _ => Err((
                        (ErrorCode::Unauthorized, "authenticate first".into()),
                        reference,
                    )),
                };
            }
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            _ => return Err(((ErrorCode::Unauthorized, "authenticate first".into()), None)),
        }
    }
}

async fn reader_loop(conn: &mut Conn, stream: &mut SplitStream<WebSocket>) {
    let state = conn.state.clone();
    let limits = state.settings.limits.clone();
    let frame_limits = FrameLimits {
        max_text_bytes: limits.max_text_bytes,
    };
    let mut rate = RateLimiter::new(limits.rate_per_sec, limits.rate_burst);
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
                        let text = e.to_string();
                        // tungstenite reports an over-size message as a capacity error.
                        if text.contains("too long") || text.contains("Space limit") {
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
                    Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
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
fn expiry_deadline(conn: &Conn, notice: Duration) -> tokio::time::Instant {
    // Capped: a token may carry any `exp`, and an Instant overflow would panic.
    const MAX_WAIT_MS: u64 = 365 * 86_400 * 1000;
    let now_ms = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let exp_ms = conn.exp.saturating_mul(1000);
    let at_ms = if conn.expiring_sent {
        exp_ms
    } else {
        exp_ms.saturating_sub(notice.as_millis() as u64)
    };
    tokio::time::Instant::now()
        + Duration::from_millis(at_ms.saturating_sub(now_ms).min(MAX_WAIT_MS))
}
