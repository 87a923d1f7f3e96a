//! The Redis key schema. No other module formats a key or channel name.
//!
//! Room keys carry the room as a hash tag (`{room}`) so that one room's keys
//! share a Redis Cluster slot and the append script stays single-slot. Shard
//! streams carry their shard number as the tag, so shards spread over masters.
//!
//! Redis Cluster hashes only what lies between a key's first `{` and the
//! first `}` after it, and the whole key when that is empty. Room names
//! (`^[A-Za-z0-9_.:-]{1,128}$`), the prefix (`CHAT_PREFIX`, `[A-Za-z0-9_-]`)
//! and consumer group names (`[A-Za-z0-9_-]`) hold no braces, so a room's
//! tag is always the room, even in keys that carry a user, client id or job
//! id after the tag (`room_dedup`, `room_push`, `summary_job`), and a dead
//! letter's tag is its group. User ids, session ids, device tokens and push
//! item ids may hold braces, so the keys tagged by one of them
//! (`user_devices`, `user_device_platforms`, `device_owner`, `push_sent`,
//! `session`) carry it percent-escaped by the private `tag` below: `%`, `{`
//! and `}` become `%25`, `%7B` and `%7D`. An id holding none of the three is
//! its own tag, so its keys are what they were before the escaping.

use std::borrow::Cow;

