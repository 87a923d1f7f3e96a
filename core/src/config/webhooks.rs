//! `[webhooks]` of streams.toml: the app backend's endpoints, which room
//! events each one receives, and how deliveries are retried
//! (docs/protocol.md, "Webhooks"). Secrets are not in the file: each
//! endpoint names the environment variable holding its signing secret.

use super::streams::{dur, name, positive, range};
use crate::pattern::valid_room;
use serde::Deserialize;
use std::time::Duration;

/// What an endpoint subscribes to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EventType {
    /// Messages of kind `user` and `summary`, and `system` ones that are
    /// not notices.
    Message,
    Edit,
    Delete,
    Reaction,
    /// A user's first join (rooms with `join_notices`).
    Join,
    /// Mutes, bans, role changes.
    Moderation,
}

impl EventType {
    pub const ALL: [EventType; 6] = [
        Self::Message,
        Self::Edit,
        Self::Delete,
        Self::Reaction,
        Self::Join,
        Self::Moderation,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Message => "message",
            Self::Edit => "edit",
            Self::Delete => "delete",
            Self::Reaction => "reaction",
            Self::Join => "join",
            Self::Moderation => "moderation",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|e| e.as_str() == s)
    }

    /// The type of a stored room entry.
    pub fn of(m: &crate::protocol::Message) -> Self {
        use crate::protocol::Kind;
        match (m.kind, &m.notice) {
            (Kind::Edit, _) => Self::Edit,
            (Kind::Delete, _) => Self::Delete,
            (Kind::Reaction, _) => Self::Reaction,
            (_, Some(n)) if n.action == "join" => Self::Join,
            (_, Some(_)) => Self::Moderation,
            _ => Self::Message,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Endpoint {
    /// 1-64 of `[A-Za-z0-9_-]`, unique: metrics, logs and dead letters name it.
    pub name: String,
    pub url: String,
    /// Room name patterns (as in `[[rooms]]`).
    pub rooms: Vec<String>,
    pub events: Vec<EventType>,
    /// The environment variable holding the HMAC-SHA256 signing secret.
    pub secret_env: String,
}

impl Endpoint {
    pub fn wants(&self, room: &str, event: EventType) -> bool {
        self.events.contains(&event)
            && self
                .rooms
                .iter()
                .any(|p| crate::pattern::glob_match(p, room))
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct WebhookPolicy {
    pub group: String,
    /// Entries per read.
    pub batch: usize,
    pub claim_idle: Duration,
    /// Entries delivered to the worker more often than this (it crashed on
    /// them) are dead-lettered by the consumer.
    pub max_deliveries: u64,
    /// Attempts per event and endpoint before it is dead-lettered.
    pub attempts: u32,
    /// Between attempts, doubling up to `backoff_max`, with jitter; a
    /// `Retry-After` is honoured up to `backoff_max`.
    pub backoff: Duration,
    pub backoff_max: Duration,
    /// Per request.
    pub timeout: Duration,
    pub endpoints: Vec<Endpoint>,
}

impl Default for WebhookPolicy {
    fn default() -> Self {
        Self {
            group: "webhooks".into(),
            batch: 100,
            claim_idle: Duration::from_secs(120),
            max_deliveries: 5,
            attempts: 6,
            backoff: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            timeout: Duration::from_secs(10),
            endpoints: Vec::new(),
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawWebhooks {
    group: Option<String>,
    batch: Option<u32>,
    claim_idle: Option<String>,
    max_deliveries: Option<u64>,
    attempts: Option<u32>,
    backoff: Option<String>,
    backoff_max: Option<String>,
    timeout: Option<String>,
    endpoints: Option<Vec<RawEndpoint>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawEndpoint {
    name: Option<String>,
    url: Option<String>,
    rooms: Option<Vec<String>>,
    events: Option<Vec<String>>,
    secret_env: Option<String>,
}

fn env_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && !s.as_bytes()[0].is_ascii_digit()
}

impl RawWebhooks {
    pub(super) fn resolve(self, errors: &mut Vec<String>) -> WebhookPolicy {
        let d = WebhookPolicy::default();
        let mut endpoints: Vec<Endpoint> = Vec::new();
        for (i, e) in self.endpoints.unwrap_or_default().into_iter().enumerate() {
            let field = format!("webhooks.endpoints[{i}]");
            let endpoint_name = match e.name {
                Some(n) => name(Some(n), "", &format!("{field}.name"), errors),
                None => {
                    errors.push(format!("{field}.name: required"));
                    String::new()
                }
            };
            if !endpoint_name.is_empty() && endpoints.iter().any(|x| x.name == endpoint_name) {
                errors.push(format!("{field}.name: {endpoint_name:?} is used twice"));
            }
            let url = e.url.unwrap_or_default();
            let scheme_ok = url.starts_with("http://") || url.starts_with("https://");
            if !scheme_ok
                || url.len() > 2048
                || url.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                errors.push(format!("{field}.url: {url:?} is not an http(s) URL"));
            }
            let rooms = e.rooms.unwrap_or_else(|| vec!["*".to_owned()]);
            for p in &rooms {
                if p.is_empty() || !valid_room(&p.replace('*', "x")) {
                    errors.push(format!("{field}.rooms: {p:?} is not a room name pattern"));
                }
            }
            let events = match e.events {
                None => EventType::ALL.to_vec(),
                Some(list) => list
                    .iter()
                    .filter_map(|s| {
                        let t = EventType::parse(s);
                        if t.is_none() {
                            errors.push(format!(
                                "{field}.events: {s:?} is not one of message, edit, delete, reaction, join, moderation"
                            ));
                        }
                        t
                    })
                    .collect(),
            };
            let secret_env = e.secret_env.unwrap_or_default();
            if !env_name(&secret_env) {
                errors.push(format!(
                    "{field}.secret_env: {secret_env:?} must name an environment variable (A-Z, 0-9, _)"
                ));
            }
            endpoints.push(Endpoint {
                name: endpoint_name,
                url,
                rooms,
                events,
                secret_env,
            });
        }
        let backoff = dur(self.backoff, d.backoff, "webhooks.backoff", errors);
        let backoff_max = dur(
            self.backoff_max,
            d.backoff_max,
            "webhooks.backoff_max",
            errors,
        );
        if backoff_max < backoff {
            errors.push("webhooks.backoff_max: must be at least webhooks.backoff".into());
        }
        WebhookPolicy {
            group: name(self.group, &d.group, "webhooks.group", errors),
            batch: range(
                self.batch,
                d.batch as u32,
                1,
                10_000,
                "webhooks.batch",
                errors,
            ) as usize,
            claim_idle: dur(self.claim_idle, d.claim_idle, "webhooks.claim_idle", errors),
            max_deliveries: positive(
                self.max_deliveries,
                d.max_deliveries,
                "webhooks.max_deliveries",
                errors,
            ),
            attempts: range(
                self.attempts,
                d.attempts,
                1,
                100,
                "webhooks.attempts",
                errors,
            ),
            backoff,
            backoff_max,
            timeout: dur(self.timeout, d.timeout, "webhooks.timeout", errors),
            endpoints,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Kind, Message, Notice};

    #[test]
    fn each_entry_has_its_event_type() {
        let notice = |action: &str| {
            Some(Notice {
                action: action.into(),
                ..Notice::default()
            })
        };
        let cases = [
            (Kind::User, None, EventType::Message),
            (Kind::Summary, None, EventType::Message),
            (Kind::System, None, EventType::Message),
            (Kind::System, notice("join"), EventType::Join),
            (Kind::System, notice("ban"), EventType::Moderation),
            (Kind::Edit, None, EventType::Edit),
            (Kind::Delete, None, EventType::Delete),
            (Kind::Reaction, None, EventType::Reaction),
        ];
        for (kind, n, want) in cases {
            let m = Message {
                kind,
                notice: n,
                ..Message::default()
            };
            assert_eq!(EventType::of(&m), want, "{kind:?}");
        }
    }
}
