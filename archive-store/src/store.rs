//! The archive in MongoDB: one document per message, unique by
//! (room, epoch, offset). Writes are unordered upserts with `$setOnInsert`,
//! so a batch written twice (a redelivery, a takeover) changes nothing.

use chat_core::config::MongoSettings;
use chat_core::protocol::{Kind, Message};
use futures_util::TryStreamExt;
use mongodb::bson::{Bson, Document, doc};
use mongodb::options::{ClientOptions, IndexOptions};
use mongodb::{Client, Collection, Database, IndexModel};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// MongoDB could not be reached, or the command failed on the way (a
    /// failover, a timeout): retry later, nothing is lost.
    #[error("mongodb unavailable: {0}")]
    Unavailable(#[source] Box<mongodb::error::Error>),
    /// MongoDB answered but did not take the write as configured (a write
    /// concern not met, a transient write error): retry later.
    #[error("mongodb did not take the write: {0}")]
    NotTaken(String),
    /// MongoDB answered, and the answer is no for what was sent (a
    /// document too large or invalid): writing it again cannot succeed.
    #[error("mongodb refused: {0}")]
    Refused(String),
    /// A reply this code cannot read.
    #[error("mongodb reply: {0}")]
    Reply(String),
}

impl From<mongodb::error::Error> for StoreError {
    fn from(e: mongodb::error::Error) -> Self {
        use mongodb::error::ErrorKind;
        match &*e.kind {
            ErrorKind::Command(c) if PERMANENT.contains(&c.code) => Self::Refused(e.to_string()),
            // The input itself, or a server that answered with a refusal
            // shaped unlike MongoDB's (nx-27017 sends no code).
            ErrorKind::InvalidArgument { .. }
            | ErrorKind::BsonSerialization(_)
            | ErrorKind::InvalidResponse { .. } => Self::Refused(e.to_string()),
            // Unreachable, timed out, a failover, a write concern not met:
            // the same write can succeed later.
            _ => Self::Unavailable(Box::new(e)),
        }
    }
}

/// A message MongoDB refused for what it is (not for being unreachable).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// Index in the batch given to `upsert`.
    pub index: usize,
    pub reason: String,
}

#[derive(Clone)]
pub struct Store {
    db: Database,
    collection: String,
    write_concern: Document,
}

/// Error codes that say a document itself is bad, so writing it again can
/// never succeed: dead-lettered instead of retried.
const PERMANENT: &[i32] = &[
    2,     // BadValue
    9,     // FailedToParse
    14,    // TypeMismatch
    52,    // DollarPrefixedFieldName
    55,    // InvalidDBRef
    121,   // DocumentValidationFailure
    10334, // BSONObjectTooLarge
    17280, // KeyTooLong
    17419, // document too large
];

/// The duplicate-key error: another writer inserted it first, which is what
/// an upsert racing a takeover looks like. The message is archived.
const DUPLICATE_KEY: i32 = 11000;

impl Store {
    pub async fn connect(settings: &MongoSettings, collection: &str) -> Result<Self, StoreError> {
        let mut options = ClientOptions::parse(&settings.url).await?;
        options.app_name = Some("chat-archive".into());
        // An outage shows as a failed write in seconds, not the driver's 30 s.
        options.server_selection_timeout = Some(settings.timeout);
        options.connect_timeout = Some(settings.timeout);
        let client = Client::with_options(options)?;
        let w = match settings.w.parse::<i64>() {
            Ok(n) => Bson::Int64(n),
            Err(_) => Bson::String(settings.w.clone()),
        };
        Ok(Self {
            db: client.database(&settings.database),
            collection: collection.to_owned(),
            write_concern: doc! {
                "w": w,
                "j": settings.journal,
                "wtimeout": chat_core::clock::millis_i64(settings.timeout),
            },
        })
    }

    pub fn messages(&self) -> Collection<Document> {
        self.db.collection(&self.collection)
    }

