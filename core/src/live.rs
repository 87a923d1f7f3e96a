//! The live payload of a stored message, the one format between the fanout
//! worker (which publishes it on the room's channel) and ingress nodes
//! (whose room hubs read it; a node also hands its own appends to its hub in
//! it). `m<offset> <epoch> <ts> <read µs> <publish µs>\n<message frame>`
//! from the fanout, `l<offset> <epoch> <ts>\n<message frame>` for a node's
//! own append; `e<user>\n<frame>` for an ephemeral event (typing,
//! presence) that goes to everyone in the room but its user. The frame is
//! serialized once and forwarded as it is.

use crate::protocol::{Message, ServerFrame};

/// Where a payload comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The fanout's publish: the delivery guarantee.
    Fanout,
    /// The node's own append, delivered ahead of the fanout's copy.
    Local,
}

/// A stored message's header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header<'a> {
    pub source: Source,
    pub offset: u64,
    pub epoch: &'a str,
    /// Append time, ms (0 when absent).
    pub ts: u64,
    /// When the fanout worker read the entry and sent the publish, µs since
    /// the Unix epoch (absent from a local payload or an older worker).
    pub read_us: Option<u64>,
    pub publish_us: Option<u64>,
}

/// The fanout's payload of `m`, with its read and publish times.
pub fn fanout(m: &Message, read_us: u64, publish_us: u64) -> String {
    format!(
        "m{} {} {} {read_us} {publish_us}\n{}",
        m.offset,
        m.epoch,
        m.ts,
        ServerFrame::Message(m).to_json(None)
    )
}

/// A node's payload of its own append `m`.
pub fn local(m: &Message) -> String {
    format!(
        "l{} {} {}\n{}",
        m.offset,
        m.epoch,
        m.ts,
        ServerFrame::Message(m).to_json(None)
    )
}

/// An ephemeral event's payload: `frame` for everyone in the room but `user`.
pub fn event(user: &str, frame: &ServerFrame<'_>) -> String {
    format!("e{user}\n{}", frame.to_json(None))
}

/// What a payload's header (the part before the newline) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Live<'a> {
    /// A stored message.
    Stored(Header<'a>),
    /// An ephemeral event of this user's.
    Event { user: &'a [u8] },
}

/// Reads a payload's header; `None` for junk.
pub fn parse(h: &[u8]) -> Option<Live<'_>> {
    match h.first()? {
        b'e' => Some(Live::Event { user: &h[1..] }),
        _ => header(h).map(Live::Stored),
    }
}

/// The header of a stored message's payload (the part before the newline);
/// `None` for anything else (an ephemeral event, junk).
pub fn header(h: &[u8]) -> Option<Header<'_>> {
    let source = match h.first()? {
        b'm' => Source::Fanout,
        b'l' => Source::Local,
        _ => return None,
    };
    let mut it = std::str::from_utf8(&h[1..]).ok()?.split(' ');
    let offset = it.next()?.parse::<u64>().ok()?;
    let epoch = it.next()?;
    let mut num = || it.next().and_then(|t| t.parse::<u64>().ok());
    Some(Header {
        source,
        offset,
        epoch,
        ts: num().unwrap_or(0),
        read_us: num(),
        publish_us: num(),
    })
}

/// µs since the Unix epoch: the hop times are compared across processes.
pub fn unix_us() -> u64 {
    crate::clock::now_us()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Kind;

    fn message() -> Message {
        Message {
            room: "r".into(),
            offset: 7,
            id: "7-1700000000123".into(),
            epoch: "ab12".into(),
            user: "al".into(),
            text: "hi".into(),
            ts: 1_700_000_000_123,
            client_id: "c".into(),
            kind: Kind::User,
            ..Default::default()
        }
    }

    #[test]
    fn both_payloads_read_back() {
        let m = message();
        let p = fanout(&m, 5, 9);
        let (h, frame) = p.split_once('\n').expect("newline");
        let want = Header {
            source: Source::Fanout,
            offset: 7,
            epoch: "ab12",
            ts: m.ts,
            read_us: Some(5),
            publish_us: Some(9),
        };
        assert_eq!(header(h.as_bytes()), Some(want));
        assert_eq!(frame, ServerFrame::Message(&m).to_json(None));
        let l = local(&m);
        let (h, same) = l.split_once('\n').expect("newline");
        let want = Header {
            source: Source::Local,
            read_us: None,
            publish_us: None,
            ..want
        };
        assert_eq!(header(h.as_bytes()), Some(want));
        assert_eq!(same, frame);
        // An older worker's header, an event's, junk.
        assert_eq!(
            header(b"m7 ab12").map(|h| (h.ts, h.read_us)),
            Some((0, None))
        );
        for junk in [&b"ealice"[..], b"mx ab", b"m7", b""] {
            assert_eq!(header(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn an_event_reads_back_and_junk_is_none() {
        let m = message();
        let frame = ServerFrame::Message(&m);
        let p = event("alice", &frame);
        let (h, body) = p.split_once('\n').expect("newline");
        assert_eq!(parse(h.as_bytes()), Some(Live::Event { user: b"alice" }));
        assert_eq!(body, frame.to_json(None));
        assert!(matches!(parse(b"m7 ab12 1"), Some(Live::Stored(_))));
        for junk in [&b""[..], b"q", b"mx ab"] {
            assert_eq!(parse(junk), None, "{junk:?}");
        }
    }
}
