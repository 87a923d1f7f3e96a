//! Stream entries as Redis returns them, checked field by field: a reply that
//! does not have the expected shape is an error, never a panic.

use crate::protocol::{Kind, Message, Reaction};
use redis::Value;

#[derive(Debug, thiserror::Error)]
#[error("unexpected reply from Redis: {0}")]
pub struct ReplyError(pub String);

fn err<T>(m: impl Into<String>) -> Result<T, ReplyError> {
    Err(ReplyError(m.into()))
}

/// Bytes of a string-like reply.
pub fn bytes(v: &Value) -> Result<&[u8], ReplyError> {
    match v {
        Value::BulkString(b) => Ok(b),
        Value::SimpleString(s) => Ok(s.as_bytes()),
        Value::VerbatimString { text, .. } => Ok(text.as_bytes()),
        other => err(format!("expected a string, got {other:?}")),
    }
}

pub fn string(v: &Value) -> Result<String, ReplyError> {
    String::from_utf8(bytes(v)?.to_vec()).map_err(|_| ReplyError("non-UTF-8 string".into()))
}

pub fn int(v: &Value) -> Result<i64, ReplyError> {
    match v {
        Value::Int(i) => Ok(*i),
        other => {
            let s = string(other)?;
            s.parse()
                .map_err(|_| ReplyError(format!("expected an integer, got {s:?}")))
        }
    }
}

pub fn array(v: &Value) -> Result<&[Value], ReplyError> {
    match v {
        Value::Array(a) | Value::Set(a) => Ok(a),
        Value::Nil => Ok(&[]),
        other => err(format!("expected an array, got {other:?}")),
    }
}

/// One stream entry: its id and field/value pairs.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    pub fields: Vec<(String, String)>,
}

impl Entry {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == field)
            .map(|(_, v)| v.as_str())
    }

    fn need(&self, field: &str) -> Result<&str, ReplyError> {
        self.get(field)
            .ok_or_else(|| ReplyError(format!("entry {} lacks field {field}", self.id)))
    }
}

/// `[[id, [k, v, ...]], ...]` as returned by XRANGE and friends.
/// Deleted entries (XAUTOCLAIM/XCLAIM may return `nil` fields) are skipped.
pub fn entries(v: &Value) -> Result<Vec<Entry>, ReplyError> {
    let mut out = Vec::new();
    for e in array(v)? {
        let pair = array(e)?;
        let [id, fields] = pair else {
            return err("stream entry is not [id, fields]");
        };
        let id = string(id)?;
        if matches!(fields, Value::Nil) {
            continue;
        }
        let flat = match fields {
            Value::Map(m) => m
                .iter()
                .map(|(k, v)| Ok((string(k)?, string(v)?)))
                .collect::<Result<Vec<_>, ReplyError>>()?,
            other => {
                let a = array(other)?;
                if a.len() % 2 != 0 {
                    return err("odd number of entry fields");
                }
                a.chunks(2)
                    .map(|c| Ok((string(&c[0])?, string(&c[1])?)))
                    .collect::<Result<Vec<_>, ReplyError>>()?
            }
        };
        out.push(Entry { id, fields: flat });
    }
    Ok(out)
}

/// A room stream id is `<offset>-<ms>`.
pub fn parse_room_id(id: &str) -> Option<(u64, u64)> {
    let (o, ts) = id.split_once('-')?;
    Some((o.parse().ok()?, ts.parse().ok()?))
}