    /// The unique index the upserts rely on, and the TTL index that expires
    /// documents at their `expire_at` (set for rooms kept for a duration).
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let c = self.messages();
        c.create_index(
            IndexModel::builder()
                .keys(doc! {"room": 1, "epoch": 1, "offset": 1})
                .options(
                    IndexOptions::builder()
                        .unique(true)
                        .name("room_epoch_offset".to_owned())
                        .build(),
                )
                .build(),
        )
        .await?;
        // History's step to the previous epoch, and the export's order.
        c.create_index(
            IndexModel::builder()
                .keys(doc! {"room": 1, "ts": 1, "offset": 1})
                .options(
                    IndexOptions::builder()
                        .name("room_ts_offset".to_owned())
                        .build(),
                )
                .build(),
        )
        .await?;
        c.create_index(
            IndexModel::builder()
                .keys(doc! {"expire_at": 1})
                .options(
                    IndexOptions::builder()
                        .expire_after(Duration::ZERO)
                        .name("expire_at_ttl".to_owned())
                        .build(),
                )
                .build(),
        )
        .await?;
        Ok(())
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.db.run_command(doc! {"ping": 1}).await?;
        Ok(())
    }

    /// Upserts every message (unordered, one command). Returns the ones
    /// MongoDB refused for good; any other failure, or a write concern not
    /// met, is an error and the whole batch is to be retried.
    pub async fn upsert(&self, docs: &[Document]) -> Result<Vec<Refused>, StoreError> {
        if docs.is_empty() {
            return Ok(Vec::new());
        }
        let updates: Vec<Document> = docs
            .iter()
            .map(|d| {
                doc! {
                    // By `_id`: the primary index, the cheapest lookup a
                    // server has (nx-27017 scans for any other filter).
                    "q": {"_id": d.get("_id").cloned().unwrap_or(Bson::Null)},
                    "u": {"$setOnInsert": d.clone()},
                    "upsert": true,
                }
            })
            .collect();
        let reply = self
            .db
            .run_command(doc! {
                "update": &self.collection,
                "updates": updates,
                "ordered": false,
                "writeConcern": self.write_concern.clone(),
            })
            .await?;
        if let Ok(wce) = reply.get_document("writeConcernError") {
            return Err(StoreError::NotTaken(format!(
                "write concern not met: {wce}"
            )));
        }
        let mut refused = Vec::new();
        if let Ok(errors) = reply.get_array("writeErrors") {
            for e in errors {
                let Some(e) = e.as_document() else {
                    return Err(StoreError::Reply(format!("writeErrors entry {e}")));
                };
                let (Some(index), Some(code)) = (int(e.get("index")), int(e.get("code"))) else {
                    return Err(StoreError::Reply(format!("writeErrors entry {e}")));
                };
                let code = code as i32;
                let message = e.get_str("errmsg").unwrap_or("").to_owned();
                if code == DUPLICATE_KEY {
                    continue;
                }
                if !PERMANENT.contains(&code) {
                    // Transient (a failover, an interrupted write): retry all.
                    return Err(StoreError::NotTaken(format!(
                        "write error {code}: {message}"
                    )));
                }
                let index = usize::try_from(index)
                    .ok()
                    .filter(|i| *i < docs.len())
                    .ok_or_else(|| StoreError::Reply(format!("writeErrors index {index}")))?;
                if refused.iter().any(|r: &Refused| r.index == index) {
                    continue;
                }
                refused.push(Refused {
                    index,
                    reason: format!("mongodb {code}: {message}"),
                });
            }
        }
        Ok(refused)
    }
}

impl Store {
    /// The newest `limit` archived messages of one epoch below `before`,
    /// oldest first.
    pub async fn older(
        &self,
        room: &str,
        epoch: &str,
        before: u64,
        limit: u32,
    ) -> Result<Vec<Message>, StoreError> {
        let mut cursor = self
            .messages()
            .find(doc! {"room": room, "epoch": epoch, "offset": {"$lt": clamp(before)}})
            .sort(doc! {"offset": -1})
            .limit(i64::from(limit))
            .await?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await? {
            out.push(message(&d)?);
        }
        out.reverse();
        Ok(out)
    }

