//! The deleted-room marker (`Keys::room_deleted`): written by the ingress
//! when a room is deleted, read by the archive worker to skip what it still
//! has pending of the room. `<ms> <epoch>`.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomTombstone<'a> {
    /// The deletion notice's time, ms: messages stored up to it are gone.
    pub at_ms: u64,
    /// The epoch deleted: its messages are gone whenever stored.
    pub epoch: &'a str,
}

impl<'a> RoomTombstone<'a> {
    pub fn encode(&self) -> String {
        format!("{} {}", self.at_ms, self.epoch)
    }

    pub fn decode(v: &'a str) -> Option<Self> {
        let (at, epoch) = v.split_once(' ')?;
        Some(Self {
            at_ms: at.parse().ok()?,
            epoch,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_junk_is_none() {
        let t = RoomTombstone {
            at_ms: 1_700_000_000_000,
            epoch: "E1",
        };
        assert_eq!(t.encode(), "1700000000000 E1");
        assert_eq!(RoomTombstone::decode(&t.encode()), Some(t));
        for junk in ["", "E1", "soon E1"] {
            assert_eq!(RoomTombstone::decode(junk), None, "{junk:?}");
        }
    }
}
