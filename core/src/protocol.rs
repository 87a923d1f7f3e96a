//! The wire contract (v1, docs/protocol.md): client frames, server frames, error
//! and close codes. Serialization here is the only place frame shapes live.

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Error codes of the contract.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadRequest,
    Unauthorized,
    Forbidden,
    NotJoined,
    NotFound,
    RateLimited,
    TooLarge,
    Unavailable,
    Internal,
}

/// A request refused: the contract's code and a message for people. The
/// WebSocket path answers it as an `error` frame, the HTTP path as a JSON
/// error body with the code's status.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}: {message}", code.as_str())]
pub struct Refusal {
    pub code: ErrorCode,
    pub message: std::borrow::Cow<'static, str>,
}

impl Refusal {
    pub fn new(code: ErrorCode, message: impl Into<std::borrow::Cow<'static, str>>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotJoined => "not_joined",
            Self::NotFound => "not_found",
            Self::RateLimited => "rate_limited",
            Self::TooLarge => "too_large",
            Self::Unavailable => "unavailable",
            Self::Internal => "internal",
        }
    }

    /// HTTP status for the same condition.
    pub fn http_status(self) -> u16 {
        match self {
            Self::BadRequest => 400,
            Self::Unauthorized => 401,
            Self::Forbidden => 403,
            Self::NotFound => 404,
            Self::NotJoined => 409,
            Self::TooLarge => 413,
            Self::RateLimited => 429,
            Self::Internal => 500,
            Self::Unavailable => 503,
        }
    }
}

/// WebSocket close codes of the contract.
pub mod close {
    pub const GOING_AWAY: u16 = 1001;
    pub const UNSUPPORTED: u16 = 1003;
    pub const TOO_LARGE: u16 = 1009;
    pub const UNAUTHENTICATED: u16 = 4001;
    pub const REVOKED: u16 = 4003;
    pub const POLICY: u16 = 4008;
    /// Not in the contract's list: a socket that had not authenticated yet,
    /// closed to make room at the node's connection cap (RFC 6455's "try
    /// again later"); clients reconnect with backoff.
    pub const TRY_AGAIN_LATER: u16 = 1013;
}

/// What a room entry is. Messages: a user's, the system's (HTTP publish,
/// notices) or the summarizer's. Events (docs/protocol.md, "Conversation
/// events"): an edit, a delete or a reaction, each naming its `target`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    #[default]
    User,
    System,
    Summary,
    Edit,
    Delete,
    Reaction,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::User => "user",
            Self::System => "system",
            Self::Summary => "summary",
            Self::Edit => "edit",
            Self::Delete => "delete",
            Self::Reaction => "reaction",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "user" => Some(Self::User),
            "system" => Some(Self::System),
            "summary" => Some(Self::Summary),
            "edit" => Some(Self::Edit),
            "delete" => Some(Self::Delete),
            "reaction" => Some(Self::Reaction),
            _ => None,
        }
    }

    /// A message (shown as a line of the chat), not an event acting on one.
    pub fn is_message(self) -> bool {
        matches!(self, Self::User | Self::System | Self::Summary)
    }
}

/// What a `system` notice records: a moderation action, or a user's first
/// join (rooms with `join_notices` on).
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Notice {
    /// `mute`, `unmute`, `ban`, `unban`, `role` or `join`.
    pub action: String,
    /// Whom it is about.
    pub user: String,
    /// Who did it (`system` for the admin API).
    pub by: String,
    /// When a mute or ban ends (ms); absent for one without an end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub until: Option<u64>,
    /// A `role` action's new role (`owner`, `moderator`, `member`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// What a `moderate` frame does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ModAction {
    Mute,
    Unmute,
    Ban,
    Unban,
}

impl ModAction {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "mute" => Some(Self::Mute),
            "unmute" => Some(Self::Unmute),
            "ban" => Some(Self::Ban),
            "unban" => Some(Self::Unban),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mute => "mute",
            Self::Unmute => "unmute",
            Self::Ban => "ban",
            Self::Unban => "unban",
        }
    }
}

