//! Node-wide control: the pub/sub push callback (room messages to hubs,
//! control messages to the socket registry) and the session sweeper.

use crate::hub::Rooms;
use crate::sockets::SocketRegistry;
use bytes::Bytes;
use chat_core::control::Control;
use chat_core::keys::Keys;
use chat_core::redis_conn::Conn;
use redis::{PushInfo, PushKind, Value};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

/// Builds the callback that receives every push on the pub/sub connection.
pub fn push_handler(
    keys: Keys,
    rooms: Arc<Rooms>,
    sockets: Arc<SocketRegistry>,
    lost: Arc<AtomicBool>,
    subs: tokio::sync::mpsc::UnboundedSender<crate::hub::SubOp>,
    shutdown: CancellationToken,
) -> impl Fn(PushInfo) -> Result<(), std::convert::Infallible> + Send + Sync + 'static {
    let control = keys.control_channel();
    move |info: PushInfo| {
        match info.kind {
            PushKind::Message | PushKind::SMessage => {
                if let [Value::BulkString(channel), Value::BulkString(payload)] =
                    info.data.as_slice()
                {
                    let Ok(channel) = std::str::from_utf8(channel) else {
                        return Ok(());
                    };
                    if channel == control {
                        on_control(&sockets, &rooms, payload);
                    } else if let Some(room) = keys.room_of_channel(channel) {
                        rooms.dispatch(room, Bytes::copy_from_slice(payload));
                    }
                }
            }
            // Ours are answered as pushes too; a Redis Cluster also sends one
            // when the room's slot moves. Restore is a no-op for the former.
            PushKind::SUnsubscribe => {
                if let Some(Value::BulkString(channel)) = info.data.first()
                    && let Ok(channel) = std::str::from_utf8(channel)
                    && keys.room_of_channel(channel).is_some()
                {
                    let _ = subs.send(crate::hub::SubOp::Restore(channel.to_owned()));
                }
            }
            PushKind::Disconnection => {
                // Resyncing now would race the resubscription; the supervisor
                // does it once the connection answers again.
                // At a clean shutdown the connection goes with the node.
                if shutdown.is_cancelled() {
                    tracing::debug!("pub/sub connection closed");
                } else {
                    tracing::warn!("pub/sub connection lost");
                }
                lost.store(true, Ordering::Release);
            }
            _ => {}
        }
        Ok(())
    }
}

/// Keeps the pub/sub connection alive: a PING every `every` makes redis-rs
/// reconnect (and resubscribe) however long Redis was gone, and the first
/// PING answered after a loss resyncs every hub, so messages published while
/// the node was deaf are delivered.
pub async fn supervise_pubsub(
    mut subscriber: Conn,
    rooms: Arc<Rooms>,
    lost: Arc<AtomicBool>,
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
        match redis::cmd("PING")
            .query_async::<redis::Value>(&mut subscriber)
            .await
        {
            Ok(_) => {
                if lost.swap(false, Ordering::AcqRel) {
                    tracing::info!(
                        rooms = rooms.len(),
                        "pub/sub connection back; resyncing hubs"
                    );
                    rooms.resync_all();
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "pub/sub ping failed");
                lost.store(true, Ordering::Release);
            }
        }
    }
}

fn on_control(sockets: &SocketRegistry, rooms: &Rooms, payload: &[u8]) {
    match Control::decode(payload) {
        Some(Control::SessionRevoked { sid }) => {
            let n = sockets.revoke_session(&sid);
            tracing::info!(sid = %sid, sockets = n, "session revoked");
        }
        Some(Control::Withdrawn { room, user }) => {
            let n = sockets.withdraw(&room, &user);
            tracing::info!(room = %room, user = %user, sockets = n, "membership withdrawn");
        }
        Some(Control::Banned {
            room,
            user,
            offset,
            epoch,
        }) => {
            tracing::info!(room = %room, user = %user, "banned; removing their sockets from the room");
            rooms.evict(&room, &user, offset, &epoch);
        }
        Some(Control::RoomDeleted {
            room,
            offset,
            epoch,
        }) => {
            tracing::info!(room = %room, "room deleted; removing its sockets");
            rooms.delete(&room, offset, &epoch);
        }
        None => {}
    }
}

/// What the sweeper knows of one session.
struct Tracked {
    /// When the key expires, as last read or set.
    expires_at: Instant,
    slid_at: Instant,
    active: bool,
}

/// Slides active sessions' TTLs and closes sockets whose session is gone.
/// Only sessions that are due are queried: one whose expiry is near, or an
/// active one not slid for a quarter of its TTL, so the cost per sweep is a
/// small pipeline even with many sessions. Deletions are announced on
/// `chat:ctl` and do not wait for a sweep.
pub async fn sweep_sessions(
    keys: Keys,
    mut redis: Conn,
    sockets: Arc<SocketRegistry>,
    every: Duration,
    shutdown: CancellationToken,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut tracked: HashMap<Arc<str>, Tracked> = HashMap::new();
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let now = Instant::now();
        let checks = sockets.sessions();
        let live: HashSet<&Arc<str>> = checks.iter().map(|c| &c.sid).collect();
        tracked.retain(|sid, _| live.contains(sid));
        let mut pipe = redis::pipe();
        let mut asked: Vec<(&Arc<str>, bool, u64)> = Vec::new();
        for c in &checks {
            let ttl = Duration::from_secs(c.ttl);
            // A session seen for the first time is due for both a check and,
            // if active, a slide: its key may already be well into its TTL.
            let t = tracked.entry(c.sid.clone()).or_insert(Tracked {
                expires_at: now,
                slid_at: now.checked_sub(ttl).unwrap_or(now),
                active: false,
            });
            t.active |= c.active;
            let slide =
                t.active && now.duration_since(t.slid_at) >= (ttl / 4).max(Duration::from_secs(1));
            let near = t.expires_at <= now + every * 2;
            let key = keys.session(&c.sid);
            if slide {
                pipe.cmd("PEXPIRE")
                    .arg(key)
                    .arg(chat_core::clock::millis(ttl));
            } else if near {
                pipe.cmd("PTTL").arg(key);
            } else {
                continue;
            }
            asked.push((&c.sid, slide, c.ttl));
        }
        if asked.is_empty() {
            continue;
        }
        let answers = match pipe.query_async::<Vec<i64>>(&mut redis).await {
            Ok(a) => a,
            // Redis unreachable: sessions are not judged expired on no evidence.
            Err(e) => {
                tracing::debug!(error = %e, "session sweep failed");
                continue;
            }
        };
        for ((sid, slid, ttl), n) in asked.into_iter().zip(answers) {
            let gone = if slid { n == 0 } else { n == -2 };
            if gone {
                let closed = sockets.revoke_session(sid);
                tracing::info!(sid = %sid, sockets = closed, "session expired");
                tracked.remove(sid);
                continue;
            }
            if let Some(t) = tracked.get_mut(sid) {
                t.expires_at = match (slid, n) {
                    (true, _) => now + Duration::from_secs(ttl),
                    // No TTL at all (set by hand): look again in a minute.
                    (false, -1) => now + Duration::from_secs(60),
                    (false, ms) => now + Duration::from_millis(ms.max(0) as u64),
                };
                if slid {
                    t.slid_at = now;
                    t.active = false;
                }
            }
        }
    }
}
