//! Node-wide control: the pub/sub push callback (room messages to hubs,
//! control messages to the socket registry) and the session sweeper.

use crate::hub::Rooms;
use crate::sockets::SocketRegistry;
use bytes::Bytes;
use chat_core::keys::Keys;
use redis::aio::ConnectionManager;
use redis::{PushInfo, PushKind, Value};
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Control messages: `s<sid>` (session deleted), `k<room>\n<user>` (membership withdrawn).
pub fn revoke_session_payload(sid: &str) -> String {
    format!("s{sid}")
}

pub fn withdraw_payload(room: &str, user: &str) -> String {
    format!("k{room}\n{user}")
}

/// Builds the callback that receives every push on the pub/sub connection.
pub fn push_handler(
    keys: Keys,
    rooms: Arc<Rooms>,
    sockets: Arc<SocketRegistry>,
) -> impl Fn(PushInfo) -> Result<(), std::convert::Infallible> + Send + Sync + 'static {
    let control = keys.control_channel();
    move |info: PushInfo| {
        match info.kind {
            PushKind::Message => {
                if let [Value::BulkString(channel), Value::BulkString(payload)] =
                    info.data.as_slice()
                {
                    let Ok(channel) = std::str::from_utf8(channel) else {
                        return Ok(());
                    };
                    if channel == control {
                        on_control(&sockets, payload);
                    } else if let Some(room) = keys.room_of_channel(channel) {
                        rooms.dispatch(room, Bytes::copy_from_slice(payload));
                    }
                }
            }
            PushKind::Disconnection => {
                tracing::warn!("pub/sub connection lost; hubs will resync");
                rooms.resync_all();
            }
            _ => {}
        }
        Ok(())
    }
}

fn on_control(sockets: &SocketRegistry, payload: &[u8]) {
    let Ok(text) = std::str::from_utf8(payload) else {
        return;
    };
    if let Some(sid) = text.strip_prefix('s') {
        let n = sockets.revoke_session(sid);
        tracing::info!(sid, sockets = n, "session revoked");
    } else if let Some((room, user)) = text.strip_prefix('k').and_then(|t| t.split_once('\n')) {
        let n = sockets.withdraw(room, user);
        tracing::info!(room, user, sockets = n, "membership withdrawn");
    }
}

/// Slides active sessions' TTLs and closes sockets whose session is gone,
/// one pipeline per sweep.
pub async fn sweep_sessions(
    keys: Keys,
    mut redis: ConnectionManager,
    sockets: Arc<SocketRegistry>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let checks = sockets.sessions();
        if checks.is_empty() {
            continue;
        }
        let mut pipe = redis::pipe();
        for c in &checks {
            let key = keys.session(&c.sid);
            if c.active {
                pipe.expire(key, c.ttl as i64);
            } else {
                pipe.exists(key);
            }
        }
        match pipe.query_async::<Vec<i64>>(&mut redis).await {
            Ok(found) => {
                for (c, n) in checks.iter().zip(found) {
                    if n == 0 {
                        let closed = sockets.revoke_session(&c.sid);
                        tracing::info!(sid = %c.sid, sockets = closed, "session expired");
                    }
                }
            }
            // Redis unreachable: sessions are not judged expired on no evidence.
            Err(e) => tracing::debug!(error = %e, "session sweep failed"),
        }
    }
}