/// One emoji's reactions to a message, as `history` shows them.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Reaction {
    pub emoji: String,
    pub count: u64,
    /// Whether the user reading has reacted with it.
    pub me: bool,
    /// Who reacted: read from the store, never sent (a room's reactor
    /// lists can be long; `count` and `me` are what clients render).
    #[serde(skip)]
    pub users: Vec<String>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// A stored chat message, as in `message` frames and `history` arrays.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, Default)]
pub struct Message {
    pub room: String,
    pub offset: u64,
    pub id: String,
    pub epoch: String,
    pub user: String,
    pub text: String,
    pub ts: u64,
    pub client_id: String,
    pub kind: Kind,
    /// A reply: the offset of the message it answers (same epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply_to: Option<u64>,
    /// An event (`edit`, `delete`, `reaction`): the offset of its message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<u64>,
    /// A `reaction`: the emoji.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emoji: Option<String>,
    /// A `reaction` taken back.
    #[serde(default, skip_serializing_if = "is_false")]
    pub removed: bool,
    /// (history) When the message was last edited, ms; `text` is the edited text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub edited_at: Option<u64>,
    /// A tombstone: the entry was deleted and its text is gone.
    #[serde(default, skip_serializing_if = "is_false")]
    pub deleted: bool,
    /// (history) Reactions, in the order each emoji was first used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reactions: Vec<Reaction>,
    /// (history) How many replies name this message.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub reply_count: u64,
    /// A `system` message recording a moderation action or a join.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notice: Option<Notice>,
    /// A `delete` read from a stream: the tombstone of what it deleted
    /// (for the archive, which may never see the deleted entry itself).
    #[serde(skip)]
    pub tomb: Option<Box<Message>>,
}

impl Message {
    /// Marks the reactions of `viewer` (`me`) and forgets who reacted.
    pub fn seen_by(&mut self, viewer: Option<&str>) {
        for r in &mut self.reactions {
            r.me = viewer.is_some_and(|v| r.users.iter().any(|u| u == v));
            r.users = Vec::new();
        }
    }
}

/// A `history` page's way to the next older one: `before` (exclusive) in
/// `epoch`, which may be an earlier epoch of the room than the page's.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct HistoryCursor {
    pub epoch: String,
    pub before: u64,
}

/// `since` of a `join`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Since {
    pub epoch: String,
    pub offset: u64,
}

/// Any client frame before validation: every field optional so a bad frame
/// can still be answered with its `ref`.
#[derive(Debug, Default, Deserialize)]
pub struct RawClientFrame {
    #[serde(rename = "type")]
    pub kind: Option<Value>,
    #[serde(rename = "ref")]
    pub reference: Option<Value>,
    pub token: Option<Value>,
    pub room: Option<Value>,
    pub text: Option<Value>,
    pub client_id: Option<Value>,
    pub since: Option<Value>,
    pub before: Option<Value>,
    pub epoch: Option<Value>,
    pub limit: Option<Value>,
    pub offset: Option<Value>,
    pub reply_to: Option<Value>,
    pub emoji: Option<Value>,
    pub remove: Option<Value>,
    pub thread: Option<Value>,
    pub user: Option<Value>,
    pub action: Option<Value>,
    pub duration_secs: Option<Value>,
}

/// A validated client frame.
#[derive(Debug, PartialEq)]
pub enum ClientFrame {
    Auth {
        token: String,
    },
    Join {
        room: String,
        since: Option<Since>,
    },
    Leave {
        room: String,
    },
    Send {
        room: String,
        text: String,
        client_id: String,
        reply_to: Option<u64>,
    },
    /// `edit`, `delete` and `react`: an event acting on the message at
    /// `offset` (in `epoch`, the current one when absent).
    Act {
        room: String,
        offset: u64,
        epoch: Option<String>,
        client_id: Option<String>,
        act: Act,
    },
    /// A room's owner or moderator mutes, bans (or lifts either) a user,
    /// for `duration_secs` or without an end.
    Moderate {
        room: String,
        user: String,
        action: ModAction,
        duration_secs: Option<u64>,
    },
    History {
        room: String,
        before: Option<u64>,
        /// The epoch `before` counts in (a `next` cursor's); the room's
        /// current epoch when absent.
        epoch: Option<String>,
        limit: u32,
        /// The replies to this message instead of the room.
        thread: Option<u64>,
    },
    Typing {
        room: String,
    },
    Read {
        room: String,
        offset: u64,
    },
    Refresh {
        token: String,
    },
    Ping,
}

