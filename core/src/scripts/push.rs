//! Typed calls of the push scripts, notify.lua and due.lua: their KEYS and
//! ARGV layouts are written here and nowhere else, and so is the due set's
//! member format (written by notify.lua, read back by the notifier).

use super::Scripts;
use crate::config::NotifyPolicy;
use crate::keys::Keys;
use crate::protocol::Message;
use redis::ScriptInvocation;

/// What notify.lua takes besides the rooms.
#[derive(Clone, Copy, Debug)]
pub struct NotifyArgs<'a> {
    pub policy: &'a NotifyPolicy,
    /// A push's preview is cut to this many bytes.
    pub preview_bytes: u64,
    /// Summarize a room every this many messages (0: off).
    pub summarize_every: u64,
}

impl Scripts {
    /// notify.lua over every room of a batch, on a standalone Redis: one
    /// call, whose reply has each room's summary flag.
    pub fn notify_batch<'s>(
        &'s self,
        keys: &Keys,
        args: &NotifyArgs<'_>,
        rooms: &[(&str, Vec<&Message>)],
    ) -> ScriptInvocation<'s> {
        let mut inv = self.notify.prepare_invoke();
        inv.key(keys.notify_stream()).key(keys.notify_due());
        notify_header(&mut inv, args);
        for (room, messages) in rooms {
            notify_room_args(&mut inv, keys, room, messages);
        }
        inv
    }

    /// notify.lua for one room in Redis Cluster: keyed by the room's
    /// outbox, which receives the writes meant for other slots.
    pub fn notify_room<'s>(
        &'s self,
        keys: &Keys,
        args: &NotifyArgs<'_>,
        room: &str,
        messages: &[&Message],
    ) -> ScriptInvocation<'s> {
        let mut inv = self.notify.prepare_invoke();
        inv.key(keys.room_push_outbox(room));
        notify_header(&mut inv, args);
        notify_room_args(&mut inv, keys, room, messages);
        inv
    }

    /// due.lua on a standalone Redis: sends up to `round` collapsed pushes
    /// whose window ended; replies how many were due.
    pub fn due_batch<'s>(
        &'s self,
        keys: &Keys,
        round: u64,
        notify_maxlen: u64,
    ) -> ScriptInvocation<'s> {
        let mut inv = self.due.prepare_invoke();
        inv.key(keys.notify_due())
            .key(keys.notify_stream())
            .arg(round)
            .arg(notify_maxlen);
        inv
    }

    /// due.lua for one due member in its room's slot (Redis Cluster): the
    /// push goes to the room's outbox.
    pub fn due_one<'s>(
        &'s self,
        keys: &Keys,
        member: &DueMember<'_>,
        policy: &NotifyPolicy,
    ) -> ScriptInvocation<'s> {
        let mut inv = self.due.prepare_invoke();
        inv.key(member.state)
            .key(member.presence)
            .key(keys.room_push_outbox(member.room))
            .arg("one")
            .arg(member.user)
            .arg(member.room)
            .arg(crate::clock::millis(policy.collapse_ttl()));
        inv
    }
}

fn notify_header(inv: &mut ScriptInvocation<'_>, args: &NotifyArgs<'_>) {
    inv.arg(crate::clock::millis(args.policy.collapse_window))
        .arg(args.policy.maxlen)
        .arg(args.preview_bytes)
        .arg(crate::clock::millis(args.policy.collapse_ttl()))
        .arg(args.summarize_every);
}

fn notify_room_args(
    inv: &mut ScriptInvocation<'_>,
    keys: &Keys,
    room: &str,
    messages: &[&Message],
) {
    inv.arg(room)
        .arg(keys.room_members(room))
        .arg(keys.room_joined(room))
        .arg(keys.room_presence(room))
        .arg(keys.room_all_present(room))
        .arg(keys.room_summary_count(room))
        .arg(keys.room_push_prefix(room))
        .arg(messages.len());
    for m in messages {
        inv.arg(&m.user)
            .arg(m.offset)
            .arg(&m.epoch)
            .arg(&m.text)
            .arg(m.kind.as_str());
    }
}

/// A member of the due set: `state key \n presence key \n room \n user`
/// (user ids and room names never hold control characters).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DueMember<'a> {
    pub state: &'a str,
    pub presence: &'a str,
    pub room: &'a str,
    pub user: &'a str,
}

impl<'a> DueMember<'a> {
    pub fn decode(s: &'a str) -> Option<Self> {
        let mut it = s.split('\n');
        let m = Self {
            state: it.next()?,
            presence: it.next()?,
            room: it.next()?,
            user: it.next()?,
        };
        it.next().is_none().then_some(m)
    }

    /// As notify.lua writes it (tests use this to check the two agree).
    pub fn encode(&self) -> String {
        [self.state, self.presence, self.room, self.user].join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_due_member_round_trips_and_a_bad_one_is_refused() {
        let m = DueMember {
            state: "chat:{r}:push:u",
            presence: "chat:{r}:presence",
            room: "r",
            user: "u",
        };
        assert_eq!(DueMember::decode(&m.encode()), Some(m));
        assert_eq!(DueMember::decode("a\nb\nc"), None);
        assert_eq!(DueMember::decode("a\nb\nc\nd\ne"), None);
    }
}