    /// Applies an archived `delete` event to what it deleted: the message's
    /// document becomes its tombstone (no text), written whole so that it
    /// stands even when the message itself was never archived (its copy
    /// was removed from the shard stream first), and its edits lose their
    /// text too. Idempotent.
    pub async fn apply_delete(
        &self,
        event: &Message,
        keep_for: Option<Duration>,
    ) -> Result<(), StoreError> {
        let Some(target) = event.target else {
            return Ok(());
        };
        let id = document_id(&event.room, &event.epoch, target);
        let set = match &event.tomb {
            Some(t) => {
                let mut d = document(t, keep_for);
                d.remove("_id");
                d
            }
            None => doc! {"text": "", "deleted": true},
        };
        self.messages()
            .update_one(doc! {"_id": &id}, doc! {"$set": set})
            .upsert(event.tomb.is_some())
            .await?;
        self.messages()
            .update_many(
                doc! {"room": &event.room, "epoch": &event.epoch, "target": clamp(target), "kind": "edit"},
                doc! {"$set": {"text": "", "deleted": true}},
            )
            .await?;
        Ok(())
    }

    /// Folds what later events did into archived messages of one epoch
    /// (edits, reactions, reply counts), as Redis's history does from its
    /// state hash: the archive keeps every event as its own document, so
    /// this reads the events that name these messages, in offset order.
    /// Deletes are applied to the documents themselves when archived.
    pub async fn fold(
        &self,
        room: &str,
        epoch: &str,
        messages: &mut [Message],
        viewer: Option<&str>,
    ) -> Result<(), StoreError> {
        let offsets: Vec<i64> = messages
            .iter()
            .filter(|m| m.kind.is_message() && !m.deleted)
            .map(|m| clamp(m.offset))
            .collect();
        if offsets.is_empty() {
            return Ok(());
        }
        let mut cursor = self
            .messages()
            .find(doc! {"room": room, "epoch": epoch, "$or": [
                {"target": {"$in": &offsets}},
                {"reply_to": {"$in": &offsets}},
            ]})
            .sort(doc! {"offset": 1})
            .await?;
        while let Some(d) = cursor.try_next().await? {
            let e = message(&d)?;
            if let Some(parent) = e.reply_to {
                if let Some(m) = messages.iter_mut().find(|m| m.offset == parent) {
                    m.reply_count += 1;
                }
                continue;
            }
            let Some(m) = e
                .target
                .and_then(|t| messages.iter_mut().find(|m| m.offset == t))
            else {
                continue;
            };
            match (e.kind, e.emoji) {
                (Kind::Edit, _) if !e.deleted => {
                    m.text = e.text;
                    m.edited_at = Some(e.ts);
                }
                (Kind::Reaction, Some(emoji)) => {
                    let at = m.reactions.iter().position(|r| r.emoji == emoji);
                    match (at, e.removed) {
                        (Some(i), true) => {
                            m.reactions[i].users.retain(|u| *u != e.user);
                            if m.reactions[i].users.is_empty() {
                                m.reactions.remove(i);
                            }
                        }
                        (Some(i), false) if !m.reactions[i].users.contains(&e.user) => {
                            m.reactions[i].users.push(e.user)
                        }
                        (None, false) => m.reactions.push(chat_core::protocol::Reaction {
                            emoji,
                            users: vec![e.user],
                            ..Default::default()
                        }),
                        _ => {}
                    }
                }
                _ => {}
            }
        }
        for m in messages.iter_mut() {
            for r in &mut m.reactions {
                r.count = r.users.len() as u64;
            }
            m.seen_by(viewer);
        }
        Ok(())
    }

    /// The epoch the room had before `epoch` (whose oldest known message was
    /// stored at `first_ts`), with its last archived offset.
    pub async fn previous_epoch(
        &self,
        room: &str,
        epoch: &str,
        first_ts: u64,
    ) -> Result<Option<(String, u64)>, StoreError> {
        let found = self
            .messages()
            .find_one(doc! {"room": room, "epoch": {"$ne": epoch}, "ts": {"$lte": clamp(first_ts)}})
            .sort(doc! {"ts": -1, "offset": -1})
            .await?;
        let Some(d) = found else {
            return Ok(None);
        };
        let epoch = message(&d)?.epoch;
        // Its highest offset, not that of its newest message by time: a
        // clock that stepped back must not hide the epoch's tail.
        let last = self
            .messages()
            .find_one(doc! {"room": room, "epoch": &epoch})
            .sort(doc! {"offset": -1})
            .await?
            .map(|d| message(&d))
            .transpose()?
            .map_or(0, |m| m.offset);
        Ok(Some((epoch, last)))
    }