/// What an `edit`, `delete` or `react` frame does.
#[derive(Clone, Debug, PartialEq)]
pub enum Act {
    Edit { text: String },
    Delete,
    React { emoji: String, remove: bool },
}

/// An emoji (a reaction's key): 1 to 32 bytes, no whitespace, control or
/// format characters. Not checked against Unicode's emoji list: apps also
/// react with short codes (`:shipit:`).
pub fn valid_emoji(e: &str) -> bool {
    (1..=32).contains(&e.len())
        && !e
            .chars()
            .any(|c| c.is_control() || c.is_whitespace() || (is_format(c) && c != '\u{200D}'))
}

/// Why a frame was refused, with the `ref` to echo.
#[derive(Debug)]
pub struct FrameError {
    pub code: ErrorCode,
    pub message: String,
    pub reference: Option<Value>,
}

/// Limits that shape validation.
#[derive(Clone, Copy, Debug)]
pub struct FrameLimits {
    pub max_text_bytes: usize,
}

impl ClientFrame {
    /// Parses one text frame. The `ref` is returned separately so replies echo it.
    pub fn parse(text: &str, limits: FrameLimits) -> (Option<Value>, Result<Self, FrameError>) {
        let raw: RawClientFrame = match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => match serde_json::from_value(Value::Object(map)) {
                Ok(raw) => raw,
                Err(e) => return (None, Err(bad(None, format!("invalid frame: {e}")))),
            },
            Ok(_) => return (None, Err(bad(None, "a frame must be a JSON object".into()))),
            Err(e) => return (None, Err(bad(None, format!("invalid JSON: {e}")))),
        };
        let reference = match raw.reference.clone() {
            None | Some(Value::Null) => None,
            Some(v @ (Value::String(_) | Value::Number(_))) => Some(v),
            Some(_) => {
                return (
                    None,
                    Err(bad(None, "ref must be a string or a number".into())),
                );
            }
        };
        let r = reference.clone();
        (
            reference,
            Self::validate(raw, limits).map_err(|m| FrameError { reference: r, ..m }),
        )
    }

    fn validate(raw: RawClientFrame, limits: FrameLimits) -> Result<Self, FrameError> {
        let kind = match &raw.kind {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(bad(None, "type must be a string".into())),
            None => return Err(bad(None, "missing field: type".into())),
        };
        Ok(match kind {
            "auth" => Self::Auth {
                token: string(&raw.token, "token")?,
            },
            "refresh" => Self::Refresh {
                token: string(&raw.token, "token")?,
            },
            "join" => Self::Join {
                room: room(&raw.room)?,
                since: match &raw.since {
                    None | Some(Value::Null) => None,
                    Some(v) => Some(serde_json::from_value::<Since>(v.clone()).map_err(|_| {
                        bad(
                            None,
                            "since must be {\"epoch\": string, \"offset\": integer >= 0}".into(),
                        )
                    })?),
                },
            },
            "leave" => Self::Leave {
                room: room(&raw.room)?,
            },
            "send" => {
                let room = room(&raw.room)?;
                let text = text_field(&raw.text, limits)?;
                let client_id = string(&raw.client_id, "client_id")?;
                if !valid_client_id(&client_id) {
                    return Err(bad(None, "client_id must be 1 to 64 characters".into()));
                }
                Self::Send {
                    room,
                    text,
                    client_id,
                    reply_to: positive(&raw.reply_to, "reply_to")?,
                }
            }
            "edit" | "delete" | "react" => {
                let act = match kind {
                    "edit" => Act::Edit {
                        text: text_field(&raw.text, limits)?,
                    },
                    "delete" => Act::Delete,
                    _ => {
                        let emoji = string(&raw.emoji, "emoji")?;
                        if !valid_emoji(&emoji) {
                            return Err(bad(
                                None,
                                "emoji must be 1 to 32 bytes without spaces or control characters"
                                    .into(),
                            ));
                        }
                        let remove = match &raw.remove {
                            None | Some(Value::Null) => false,
                            Some(Value::Bool(b)) => *b,
                            Some(_) => return Err(bad(None, "remove must be a boolean".into())),
                        };
                        Act::React { emoji, remove }
                    }
                };
                Self::Act {
                    room: room(&raw.room)?,
                    offset: positive(&raw.offset, "offset")?
                        .ok_or_else(|| bad(None, "missing field: offset".into()))?,
                    epoch: match &raw.epoch {
                        None | Some(Value::Null) => None,
                        Some(_) => Some(epoch(&raw.epoch)?),
                    },
                    client_id: match &raw.client_id {
                        None | Some(Value::Null) => None,
                        Some(_) => {
                            let c = string(&raw.client_id, "client_id")?;
                            if !valid_client_id(&c) {
                                return Err(bad(
                                    None,
                                    "client_id must be 1 to 64 characters".into(),
                                ));
                            }
                            Some(c)
                        }
                    },
                    act,
                }
            }
            "moderate" => {
                let user = string(&raw.user, "user")?;
                if !valid_user_id(&user) {
                    return Err(bad(None, "user is not a valid user id".into()));
                }
                let action = string(&raw.action, "action")?;
                Self::Moderate {
                    room: room(&raw.room)?,
                    user,
                    action: ModAction::parse(&action).ok_or_else(|| {
                        bad(None, "action must be mute, unmute, ban or unban".into())
                    })?,
                    duration_secs: positive(&raw.duration_secs, "duration_secs")?,
                }
            }
            "history" => Self::History {
                room: room(&raw.room)?,
                before: optional_u64(&raw.before, "before")?,
                epoch: match &raw.epoch {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(epoch(&raw.epoch)?),
                },
                limit: match optional_u64(&raw.limit, "limit")? {
                    None => 50,
                    Some(n @ 1..=100) => n as u32,
                    Some(_) => return Err(bad(None, "limit must be 1 to 100".into())),
                },
                thread: positive(&raw.thread, "thread")?,
            },
            "typing" => Self::Typing {
                room: room(&raw.room)?,
            },
            "read" => Self::Read {
                room: room(&raw.room)?,
                offset: optional_u64(&raw.offset, "offset")?
                    .ok_or_else(|| bad(None, "missing field: offset".into()))?,
            },
            "ping" => Self::Ping,
            other => {
                let shown: String = other.chars().take(32).collect();
                return Err(bad(None, format!("unknown frame type {shown:?}")));
            }
        })
    }
}