/// A room stream entry as a message of that room and epoch.
pub fn room_message(room: &str, epoch: &str, e: &Entry) -> Result<Message, ReplyError> {
    let (offset, ts) =
        parse_room_id(&e.id).ok_or_else(|| ReplyError(format!("bad room entry id {}", e.id)))?;
    let number = |f: &str| -> Result<Option<u64>, ReplyError> {
        e.get(f)
            .map(|v| {
                v.parse()
                    .map_err(|_| ReplyError(format!("entry {} has a bad {f}", e.id)))
            })
            .transpose()
    };
    let edited = e.get("T");
    let kind = Kind::parse(e.need("k")?).ok_or_else(|| ReplyError("bad kind".into()))?;
    let tomb = match (kind, number("g")?, e.get("gi")) {
        (Kind::Delete, Some(target), Some(gi)) => Some(Box::new(Message {
            room: room.to_owned(),
            offset: target,
            id: gi.to_owned(),
            epoch: epoch.to_owned(),
            user: e.get("gu").unwrap_or_default().to_owned(),
            ts: parse_room_id(gi).map_or(0, |(_, ts)| ts),
            client_id: e.get("gc").unwrap_or_default().to_owned(),
            kind: e.get("gk").and_then(Kind::parse).unwrap_or_default(),
            reply_to: number("gp")?,
            deleted: true,
            ..Message::default()
        })),
        _ => None,
    };
    Ok(Message {
        room: room.to_owned(),
        offset,
        id: e.id.clone(),
        epoch: epoch.to_owned(),
        user: e.need("u")?.to_owned(),
        // A history read folds the edited text in (`T`).
        text: edited.unwrap_or(e.need("t")?).to_owned(),
        ts,
        client_id: e.need("c")?.to_owned(),
        kind,
        reply_to: number("p")?,
        target: number("g")?,
        emoji: e.get("j").map(str::to_owned),
        removed: e.get("z") == Some("1"),
        edited_at: number("E")?,
        deleted: e.get("x") == Some("1"),
        reactions: e.get("R").map(reactions).transpose()?.unwrap_or_default(),
        reply_count: number("N")?.unwrap_or(0),
        notice: e
            .get("a")
            .map(|a| {
                serde_json::from_str(a)
                    .map_err(|err| ReplyError(format!("entry {} has a bad action: {err}", e.id)))
            })
            .transpose()?,
        tomb,
    })
}

/// The state hash's reactions, `[[emoji, [user, ...]], ...]` (append.lua).
fn reactions(raw: &str) -> Result<Vec<Reaction>, ReplyError> {
    let pairs: Vec<(String, Vec<String>)> =
        serde_json::from_str(raw).map_err(|e| ReplyError(format!("bad reactions {raw:?}: {e}")))?;
    Ok(pairs
        .into_iter()
        .filter(|(_, users)| !users.is_empty())
        .map(|(emoji, users)| Reaction {
            emoji,
            count: users.len() as u64,
            me: false,
            users,
        })
        .collect())
}

/// A fanout shard entry carries the whole message (room and epoch included),
/// so its consumers never depend on the room stream.
pub fn shard_message(e: &Entry) -> Result<Message, ReplyError> {
    let room = e.need("r")?;
    let epoch = e.need("e")?;
    let id = e.need("i")?;
    let mut m = room_message(
        room,
        epoch,
        &Entry {
            id: id.to_owned(),
            fields: e.fields.clone(),
        },
    )?;
    let o: u64 = e
        .need("o")?
        .parse()
        .map_err(|_| ReplyError("bad offset".into()))?;
    if o != m.offset {
        return err(format!("shard entry offset {o} disagrees with id {id}"));
    }
    m.id = id.to_owned();
    Ok(m)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bs(s: &str) -> Value {
        Value::BulkString(s.as_bytes().to_vec())
    }

    #[test]
    fn parses_room_entries_and_rejects_junk() {
        let v = Value::Array(vec![Value::Array(vec![
            bs("7-1700000000123"),
            Value::Array(vec![
                bs("u"),
                bs("al"),
                bs("t"),
                bs("hi"),
                bs("c"),
                bs("c1"),
                bs("k"),
                bs("user"),
            ]),
        ])]);
        let es = entries(&v).expect("entries");
        let m = room_message("r", "E", &es[0]).expect("message");
        assert_eq!(
            (m.offset, m.ts, m.user.as_str(), m.kind),
            (7, 1_700_000_000_123, "al", Kind::User)
        );

        assert!(entries(&Value::Int(3)).is_err());
        assert!(entries(&Value::Array(vec![Value::Array(vec![bs("1-1")])])).is_err());
        let odd = Value::Array(vec![Value::Array(vec![
            bs("1-1"),
            Value::Array(vec![bs("u")]),
        ])]);
        assert!(entries(&odd).is_err());
        let bad_id = Entry {
            id: "x".into(),
            fields: vec![],
        };
        assert!(room_message("r", "e", &bad_id).is_err());
    }
}