    /// The oldest archived message of an epoch, if any.
    pub async fn first_of_epoch(
        &self,
        room: &str,
        epoch: &str,
    ) -> Result<Option<Message>, StoreError> {
        let found = self
            .messages()
            .find_one(doc! {"room": room, "epoch": epoch})
            .sort(doc! {"offset": 1})
            .await?;
        found.map(|d| message(&d)).transpose()
    }

    /// Every archived message of a room, oldest first, as a cursor: the
    /// caller streams it without holding the room in memory.
    pub async fn room_cursor(&self, room: &str) -> Result<mongodb::Cursor<Document>, StoreError> {
        Ok(self
            .messages()
            .find(doc! {"room": room})
            .sort(doc! {"ts": 1, "offset": 1})
            .await?)
    }

    /// Removes every archived message of a room; returns how many.
    pub async fn delete_room(&self, room: &str) -> Result<u64, StoreError> {
        Ok(self
            .messages()
            .delete_many(doc! {"room": room})
            .await?
            .deleted_count)
    }
}

/// BSON has signed 64-bit integers.
fn clamp(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A message from its archived document; numbers are read tolerantly.
pub fn message(d: &Document) -> Result<Message, StoreError> {
    let text = |k: &str| {
        d.get_str(k)
            .map(str::to_owned)
            .map_err(|_| StoreError::Reply(format!("archived document without {k}")))
    };
    let opt = |k: &str| int(d.get(k)).and_then(|n| u64::try_from(n).ok());
    // A server speaking MongoDB's protocol may hand a boolean back as 0/1.
    let flag = |k: &str| match d.get(k) {
        Some(Bson::Boolean(b)) => *b,
        other => int(other).is_some_and(|n| n != 0),
    };
    let number = |k: &str| {
        int(d.get(k))
            .and_then(|n| u64::try_from(n).ok())
            .ok_or_else(|| StoreError::Reply(format!("archived document without {k}")))
    };
    Ok(Message {
        room: text("room")?,
        offset: number("offset")?,
        id: text("id")?,
        epoch: text("epoch")?,
        user: text("user")?,
        text: text("text")?,
        ts: number("ts")?,
        client_id: text("client_id")?,
        kind: Kind::parse(&text("kind")?)
            .ok_or_else(|| StoreError::Reply("archived document with a bad kind".into()))?,
        reply_to: opt("reply_to"),
        target: opt("target"),
        emoji: d.get_str("emoji").ok().map(str::to_owned),
        removed: flag("removed"),
        deleted: flag("deleted"),
        ..Default::default()
    })
}

/// The archived document of a message. `keep_for`: the room's archive
/// retention (`None` keeps it forever).
pub fn document(m: &Message, keep_for: Option<Duration>) -> Document {
    let mut d = doc! {
        "_id": document_id(&m.room, &m.epoch, m.offset),
        "room": &m.room,
        "epoch": &m.epoch,
        "offset": m.offset as i64,
        "id": &m.id,
        "user": &m.user,
        "text": &m.text,
        "client_id": &m.client_id,
        "kind": m.kind.as_str(),
        "ts": m.ts as i64,
    };
    for (k, v) in [("reply_to", m.reply_to), ("target", m.target)] {
        if let Some(v) = v {
            d.insert(k, clamp(v));
        }
    }
    if let Some(e) = &m.emoji {
        d.insert("emoji", e);
    }
    if m.removed {
        d.insert("removed", true);
    }
    if m.deleted {
        d.insert("deleted", true);
    }
    if let Some(keep) = keep_for {
        let at = (m.ts as i64).saturating_add(chat_core::clock::millis_i64(keep));
        d.insert("expire_at", mongodb::bson::DateTime::from_millis(at));
    }
    d
}

/// `<room>|<epoch>|<offset, 20 digits>`: unique per message like the
/// (room, epoch, offset) index (neither names nor epochs contain `|`), and
/// in offset order within an epoch.
pub fn document_id(room: &str, epoch: &str, offset: u64) -> String {
    format!("{room}|{epoch}|{offset:020}")
}

/// Numbers as MongoDB (or a server speaking its protocol) may send them:
/// Int32, Int64 or a whole Double.
pub fn int(v: Option<&Bson>) -> Option<i64> {
    match v? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        Bson::Double(f) if f.fract() == 0.0 && f.abs() < 9.0e15 => Some(*f as i64),
        _ => None,
    }
}