/// `client_id`: 1 to 64 characters.
pub fn valid_client_id(id: &str) -> bool {
    let n = id.chars().count();
    (1..=64).contains(&n)
}

/// A user id (the JWT `sub`, the `user` of the admin API): 1 to 256 bytes,
/// no control characters (`char::is_control`, general category Cc) and no
/// format characters (general category Cf).
///
/// User ids end up in frames other users' clients display, in key names and
/// in the line-based pub/sub and session framing. Control characters break
/// that framing (`\n`) and terminals; format characters are invisible or
/// reorder the text around them, so they let one user pass for another on
/// screen: U+202E (right-to-left override) makes `ad\u{202E}nimda` display
/// as `adadmin`, and U+200B (zero width space) makes `ali\u{200B}ce` look
/// exactly like `alice`. Any other Unicode (letters of any script, spaces,
/// punctuation, emoji) is allowed.
pub fn valid_user_id(user: &str) -> bool {
    (1..=256).contains(&user.len()) && !user.chars().any(|c| c.is_control() || is_format(c))
}

/// General category Cf (format), Unicode 18.0; the same as Unicode 15.0 and
/// later, whose U+13439..=U+1343F (Egyptian hieroglyph format controls)
/// were unassigned in 14.0. Sorted, inclusive ranges.
const FORMAT_CHARS: [(u32, u32); 21] = [
    (0x00AD, 0x00AD),
    (0x0600, 0x0605),
    (0x061C, 0x061C),
    (0x06DD, 0x06DD),
    (0x070F, 0x070F),
    (0x0890, 0x0891),
    (0x08E2, 0x08E2),
    (0x180E, 0x180E),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2066, 0x206F),
    (0xFEFF, 0xFEFF),
    (0xFFF9, 0xFFFB),
    (0x110BD, 0x110BD),
    (0x110CD, 0x110CD),
    (0x13430, 0x1343F),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0001, 0xE0001),
    (0xE0020, 0xE007F),
];

