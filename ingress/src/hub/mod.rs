//! Live delivery on one ingress node. One actor per room with local sockets
//! (a *hub*) receives the room's pub/sub messages and writes them to its
//! sockets in offset order: an offset at or below the hub's last is dropped,
//! a jump ahead is healed by reading the missing range from the room stream.
//! Joins go through the same actor, so a joining socket's `joined`, its
//! recovered messages and its first live message cannot interleave wrongly.
//!
//! Ownership: the registry (`Rooms`) counts sockets per room under a std
//! mutex never held across an await; the count reaching zero removes the
//! entry and tells the hub to unsubscribe and stop. Subscriptions are
//! reference-counted by one task so a dying hub's UNSUBSCRIBE cannot undo the
//! SUBSCRIBE of its successor.

mod room;

use crate::outbound::SocketHandle;
use bytes::Bytes;
use chat_core::config::StreamsConfig;
use chat_core::keys::Keys;
use chat_core::protocol::{ErrorCode, Since};
use chat_core::redis_conn::Conn;
use chat_core::scripts::Scripts;
use serde_json::Value;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use tokio::sync::{mpsc, oneshot};

/// Live messages a hub may have queued before further ones are dropped (and
/// later healed from the room stream).
const LIVE_QUEUE: usize = 4096;

pub(crate) enum Ctl {
    Join {
        socket: SocketHandle,
        /// Cleared by the socket's reader the moment it leaves the room, so
        /// this hub stops writing to it even before it sees the `Leave`.
        joined: Arc<AtomicBool>,
        since: Option<Since>,
        reference: Option<Value>,
        reply: oneshot::Sender<Result<String, ErrorCode>>,
    },
    Leave {
        socket_id: u64,
    },
    Resync,
    /// The room was deleted: deliver up to `upto` (the system message
    /// saying so), then remove every socket with `left`.
    Delete {
        upto: u64,
        epoch: String,
    },
    /// A user was banned: their sockets leave the room with `left`, after
    /// the ban's notice (`upto` in `epoch`) is delivered.
    Evict {
        user: String,
        upto: u64,
        epoch: String,
    },
    Shutdown,
}

struct Entry {
    ctl: mpsc::UnboundedSender<Ctl>,
    live: mpsc::Sender<Bytes>,
    sockets: usize,
    resync: Arc<AtomicBool>,
}

/// The node's room registry; shared with the pub/sub push callback.
#[derive(Default)]
pub struct Rooms {
    map: Mutex<HashMap<Arc<str>, Entry>>,
}

impl Rooms {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Arc<str>, Entry>> {
        // A poisoned lock only means a panic elsewhere; the map stays usable.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Routes one pub/sub message to its room's hub, without blocking.
    pub fn dispatch(&self, room: &str, payload: Bytes) {
        let map = self.lock();
        if let Some(e) = map.get(room)
            && e.live.try_send(payload).is_err()
        {
            // Dropped here, healed by the hub from the room stream.
            request_resync(e);
        }
    }

    /// Whether this node has a hub for the room (a socket in it).
    pub fn contains(&self, room: &str) -> bool {
        self.lock().contains_key(room)
    }

    /// A message appended on this node, for its own sockets (see
    /// `append::deliver_here`). A full queue drops it: the fanout's copy
    /// follows, so nothing is healed on its account.
    pub fn dispatch_local(&self, room: &str, payload: Bytes) {
        if let Some(e) = self.lock().get(room) {
            let _ = e.live.try_send(payload);
        }
    }

    /// After the pub/sub connection dropped: every hub re-reads its tail.
    /// Re-reads one room from Redis (after its subscription was restored).
    pub fn resync(&self, room: &str) {
        if let Some(e) = self.lock().get(room) {
            request_resync(e);
        }
    }

    /// The room was deleted; see [`Ctl::Delete`].
    pub fn delete(&self, room: &str, upto: u64, epoch: &str) {
        if let Some(e) = self.lock().get(room) {
            let _ = e.ctl.send(Ctl::Delete {
                upto,
                epoch: epoch.to_owned(),
            });
        }
    }

    pub fn evict(&self, room: &str, user: &str, upto: u64, epoch: &str) {
        if let Some(e) = self.lock().get(room) {
            let _ = e.ctl.send(Ctl::Evict {
                user: user.to_owned(),
                upto,
                epoch: epoch.to_owned(),
            });
        }
    }

