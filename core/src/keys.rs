//! The Redis key schema. No other module formats a key or channel name.
//!
//! Room keys carry the room as a hash tag (`{room}`) so that one room's keys
//! share a Redis Cluster slot and the append script stays single-slot. Shard
//! streams carry their shard number as the tag, so shards spread over masters.

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

    /// Hash: `epoch`, `offset` (last assigned), `agechk` (last age-trim check).
    pub fn room_meta(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:meta", self.prefix)
    }

    /// The room's stream. Entry ids are `<offset>-<ms>` so that reads by offset are direct.
    pub fn room_stream(&self, room: &str) -> String {
        format!("{}:room:{{{room}}}:log", self.prefix)
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

    /// Sorted set of a user's device tokens scored by last-seen time (ms).
    pub fn user_devices(&self, user: &str) -> String {
        format!("{}:user:{{{user}}}:devices", self.prefix)
    }

    /// Hash of a user's device tokens to their platform.
    pub fn user_device_platforms(&self, user: &str) -> String {
        format!("{}:user:{{{user}}}:platforms", self.prefix)
    }

    /// The user a device token is registered to (a device can change hands).
    pub fn device_owner(&self, token: &str) -> String {
        format!("{}:device:{{{token}}}", self.prefix)
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

    /// Per work item: which device tokens were sent (idempotency across redeliveries).
    pub fn push_sent(&self, item: &str) -> String {
        format!("{}:push:{{{item}}}", self.prefix)
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
            self.room_members(room),
            self.room_reads(room),
            self.room_presence(room),
            self.room_joined(room),
            self.room_push_outbox(room),
            self.room_summary_job(room),
            self.room_summary_count(room),
            self.room_summary(room),
        ]
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

    /// String `user\nttl_secs` with the session's TTL.
    pub fn session(&self, sid: &str) -> String {
        format!("{}:session:{{{sid}}}", self.prefix)
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

    #[test]
    fn dedup_keys_do_not_collide_across_user_boundaries() {
        let k = Keys::new("chat", 1);
        assert_ne!(k.room_dedup("r", "a:b", "c"), k.room_dedup("r", "a", "b:c"));
    }
}