fn is_format(c: char) -> bool {
    let c = u32::from(c);
    FORMAT_CHARS
        .binary_search_by(|&(lo, hi)| {
            if hi < c {
                std::cmp::Ordering::Less
            } else if lo > c {
                std::cmp::Ordering::Greater
            } else {
                std::cmp::Ordering::Equal
            }
        })
        .is_ok()
}

fn bad(reference: Option<Value>, message: String) -> FrameError {
    FrameError {
        code: ErrorCode::BadRequest,
        message,
        reference,
    }
}

fn string(v: &Option<Value>, field: &str) -> Result<String, FrameError> {
    match v {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(bad(None, format!("{field} must be a string"))),
        None => Err(bad(None, format!("missing field: {field}"))),
    }
}

fn room(v: &Option<Value>) -> Result<String, FrameError> {
    let r = string(v, "room")?;
    if crate::pattern::valid_room(&r) {
        Ok(r)
    } else {
        Err(bad(None, "room must match ^[A-Za-z0-9_.:-]{1,128}$".into()))
    }
}

/// Epochs are what the server made them: short tokens of `[A-Za-z0-9_-]`.
pub fn valid_epoch(e: &str) -> bool {
    (1..=64).contains(&e.len())
        && e.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

fn epoch(v: &Option<Value>) -> Result<String, FrameError> {
    let e = string(v, "epoch")?;
    if valid_epoch(&e) {
        Ok(e)
    } else {
        Err(bad(None, "epoch must match ^[A-Za-z0-9_-]{1,64}$".into()))
    }
}

/// An offset naming a message: 1 or more.
fn positive(v: &Option<Value>, field: &str) -> Result<Option<u64>, FrameError> {
    match optional_u64(v, field)? {
        Some(0) => Err(bad(None, format!("{field} must be an offset of 1 or more"))),
        o => Ok(o),
    }
}

/// A message's text: 1 to `max_text_bytes`.
fn text_field(v: &Option<Value>, limits: FrameLimits) -> Result<String, FrameError> {
    let text = string(v, "text")?;
    if text.is_empty() {
        return Err(bad(None, "text must not be empty".into()));
    }
    if text.len() > limits.max_text_bytes {
        return Err(FrameError {
            code: ErrorCode::TooLarge,
            message: format!("text is over {} bytes", limits.max_text_bytes),
            reference: None,
        });
    }
    Ok(text)
}

fn optional_u64(v: &Option<Value>, field: &str) -> Result<Option<u64>, FrameError> {
    match v {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| bad(None, format!("{field} must be a non-negative integer"))),
        Some(_) => Err(bad(None, format!("{field} must be a non-negative integer"))),
    }
}

/// Frames from the server. `ref` is added by the caller where it applies.
#[derive(Debug, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame<'a> {
    Ready {
        user: &'a str,
        session: Option<&'a str>,
        exp: u64,
    },
    Joined {
        room: &'a str,
        epoch: &'a str,
        offset: u64,
        #[serde(skip_serializing_if = "Option::is_none")]
        recovered: Option<bool>,
        /// The user's unread messages in the room (up to 100: "100 or more").
        #[serde(skip_serializing_if = "Option::is_none")]
        unread: Option<u64>,
    },
    Left {
        room: &'a str,
    },
    Ack(&'a Ack),
    Message(&'a Message),
    History {
        room: &'a str,
        epoch: &'a str,
        messages: &'a [Message],
        /// Where the next older page starts; null when nothing older exists.
        next: Option<&'a HistoryCursor>,
    },
    Typing {
        room: &'a str,
        user: &'a str,
    },
    Presence {
        room: &'a str,
        user: &'a str,
        state: &'a str,
    },
    /// A member read up to `offset` (rooms with read receipts on).
    Receipt {
        room: &'a str,
        user: &'a str,
        epoch: &'a str,
        offset: u64,
    },
    Refreshed {
        exp: u64,
    },
    Expiring {
        exp: u64,
    },
    Pong,
    Error {
        code: ErrorCode,
        message: &'a str,
    },
}

/// The answer to an accepted (or duplicate) `send`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Ack {
    pub room: String,
    pub client_id: String,
    pub offset: u64,
    pub epoch: String,
    pub id: String,
    pub ts: u64,
    pub duplicate: bool,
}

