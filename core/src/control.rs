//! The control channel (`Keys::control_channel`), which every ingress node
//! subscribes to: what one node (or `chatctl`) tells all of them. One
//! message per publish, `s<sid>`, `k<room>\n<user>`, `b<room>\n<user>\n<offset>\n<epoch>` or
//! `x<room>\n<offset>\n<epoch>`; room names and user ids hold no newline
//! (`pattern::valid_room`, the `sub` check).

use std::borrow::Cow;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Control<'a> {
    /// A session was deleted: its sockets close (4003).
    SessionRevoked { sid: Cow<'a, str> },
    /// A user's membership of a room was withdrawn: their sockets leave it.
    Withdrawn {
        room: Cow<'a, str>,
        user: Cow<'a, str>,
    },
    /// A user was banned from a room: their sockets leave it (`left`),
    /// after the ban's notice (`offset` in `epoch`).
    Banned {
        room: Cow<'a, str>,
        user: Cow<'a, str>,
        offset: u64,
        epoch: Cow<'a, str>,
    },
    /// A room was deleted; `offset` in `epoch` is the system message saying so.
    RoomDeleted {
        room: Cow<'a, str>,
        offset: u64,
        epoch: Cow<'a, str>,
    },
}

impl<'a> Control<'a> {
    pub fn encode(&self) -> String {
        match self {
            Control::SessionRevoked { sid } => format!("s{sid}"),
            Control::Withdrawn { room, user } => format!("k{room}\n{user}"),
            Control::Banned {
                room,
                user,
                offset,
                epoch,
            } => format!("b{room}\n{user}\n{offset}\n{epoch}"),
            Control::RoomDeleted {
                room,
                offset,
                epoch,
            } => format!("x{room}\n{offset}\n{epoch}"),
        }
    }

    /// `None` for anything that is not one of ours (a newer node's kind,
    /// junk): the channel is shared with whatever else publishes on it.
    pub fn decode(payload: &'a [u8]) -> Option<Self> {
        let text = std::str::from_utf8(payload).ok()?;
        let (kind, rest) = text.split_at_checked(1)?;
        match kind {
            "s" => Some(Control::SessionRevoked { sid: rest.into() }),
            "k" => {
                let (room, user) = rest.split_once('\n')?;
                Some(Control::Withdrawn {
                    room: room.into(),
                    user: user.into(),
                })
            }
            "b" => {
                let (room, rest) = rest.split_once('\n')?;
                let (user, rest) = rest.split_once('\n')?;
                let (offset, epoch) = rest.split_once('\n')?;
                Some(Control::Banned {
                    room: room.into(),
                    user: user.into(),
                    offset: offset.parse().ok()?,
                    epoch: epoch.into(),
                })
            }
            "x" => {
                let (room, rest) = rest.split_once('\n')?;
                let (offset, epoch) = rest.split_once('\n')?;
                Some(Control::RoomDeleted {
                    room: room.into(),
                    offset: offset.parse().ok()?,
                    epoch: epoch.into(),
                })
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_round_trips() {
        for c in [
            Control::SessionRevoked { sid: "s-1".into() },
            Control::Withdrawn {
                room: "team.eng".into(),
                user: "alice".into(),
            },
            Control::RoomDeleted {
                room: "r".into(),
                offset: 42,
                epoch: "E1".into(),
            },
            Control::Banned {
                room: "team.eng".into(),
                user: "mallory 😈".into(),
                offset: 9,
                epoch: "E2".into(),
            },
        ] {
            let wire = c.encode();
            assert_eq!(Control::decode(wire.as_bytes()), Some(c), "{wire:?}");
        }
        assert_eq!(
            Control::RoomDeleted {
                room: "r".into(),
                offset: 7,
                epoch: "E".into()
            }
            .encode(),
            "xr\n7\nE"
        );
    }

    #[test]
    fn junk_is_none() {
        for junk in [
            &b""[..],
            b"k",
            b"kroom-without-user",
            b"xr\nseven\nE",
            b"xr\n7",
            b"q?",
            b"\xff",
        ] {
            assert_eq!(Control::decode(junk), None, "{junk:?}");
        }
    }
}