/// The hash-tag content for an arbitrary id: never empty, never a `{` or
/// `}`, and injective (distinct ids give distinct tags), so every key of one
/// id shares one slot and no id can borrow another's. `%`, `{` and `}` are
/// percent-escaped; the empty id (which no caller should pass) is a lone
/// `%`, which no escaped id can be. An id without `%`, `{` or `}` is returned
/// unchanged.
fn tag(id: &str) -> Cow<'_, str> {
    if id.is_empty() {
        return Cow::Borrowed("%");
    }
    if !id.contains(['%', '{', '}']) {
        return Cow::Borrowed(id);
    }
    let mut out = String::with_capacity(id.len() + 8);
    for c in id.chars() {
        match c {
            '%' => out.push_str("%25"),
            '{' => out.push_str("%7B"),
            '}' => out.push_str("%7D"),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// Builds every key and channel name from the configured prefix.
#[derive(Clone, Debug)]
pub struct Keys {
    prefix: String,
    shards: u32,
}

impl Keys {
    pub fn new(prefix: impl Into<String>, shards: u32) -> Self {
        Self {
            prefix: prefix.into(),
            shards: shards.max(1),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn shards(&self) -> u32 {
        self.shards
    }

    /// Hash: `epoch`, `offset` (last assigned), `agechk` (last age-trim check),
    /// `ttlchk` (last TTL refresh; append.lua refreshes at most every 1% of the TTL, 1 s at most),
    /// `rid` (run_id of the Redis process that wrote it last: see append.lua).
    pub fn room_meta(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:meta", self.prefix)
    }

    /// The room's stream. Entry ids are `<offset>-<ms>` so that reads by offset are direct.
    pub fn room_stream(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:log", self.prefix)
    }

    /// Hash of what later events did to the room's messages, by offset
    /// (docs/protocol.md, "Conversation events"): `t:<o>` the current text
    /// of an edited message, `e:<o>` when it was last edited (ms), `x:<o>`
    /// the ids of its edit entries, `r:<o>` its reactions (JSON), and
    /// `d:<o>` the tombstone of a deleted entry (JSON: what a reader shows
    /// in its place). Lives and dies with the room stream.
    pub fn room_state(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:state", self.prefix)
    }

    /// Sorted set (all scores 0) of `<parent>:<reply>` offsets, 20 digits
    /// each, so a thread is one lexicographic range.
    pub fn room_threads(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:threads", self.prefix)
    }

    /// Hash of room roles: user -> `owner` or `moderator` (members without
    /// an entry are plain members). Set through the members API.
    pub fn room_roles(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:roles", self.prefix)
    }

    /// Hash of sanctions: `m:<user>` (muted) and `b:<user>` (banned) -> the
    /// time they end (ms), 0 for never. No TTL: a ban outlives an idle room.
    pub fn room_sanctions(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:sanctions", self.prefix)
    }

    /// Hash of slow mode: user -> when they may post next (ms); expires
    /// with the interval after the last post.
    pub fn room_slow(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:slow", self.prefix)
    }

    /// One key per accepted `client_id`, living for the dedup window.
    /// The user's length is part of the key so `a:b`+`c` and `a`+`b:c` differ.
    pub fn room_dedup(&self, room: &str, user: &str, client_id: &str) -> String {
        format!(
            "{}:room:{{{room}}}:dedup:{}:{user}:{client_id}",
            self.prefix,
            user.len()
        )
    }

    /// Set of members (granted by the admin API or by joining).
    pub fn room_members(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:members", self.prefix)
    }

    /// Hash of read markers: user -> `epoch:offset`.
    pub fn room_reads(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:reads", self.prefix)
    }

    /// Sorted set of `node|user` scored by the time the entry lapses (ms).
    pub fn room_presence(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:presence", self.prefix)
    }

    /// Set of users who ever joined the room: push recipients with the members.
    pub fn room_joined(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:joined", self.prefix)
    }

    /// Present when every push recipient of the room was present, expiring
    /// when the first of their presence entries lapses (`SET .. PXAT`): the
    /// notify script skips the room's push work while it exists. Whatever may
    /// make a recipient absent sooner (a presence entry removed, a member or
    /// joined user added) deletes it after that change.
    pub fn room_all_present(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:allpresent", self.prefix)
    }

    /// Hash of a user's push collapse state in a room (`last`, `pend`, preview...).
    pub fn room_push(&self, room: &str, user: &str) -> String {
        format!("{}{user}", self.room_push_prefix(room))
    }

    /// `room_push` without the user: the notify script appends each recipient.
    pub fn room_push_prefix(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:push:", self.prefix)
    }

    /// List of the room's push-work writes not yet applied (Redis Cluster:
    /// the notify script cannot write the global keys from the room's slot).
    pub fn room_push_outbox(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:pushout", self.prefix)
    }

    /// Set of the rooms a user joined or was made a member of (until the
    /// membership is withdrawn): `GET /v1/unread` and push badges count
    /// over it. Rooms that no longer exist are dropped as they are found.
    pub fn user_rooms(&self, user: &str) -> String {
        format!("{}:user:{{{}}}:rooms", self.prefix, tag(user))
    }

    /// Sorted set of a user's device tokens scored by last-seen time (ms).
    /// Tagged by the escaped user, like `user_device_platforms`.
    pub fn user_devices(&self, user: &str) -> String {
        format!("{}:user:{{{}}}:devices", self.prefix, tag(user))
    }

    /// Hash of a user's device tokens to their platform.
    pub fn user_device_platforms(&self, user: &str) -> String {
        format!("{}:user:{{{}}}:platforms", self.prefix, tag(user))
    }

    /// The user a device token is registered to (a device can change hands).
    /// Tagged by the escaped token.
    pub fn device_owner(&self, token: &str) -> String {
        format!("{}:device:{{{}}}", self.prefix, tag(token))
    }

    /// The notify work stream (push work queued by fanout).
    pub fn notify_stream(&self) -> String {
        format!("{}:notify", self.prefix)
    }

    /// Sorted set of collapsed pushes due at the end of their window.
    pub fn notify_due(&self) -> String {
        format!("{}:notify:due", self.prefix)
    }

    /// Pushes a notifier without FCM credentials would have sent (dry run).
    pub fn notify_outbox(&self) -> String {
        format!("{}:notify:outbox", self.prefix)
    }

    /// Per work item: which device tokens were sent (idempotency across
    /// redeliveries). Tagged by the escaped item id (it holds a user id).
    pub fn push_sent(&self, item: &str) -> String {
        format!("{}:push:{{{}}}", self.prefix, tag(item))
    }

    /// The apalis queue of summary jobs; hash-tagged so its keys share a slot.
    pub fn summary_queue(&self) -> String {
        format!("{{{}-summaries}}", self.prefix)
    }

    /// Hash: one summary job's status, attempts, summary or error. Job ids
    /// carry their room (`<room>~<hex>`), so the record shares the room's slot.
    pub fn summary_job(&self, room: &str, id: &str) -> String {
        format!("{}:room:{{{room}}}:summary:job:{id}", self.prefix)
    }

    /// The id of the room's pending or running summary job (one at a time).
    pub fn room_summary_job(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:summary:current", self.prefix)
    }

    /// Hash counting the room's messages for the automatic summary trigger.
    pub fn room_summary_count(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:summary:count", self.prefix)
    }

    /// The room's latest summary (JSON), with a TTL.
    pub fn room_summary(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:summary", self.prefix)
    }

    /// When the room was deleted (ms): the archive skips entries of the room
    /// stored until then that it had not written yet.
    pub fn room_deleted(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:deleted", self.prefix)
    }

    /// Every key of a room that deleting it removes (dedup records and
    /// per-user push state expire on their own).
    pub fn room_keys(&self, room: &str) -> Vec<String> {
        vec![
            self.room_meta(room),
            self.room_stream(room),
            self.room_state(room),
            self.room_threads(room),
            self.room_roles(room),
            self.room_sanctions(room),
            self.room_slow(room),
            self.room_members(room),
            self.room_reads(room),
            self.room_presence(room),
            self.room_joined(room),
            self.room_all_present(room),
            self.room_push_outbox(room),
            self.room_summary_job(room),
            self.room_summary_count(room),
            self.room_summary(room),
        ]
    }

    /// Entries re-driven to one webhook endpoint (`chatctl dlq replay` of the
    /// webhook group's dead letters): read by the webhook group only, so
    /// a replay does not pass through fanout and the archive again.
    pub fn webhook_redrive(&self) -> String {
        format!("{}:webhooks:redrive", self.prefix)
    }

    /// Pub/sub channel carrying the room's live messages and ephemeral events.
    pub fn room_channel(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:live", self.prefix)
    }

    /// The room name back from a channel name, if it is one of ours.
    pub fn room_of_channel<'a>(&self, channel: &'a str) -> Option<&'a str> {
        channel
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(":room:{")?
            .strip_suffix("}:live")
    }

    /// Stable shard of a room (FNV-1a, identical in every process).
    pub fn shard_of(&self, room: &str) -> u32 {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in room.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        (h % u64::from(self.shards)) as u32
    }

    pub fn shard_stream(&self, shard: u32) -> String {
        format!("{}:fanout:{{{shard}}}", self.prefix)
    }

    pub fn all_shard_streams(&self) -> Vec<String> {
        (0..self.shards).map(|s| self.shard_stream(s)).collect()
    }

    pub fn room_shard_stream(&self, room: &str) -> String {
        self.shard_stream(self.shard_of(room))
    }

    /// Dead-letter stream of a consumer group.
    pub fn dead_letter(&self, group: &str) -> String {
        format!("{}:dlq:{{{group}}}", self.prefix)
    }

    /// Held while `chatctl dlq replay` re-drives one dead letter in Redis
    /// Cluster, where the dead-letter stream and the source stream live in
    /// different slots (no single script can move the entry).
    pub fn dead_letter_lease(&self, group: &str, id: &str) -> String {
        format!("{}:dlq:{{{group}}}:lease:{id}", self.prefix)
    }

    /// String `user\nttl_secs` with the session's TTL. Tagged by the escaped
    /// session id (1-128 printable ASCII, so it may hold braces).
    pub fn session(&self, sid: &str) -> String {
        format!("{}:session:{{{}}}", self.prefix, tag(sid))
    }

    /// A deleted session's tombstone: its tokens stay refused while it
    /// lives. Shares the session's slot, so one MGET reads both.
    pub fn session_revoked(&self, sid: &str) -> String {
        format!("{}:session:{{{}}}:revoked", self.prefix, tag(sid))
    }

    /// Node-wide control channel: session revocations, membership withdrawals.
    pub fn control_channel(&self) -> String {
        format!("{}:ctl", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_keys_share_a_hash_tag() {
        let k = Keys::new("chat", 8);
        for key in [
            k.room_meta("r1"),
            k.room_stream("r1"),
            k.room_dedup("r1", "u", "c"),
            k.room_state("r1"),
            k.room_threads("r1"),
            k.room_roles("r1"),
            k.room_sanctions("r1"),
            k.room_slow("r1"),
            k.room_members("r1"),
            k.room_reads("r1"),
            k.room_presence("r1"),
        ] {
            assert!(key.contains("{r1}"), "{key}");
        }
    }

    #[test]
    fn channel_round_trips_to_room() {
        let k = Keys::new("p", 4);
        assert_eq!(k.room_of_channel(&k.room_channel("a:b.c")), Some("a:b.c"));
        assert_eq!(k.room_of_channel("p:ctl"), None);
        assert_eq!(k.room_of_channel("other:room:{x}:live"), None);
    }

    #[test]
    fn shards_are_stable_and_in_range() {
        let k = Keys::new("chat", 8);
        assert_eq!(k.shard_of("general"), k.shard_of("general"));
        let mut seen = std::collections::HashSet::new();
        for i in 0..200 {
            let s = k.shard_of(&format!("room-{i}"));
            assert!(s < 8);
            seen.insert(s);
        }
        assert_eq!(seen.len(), 8, "rooms should spread over every shard");
    }

    #[test]
    fn a_dead_letter_lease_shares_its_streams_slot() {
        let k = Keys::new("chat", 1);
        assert_eq!(k.dead_letter("fanout"), "chat:dlq:{fanout}");
        assert!(
            k.dead_letter_lease("fanout", "1-2")
                .starts_with("chat:dlq:{fanout}:")
        );
    }

    /// Redis Cluster's rule: the part between the first `{` and the first
    /// `}` after it when that is not empty, else the whole key.
    fn redis_hash_tag(key: &str) -> &str {
        if let Some(open) = key.find('{')
            && let Some(len) = key[open + 1..].find('}')
            && len > 0
        {
            return &key[open + 1..open + 1 + len];
        }
        key
    }

    const HOSTILE: [&str; 14] = [
        "a}b", "}", "{}", "{x}", "%7B", "a%b", "{", "%", "%25", "%7D", "}{", "a{b}c", "é{ü}", "",
    ];

    /// Every key tagged by an id.
    fn id_keys(k: &Keys, id: &str) -> [String; 5] {
        [
            k.user_devices(id),
            k.user_device_platforms(id),
            k.device_owner(id),
            k.push_sent(id),
            k.session(id),
        ]
    }

    #[test]
    fn an_ids_keys_share_one_non_empty_brace_free_tag() {
        let k = Keys::new("chat", 8);
        for id in HOSTILE.iter().chain(&["alice", "s-1", "x:y"]) {
            let keys = id_keys(&k, id);
            let t = redis_hash_tag(&keys[0]);
            assert!(!t.is_empty() && !t.contains(['{', '}']), "{id:?}: {t:?}");
            assert_ne!(t, keys[0], "{id:?}: the whole key is hashed");
            assert_eq!(t, tag(id), "{id:?}");
            for key in &keys {
                assert_eq!(redis_hash_tag(key), t, "{id:?}: {key}");
            }
        }
    }

    #[test]
    fn distinct_ids_get_distinct_tags_and_keys() {
        let k = Keys::new("chat", 8);
        let ids: Vec<String> = HOSTILE
            .iter()
            .map(|s| s.to_string())
            .chain(["alice", "%7b", "a%25b", "%257B"].map(String::from))
            .collect();
        let mut tags = std::collections::HashMap::new();
        for id in &ids {
            let t = redis_hash_tag(&k.user_devices(id)).to_owned();
            if let Some(other) = tags.insert(t.clone(), id) {
                panic!("{id:?} and {other:?} share the tag {t:?}");
            }
        }
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                let (ka, kb) = (id_keys(&k, a), id_keys(&k, b));
                for (x, y) in ka.iter().zip(&kb) {
                    assert_ne!(x, y, "{a:?} and {b:?}");
                }
            }
        }
    }

    #[test]
    fn ordinary_ids_keep_their_keys() {
        let k = Keys::new("chat", 8);
        assert_eq!(k.user_devices("alice"), "chat:user:{alice}:devices");
        assert_eq!(k.user_device_platforms("bob"), "chat:user:{bob}:platforms");
        assert_eq!(k.device_owner("tok:1_x"), "chat:device:{tok:1_x}");
        assert_eq!(k.push_sent("e1|3|5:alicer"), "chat:push:{e1|3|5:alicer}");
        assert_eq!(k.session("s-1"), "chat:session:{s-1}");
        assert_eq!(k.user_devices("é ü"), "chat:user:{é ü}:devices");
        assert_eq!(k.session("a}b"), "chat:session:{a%7Db}");
        assert_eq!(k.session("%"), "chat:session:{%25}");
    }

    #[test]
    fn a_user_after_the_room_tag_keeps_the_rooms_slot() {
        let k = Keys::new("chat", 8);
        for user in HOSTILE {
            for key in [
                k.room_dedup("team:eng", user, "c}1"),
                k.room_dedup("team:eng", "u", user),
                k.room_push("team:eng", user),
                k.summary_job("team:eng", user),
            ] {
                assert_eq!(redis_hash_tag(&key), "team:eng", "{user:?}: {key}");
            }
        }
    }

    #[test]
    fn dedup_keys_do_not_collide_across_user_boundaries() {
        let k = Keys::new("chat", 1);
        assert_ne!(k.room_dedup("r", "a:b", "c"), k.room_dedup("r", "a", "b:c"));
    }
}