impl ServerFrame<'_> {
    /// JSON text of the frame, with `ref` echoed when given.
    pub fn to_json(&self, reference: Option<&Value>) -> String {
        let Some(reference) = reference else {
            return serde_json::to_string(self).unwrap_or_default();
        };
        let mut v = serde_json::to_value(self).unwrap_or(Value::Null);
        if let Value::Object(map) = &mut v {
            map.insert("ref".into(), reference.clone());
        }
        v.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const L: FrameLimits = FrameLimits { max_text_bytes: 10 };

    #[test]
    fn parses_every_frame() {
        let cases = [
            (
                r#"{"type":"auth","token":"t"}"#,
                ClientFrame::Auth { token: "t".into() },
            ),
            (
                r#"{"type":"join","room":"r","since":{"epoch":"e","offset":3}}"#,
                ClientFrame::Join {
                    room: "r".into(),
                    since: Some(Since {
                        epoch: "e".into(),
                        offset: 3,
                    }),
                },
            ),
            (
                r#"{"type":"leave","room":"r"}"#,
                ClientFrame::Leave { room: "r".into() },
            ),
            (
                r#"{"type":"send","room":"r","text":"hi","client_id":"c1"}"#,
                ClientFrame::Send {
                    room: "r".into(),
                    text: "hi".into(),
                    client_id: "c1".into(),
                    reply_to: None,
                },
            ),
            (
                r#"{"type":"send","room":"r","text":"hi","client_id":"c1","reply_to":3}"#,
                ClientFrame::Send {
                    room: "r".into(),
                    text: "hi".into(),
                    client_id: "c1".into(),
                    reply_to: Some(3),
                },
            ),
            (
                r#"{"type":"edit","room":"r","offset":3,"text":"fixed","client_id":"e1"}"#,
                ClientFrame::Act {
                    room: "r".into(),
                    offset: 3,
                    epoch: None,
                    client_id: Some("e1".into()),
                    act: Act::Edit {
                        text: "fixed".into(),
                    },
                },
            ),
            (
                r#"{"type":"delete","room":"r","offset":3,"epoch":"E1"}"#,
                ClientFrame::Act {
                    room: "r".into(),
                    offset: 3,
                    epoch: Some("E1".into()),
                    client_id: None,
                    act: Act::Delete,
                },
            ),
            (
                r#"{"type":"react","room":"r","offset":3,"emoji":"👍🏽","remove":true}"#,
                ClientFrame::Act {
                    room: "r".into(),
                    offset: 3,
                    epoch: None,
                    client_id: None,
                    act: Act::React {
                        emoji: "👍🏽".into(),
                        remove: true,
                    },
                },
            ),
            (
                r#"{"type":"history","room":"r"}"#,
                ClientFrame::History {
                    room: "r".into(),
                    before: None,
                    epoch: None,
                    limit: 50,
                    thread: None,
                },
            ),
            (
                r#"{"type":"history","room":"r","before":7,"epoch":"ab-1","limit":3}"#,
                ClientFrame::History {
                    room: "r".into(),
                    before: Some(7),
                    epoch: Some("ab-1".into()),
                    limit: 3,
                    thread: None,
                },
            ),
            (
                r#"{"type":"typing","room":"r"}"#,
                ClientFrame::Typing { room: "r".into() },
            ),
            (
                r#"{"type":"read","room":"r","offset":7}"#,
                ClientFrame::Read {
                    room: "r".into(),
                    offset: 7,
                },
            ),
            (
                r#"{"type":"refresh","token":"x"}"#,
                ClientFrame::Refresh { token: "x".into() },
            ),
            (r#"{"type":"ping"}"#, ClientFrame::Ping),
        ];
        for (text, want) in cases {
            let (_, got) = ClientFrame::parse(text, L);
            assert_eq!(got.expect(text), want);
        }
    }

    #[test]
    fn bad_frames_keep_their_ref() {
        for text in [
            r#"{"type":"send","room":"r","text":"","client_id":"c","ref":5}"#,
            r#"{"type":"join","room":"bad room","ref":5}"#,
            r#"{"type":"nope","ref":5}"#,
            r#"{"type":"history","room":"r","limit":101,"ref":5}"#,
            r#"{"type":"send","room":"r","text":"hi","client_id":"","ref":5}"#,
            r#"{"type":"send","room":"r","text":"hi","client_id":"c","reply_to":0,"ref":5}"#,
            r#"{"type":"edit","room":"r","offset":1,"ref":5}"#,
            r#"{"type":"delete","room":"r","ref":5}"#,
            r#"{"type":"react","room":"r","offset":1,"emoji":"a b","ref":5}"#,
            r#"{"type":"react","room":"r","offset":1,"emoji":"","ref":5}"#,
            r#"{"type":"react","room":"r","offset":1,"emoji":"x","remove":"yes","ref":5}"#,
            r#"{"type":"history","room":"r","thread":-1,"ref":5}"#,
        ] {
            let (r, got) = ClientFrame::parse(text, L);
            let err = got.expect_err(text);
            assert_eq!(err.code, ErrorCode::BadRequest, "{text}");
            assert_eq!(r, Some(Value::from(5)));
            assert_eq!(err.reference, Some(Value::from(5)));
        }
    }

    #[test]
    fn oversized_text_is_too_large() {
        let (_, got) = ClientFrame::parse(
            r#"{"type":"send","room":"r","text":"01234567890","client_id":"c"}"#,
            L,
        );
        assert_eq!(got.expect_err("too large").code, ErrorCode::TooLarge);
    }

    #[test]
    fn not_objects_are_bad_requests() {
        for text in ["", "[]", "3", "null", "{", r#"{"type":1}"#, r#"{"ref":{}}"#] {
            let (_, got) = ClientFrame::parse(text, L);
            assert_eq!(got.expect_err(text).code, ErrorCode::BadRequest);
        }
    }

    #[test]
    fn server_frames_serialize_with_ref() {
        // Key order is not part of the contract (and depends on whether
        // some crate in the build turns on serde_json's `preserve_order`).
        let s = ServerFrame::Pong.to_json(Some(&Value::from("x")));
        assert_eq!(
            serde_json::from_str::<Value>(&s).expect("json"),
            serde_json::json!({"type": "pong", "ref": "x"})
        );
        let s = ServerFrame::Joined {
            room: "r",
            epoch: "e",
            offset: 0,
            recovered: None,
            unread: None,
        }
        .to_json(None);
        assert!(!s.contains("recovered"));
    }

    #[test]
    fn user_ids() {
        for ok in [
            "alice",
            "a",
            "José García",
            "名前",
            "😀",
            "a}b{%",
            "user@example.com",
            &"a".repeat(256),
            &"é".repeat(128),
        ] {
            assert!(valid_user_id(ok), "{ok:?}");
        }
        for bad in [
            "",
            &"a".repeat(257),
            &format!("{}a", "é".repeat(128)),
            "a\nb",
            "a\tb",
            "\0",
            "a\u{7f}",
            "a\u{85}",
            "ad\u{202E}nimda",
            "ali\u{200B}ce",
            "\u{FEFF}alice",
            "alice\u{E0041}",
            "a\u{13439}b",
        ] {
            assert!(!valid_user_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_format_table_is_sorted_and_every_range_is_refused_to_its_ends() {
        let mut total = 0;
        for (i, &(lo, hi)) in FORMAT_CHARS.iter().enumerate() {
            assert!(lo <= hi, "{lo:X}");
            if i > 0 {
                assert!(FORMAT_CHARS[i - 1].1 + 1 < lo, "{lo:X} overlaps or adjoins");
            }
            total += hi - lo + 1;
            for c in [lo, hi] {
                let c = char::from_u32(c).expect("a char");
                assert!(!valid_user_id(&format!("a{c}b")), "U+{:04X}", u32::from(c));
            }
            for c in [lo - 1, hi + 1] {
                let c = char::from_u32(c).expect("a char");
                assert_eq!(
                    valid_user_id(&format!("a{c}b")),
                    !c.is_control(),
                    "U+{:04X}",
                    u32::from(c)
                );
            }
        }
        // Cf has 170 code points from Unicode 15.0 on (163 in 14.0).
        assert_eq!(total, 170);
    }
}
