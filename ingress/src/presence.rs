//! Who is connected to a room, across nodes: a sorted set per room of
//! `node|user` scored by when the entry lapses, refreshed by each node, so a
//! crashed node's users drop out on their own. `presence` events go to the
//! room when a user's first socket on this node joins and its last leaves.

use chat_core::keys::Keys;
use chat_core::protocol::ServerFrame;
use chat_core::redis_conn::Conn;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Entries lapse this long after the last refresh.
const LAPSE: Duration = Duration::from_secs(30);
pub const REFRESH: Duration = Duration::from_secs(10);

type RoomUser = (Arc<str>, Arc<str>);

pub struct Presence {
    node: String,
    keys: Keys,
    redis: Conn,
    /// Local sockets per (room, user).
    local: Mutex<HashMap<RoomUser, usize>>,
}

use chat_core::clock::now_ms;

impl Presence {
    pub fn new(node: String, keys: Keys, redis: Conn) -> Self {
        Self {
            node,
            keys,
            redis,
            local: Mutex::new(HashMap::new()),
        }
    }

    fn member(&self, user: &str) -> String {
        format!("{}|{user}", self.node)
    }

    fn bump(&self, room: &str, user: &str, delta: isize) -> bool {
        let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
        let key = (Arc::from(room), Arc::from(user));
        let n = local.get(&key).copied().unwrap_or(0);
        let next = n.saturating_add_signed(delta);
        if next == 0 {
            local.remove(&key);
        } else {
            local.insert(key, next);
        }
        (n == 0 && next == 1) || (n == 1 && next == 0)
    }

    /// A socket of `user` joined `room`: presence, the `join` event, and the
    /// room's set of joined users (push recipients), on the user's first socket here.
    pub async fn joined(&self, room: &str, user: &str, room_ttl: std::time::Duration) {
        if !self.bump(room, user, 1) {
            return;
        }
        let key = self.keys.room_presence(room);
        let joined = self.keys.room_joined(room);
        let mut pipe = redis::pipe();
        pipe.sadd(&joined, user)
            .ignore()
            .expire(&joined, room_ttl.as_secs().max(1) as i64)
            .ignore()
            .sadd(self.keys.user_rooms(user), room)
            .ignore()
            .zadd(
                &key,
                self.member(user),
                now_ms() + chat_core::clock::millis(LAPSE),
            )
            .ignore()
            .expire(&key, (LAPSE.as_secs() * 2) as i64)
            .ignore()
            // A new recipient: the room's all-present marker is recomputed.
            .del(self.keys.room_all_present(room))
            .ignore();
        self.record(pipe, room, user, "join").await;
    }

    /// A socket of `user` left `room` (or disconnected).
    pub async fn left(&self, room: &str, user: &str) {
        if !self.bump(room, user, -1) {
            return;
        }
        let mut pipe = redis::pipe();
        // The marker goes after the entry: a notify call between the two
        // counts this user as present, as if it ran before the leave.
        pipe.zrem(self.keys.room_presence(room), self.member(user))
            .ignore()
            .del(self.keys.room_all_present(room))
            .ignore();
        self.record(pipe, room, user, "leave").await;
    }

    /// Runs the presence change in `pipe` with the room's presence event.
    async fn record(&self, mut pipe: redis::Pipeline, room: &str, user: &str, state: &str) {
        let frame = ServerFrame::Presence { room, user, state };
        let mut conn = self.redis.clone();
        conn.publish_room(
            &mut pipe,
            &self.keys.room_channel(room),
            chat_core::live::event(user, &frame),
        );
        let r: redis::RedisResult<()> = pipe.query_async(&mut conn).await;
        if let Err(e) = r {
            tracing::warn!(room, user, state, error = %e, "presence change not recorded");
        }
    }

    /// Users present in a room on any node.
    pub async fn users(&self, room: &str) -> redis::RedisResult<Vec<String>> {
        let mut conn = self.redis.clone();
        let members: Vec<String> = redis::cmd("ZRANGEBYSCORE")
            .arg(self.keys.room_presence(room))
            .arg(now_ms())
            .arg("+inf")
            .query_async(&mut conn)
            .await?;
        let mut users: Vec<String> = members
            .into_iter()
            .filter_map(|m| m.split_once('|').map(|(_, u)| u.to_owned()))
            .collect();
        users.sort();
        users.dedup();
        Ok(users)
    }

    /// Re-stamps this node's entries so they do not lapse.
    pub async fn refresh(&self) {
        let entries: Vec<RoomUser> = {
            let local = self.local.lock().unwrap_or_else(|p| p.into_inner());
            local.keys().cloned().collect()
        };
        if entries.is_empty() {
            return;
        }
        let until = now_ms() + chat_core::clock::millis(LAPSE);
        let mut pipe = redis::pipe();
        for (room, user) in &entries {
            let key = self.keys.room_presence(room);
            pipe.zadd(&key, self.member(user), until)
                .ignore()
                .expire(&key, (LAPSE.as_secs() * 2) as i64)
                .ignore();
        }
        let mut conn = self.redis.clone();
        if let Err(e) = pipe.query_async::<()>(&mut conn).await {
            tracing::warn!(error = %e, "presence refresh failed");
        }
    }

    /// Drops this node's entries (drain).
    pub async fn clear(&self) {
        let entries: Vec<RoomUser> = {
            let mut local = self.local.lock().unwrap_or_else(|p| p.into_inner());
            local.drain().map(|(k, _)| k).collect()
        };
        let mut pipe = redis::pipe();
        for (room, user) in &entries {
            pipe.zrem(self.keys.room_presence(room), self.member(user))
                .ignore()
                .del(self.keys.room_all_present(room))
                .ignore();
        }
        let mut conn = self.redis.clone();
        let _ = pipe.query_async::<()>(&mut conn).await;
    }
}