    pub fn resync_all(&self) {
        for e in self.lock().values() {
            request_resync(e);
        }
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn request_resync(e: &Entry) {
    if !e.resync.swap(true, Ordering::AcqRel) {
        let _ = e.ctl.send(Ctl::Resync);
    }
}

pub enum SubOp {
    Subscribe(String, oneshot::Sender<redis::RedisResult<()>>),
    Unsubscribe(String),
    /// Redis dropped the subscription itself (a Redis Cluster slot moved to
    /// another node): subscribe again if still wanted, then resync the room.
    Restore(String),
}

/// Serializes SUBSCRIBE/UNSUBSCRIBE on the node's pub/sub connection with a
/// count per channel.
pub(crate) async fn run_subscriptions(
    mut conn: Conn,
    mut ops: mpsc::UnboundedReceiver<SubOp>,
    rooms: Arc<Rooms>,
    keys: Keys,
    retry: mpsc::UnboundedSender<SubOp>,
) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    while let Some(op) = ops.recv().await {
        match op {
            SubOp::Subscribe(channel, reply) => {
                let n = counts.get(&channel).copied().unwrap_or(0);
                if n > 0 {
                    counts.insert(channel, n + 1);
                    let _ = reply.send(Ok(()));
                    continue;
                }
                match conn.subscribe_room(&channel).await {
                    Ok(()) => {
                        counts.insert(channel, 1);
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        let _ = reply.send(Err(e));
                    }
                }
            }
            SubOp::Restore(channel) => {
                if counts.contains_key(&channel) {
                    tracing::info!(channel, "subscription dropped by Redis; restoring");
                    match conn.subscribe_room(&channel).await {
                        Ok(()) => {
                            if let Some(room) = keys.room_of_channel(&channel) {
                                rooms.resync(room);
                            }
                        }
                        Err(e) => {
                            // redis-rs forgot the channel with the server's
                            // unsubscribe: keep trying until it is back.
                            tracing::warn!(channel, error = %e, "restoring a subscription failed; retrying");
                            let again = retry.clone();
                            tokio::spawn(async move {
                                tokio::time::sleep(std::time::Duration::from_millis(500)).await;
                                let _ = again.send(SubOp::Restore(channel));
                            });
                        }
                    }
                }
            }
            SubOp::Unsubscribe(channel) => {
                if let Some(n) = counts.get_mut(&channel) {
                    *n -= 1;
                    if *n == 0 {
                        counts.remove(&channel);
                        if let Err(e) = conn.unsubscribe_room(&channel).await {
                            tracing::warn!(channel, error = %e, "unsubscribe failed");
                        }
                    }
                }
            }
        }
    }
}

/// What every hub needs.
pub(crate) struct HubContext {
    pub redis: Conn,
    pub scripts: Arc<Scripts>,
    pub keys: Keys,
    pub streams: Arc<StreamsConfig>,
    pub max_recover: u64,
    pub subs: mpsc::UnboundedSender<SubOp>,
    pub backpressure: Arc<crate::overload::Backpressure>,
}

#[derive(Clone)]
pub struct Hubs {
    rooms: Arc<Rooms>,
    ctx: Arc<HubContext>,
    next_id: Arc<AtomicU64>,
}

impl Hubs {
    pub(crate) fn new(rooms: Arc<Rooms>, ctx: HubContext) -> Self {
        Self {
            rooms,
            ctx: Arc::new(ctx),
            next_id: Arc::new(AtomicU64::new(1)),
        }
    }

    pub fn rooms(&self) -> &Rooms {
        &self.rooms
    }

    /// Joins (or, with `rejoin`, re-joins) a socket to a room. The hub sends
    /// `joined` and any recovered messages to the socket itself. Returns the epoch.
    pub async fn join(
        &self,
        room: &str,
        socket: &SocketHandle,
        joined: Arc<AtomicBool>,
        since: Option<Since>,
        reference: Option<Value>,
        rejoin: bool,
    ) -> Result<String, ErrorCode> {
        let (reply, answer) = oneshot::channel();
        {
            let mut map = self.rooms.lock();
            let entry = match map.get_mut(room) {
                Some(e) => e,
                None => {
                    let e = self.spawn_hub(room);
                    map.entry(Arc::from(room)).or_insert(e)
                }
            };
            if !rejoin {
                entry.sockets += 1;
            }
            let _ = entry.ctl.send(Ctl::Join {
                socket: socket.clone(),
                joined,
                since,
                reference,
                reply,
            });
        }
        let result = answer.await.unwrap_or(Err(ErrorCode::Internal));
        if result.is_err() && !rejoin {
            self.leave(room, socket.id);
        }
        result
    }

    /// Removes a socket from a room; the last one out stops the hub. The
    /// caller has already cleared the socket's `joined` flag for the room.
    pub fn leave(&self, room: &str, socket_id: u64) {
        let mut map = self.rooms.lock();
        let Some(entry) = map.get_mut(room) else {
            return;
        };
        entry.sockets = entry.sockets.saturating_sub(1);
        let _ = entry.ctl.send(Ctl::Leave { socket_id });
        if entry.sockets == 0 {
            let _ = entry.ctl.send(Ctl::Shutdown);
            map.remove(room);
        }
    }

    fn spawn_hub(&self, room: &str) -> Entry {
        let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
        let (live_tx, live_rx) = mpsc::channel(LIVE_QUEUE);
        let resync = Arc::new(AtomicBool::new(false));
        let hub = room::RoomHub::new(
            Arc::from(room),
            self.next_id.fetch_add(1, Ordering::Relaxed),
            self.ctx.clone(),
            resync.clone(),
        );
        tokio::spawn(hub.run(ctl_rx, live_rx));
        Entry {
            ctl: ctl_tx,
            live: live_tx,
            sockets: 0,
            resync,
        }
    }
}
