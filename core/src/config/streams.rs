//! `streams.toml`: retention is policy, not code.

use super::{ConfigError, parse_duration};
use crate::pattern::{glob_match, valid_room};
use serde::Deserialize;
use std::path::Path;
use std::time::Duration;

/// The whole validated policy file.
#[derive(Clone, Debug)]
pub struct StreamsConfig {
    pub defaults: RetentionPolicy,
    /// Ordered; the first pattern that matches a room wins.
    pub rooms: Vec<RoomPolicy>,
    pub fanout: FanoutPolicy,
    pub dedup: DedupPolicy,
    pub notify: NotifyPolicy,
    pub summarize: SummarizePolicy,
    pub archive: ArchivePolicy,
    pub webhooks: super::webhooks::WebhookPolicy,
}

#[derive(Clone, Debug, PartialEq)]
pub struct RetentionPolicy {
    /// Approximate cap on entries per room stream (`MAXLEN ~`).
    pub maxlen: u64,
    /// Entries older than this are trimmed (`MINID ~`); `None` keeps by count only.
    pub max_age: Option<Duration>,
    /// An idle room's keys expire after this; each append refreshes it.
    pub ttl: Duration,
    /// How long the archive keeps a message (from its timestamp); `None`
    /// keeps it forever.
    pub archive_for: Option<Duration>,
    /// Whether members see each other's read markers (`receipt` events,
    /// `GET /v1/rooms/{room}/receipts`). Off by default.
    pub read_receipts: bool,
    /// Each user's posts in the room at least this far apart (moderators
    /// and owners are exempt); `None` is off.
    pub slow_mode: Option<Duration>,
    /// A user's first join of the room is a `system` message (notice
    /// `join`): for apps that show it, and for `join` webhooks.
    pub join_notices: bool,
}

#[derive(Clone, Debug)]
pub struct RoomPolicy {
    pub pattern: String,
    pub retention: RetentionPolicy,
}

#[derive(Clone, Debug)]
pub struct FanoutPolicy {
    pub shards: u32,
    pub group: String,
    /// Entries per `XREADGROUP`.
    pub batch: usize,
    /// Cap on each shard stream (`MAXLEN ~`); generous, consumers keep up long before.
    pub shard_maxlen: u64,
    /// Pending entries idle this long are taken over by another consumer.
    pub claim_idle: Duration,
    /// An entry delivered more often than this goes to the dead-letter stream.
    pub max_deliveries: u64,
    pub dead_letter_maxlen: u64,
    /// After a read of fewer than a quarter of `batch` entries, a worker
    /// waits this long before reading again, so the next read carries more:
    /// fewer round trips and script calls per message, for up to this much
    /// (plus the timer's millisecond rounding) of added latency. Zero reads
    /// again at once. Measured trade-off in docs/configuration.md.
    pub linger: Duration,
}

/// The most `fanout.linger` may be: it delays live delivery.
pub const MAX_LINGER: Duration = Duration::from_millis(100);

#[derive(Clone, Debug)]
pub struct DedupPolicy {
    pub window: Duration,
}

#[derive(Clone, Debug)]
pub struct NotifyPolicy {
    pub group: String,
    /// Cap on the `notify` work stream (`MAXLEN ~`).
    pub maxlen: u64,
    /// Per user and room, at most one push per window: the first message
    /// is pushed at once, the rest of the window in one push at its end.
    pub collapse_window: Duration,
    /// Device tokens kept per user; the least recently seen are dropped.
    pub max_devices_per_user: u64,
    /// Pending work idle this long is taken over by another notifier.
    pub claim_idle: Duration,
    /// A work item delivered more often than this goes to the dead-letter stream.
    pub max_deliveries: u64,
    /// Cap on the dry-run outbox stream.
    pub outbox_maxlen: u64,
}

impl NotifyPolicy {
    /// How long a user's collapse state in a room lives: well past its
    /// window, so a trailing push survives a notifier outage of an hour.
    pub fn collapse_ttl(&self) -> Duration {
        self.collapse_window.saturating_mul(2) + Duration::from_secs(3600)
    }
}

#[derive(Clone, Debug)]
pub struct ArchivePolicy {
    pub group: String,
    /// Entries per read, and so the most documents per MongoDB write.
    pub batch: usize,
    /// The MongoDB collection of archived messages.
    pub collection: String,
    pub claim_idle: Duration,
    /// Then the entry goes to the dead-letter stream.
    pub max_deliveries: u64,
}

#[derive(Clone, Debug, PartialEq)]
pub struct SummarizePolicy {
    /// Enqueue a summary every this many messages in a room; 0 is off.
    pub every_messages: u64,
}

impl Default for StreamsConfig {
    fn default() -> Self {
        Self {
            defaults: RetentionPolicy {
                maxlen: 10_000,
                max_age: Some(Duration::from_secs(7 * 86_400)),
                ttl: Duration::from_secs(7 * 86_400),
                archive_for: None,
                read_receipts: false,
                slow_mode: None,
                join_notices: false,
            },
            rooms: Vec::new(),
            fanout: FanoutPolicy {
                shards: 8,
                group: "fanout".into(),
                batch: 256,
                shard_maxlen: 1_000_000,
                claim_idle: Duration::from_secs(5),
                max_deliveries: 5,
                dead_letter_maxlen: 100_000,
                linger: Duration::from_millis(1),
            },
            dedup: DedupPolicy {
                window: Duration::from_secs(600),
            },
            notify: NotifyPolicy {
                group: "notifier".into(),
                maxlen: 100_000,
                collapse_window: Duration::from_secs(30),
                max_devices_per_user: 10,
                claim_idle: Duration::from_secs(30),
                max_deliveries: 5,
                outbox_maxlen: 10_000,
            },
            summarize: SummarizePolicy { every_messages: 0 },
            archive: ArchivePolicy {
                group: "archive".into(),
                batch: 500,
                collection: "messages".into(),
                claim_idle: Duration::from_secs(30),
                max_deliveries: 5,
            },
            webhooks: super::webhooks::WebhookPolicy::default(),
        }
    }
}

impl StreamsConfig {
    /// The retention of a room: the first matching pattern, else the defaults.
    pub fn retention(&self, room: &str) -> &RetentionPolicy {
        self.rooms
            .iter()
            .find(|p| glob_match(&p.pattern, room))
            .map(|p| &p.retention)
            .unwrap_or(&self.defaults)
    }

    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|message| ConfigError::Parse {
            path: path.to_owned(),
            message,
        })
    }

    /// Parses and validates; the error names every bad field.
    pub fn parse(text: &str) -> Result<Self, String> {
        Self::validate(text).map_err(|errors| errors.join("; "))
    }

    /// [`Self::parse`] with one message per bad field (`chatctl config check`
    /// prints them a line each).
    pub fn validate(text: &str) -> Result<Self, Vec<String>> {
        let (raw, mut errors) = read_raw(text)?;
        let d = Self::default();
        let defaults =
            raw.defaults
                .unwrap_or_default()
                .resolve("defaults", &d.defaults, &mut errors);
        let mut rooms = Vec::new();
        for (i, r) in raw.rooms.unwrap_or_default().into_iter().enumerate() {
            let field = format!("rooms[{i}]");
            let pattern = r.pattern.clone().unwrap_or_default();
            let probe = pattern.replace('*', "x");
            if pattern.is_empty() || !valid_room(&probe) {
                errors.push(format!(
                    "{field}.pattern: {pattern:?} is not a room name pattern (letters, digits, _.:- and *)"
                ));
            }
            let retention = r.retention.resolve(&field, &defaults, &mut errors);
            rooms.push(RoomPolicy { pattern, retention });
        }
        let f = raw.fanout.unwrap_or_default();
        let fanout = FanoutPolicy {
            shards: range(
                f.shards,
                d.fanout.shards,
                1,
                1024,
                "fanout.shards",
                &mut errors,
            ),
            group: name(f.group, &d.fanout.group, "fanout.group", &mut errors),
            batch: range(
                f.batch,
                d.fanout.batch as u32,
                1,
                10_000,
                "fanout.batch",
                &mut errors,
            ) as usize,
            shard_maxlen: positive(
                f.shard_maxlen,
                d.fanout.shard_maxlen,
                "fanout.shard_maxlen",
                &mut errors,
            ),
            claim_idle: dur(
                f.claim_idle,
                d.fanout.claim_idle,
                "fanout.claim_idle",
                &mut errors,
            ),
            max_deliveries: positive(
                f.max_deliveries,
                d.fanout.max_deliveries,
                "fanout.max_deliveries",
                &mut errors,
            ),
            dead_letter_maxlen: positive(
                f.dead_letter_maxlen,
                d.fanout.dead_letter_maxlen,
                "fanout.dead_letter_maxlen",
                &mut errors,
            ),
            linger: match f.linger.map(|s| (parse_duration(&s), s)) {
                None => d.fanout.linger,
                Some((Ok(l), _)) if l <= MAX_LINGER => l,
                Some((Ok(_), s)) => {
                    errors.push(format!(
                        "fanout.linger: {s:?}: at most {}ms (it delays delivery)",
                        MAX_LINGER.as_millis()
                    ));
                    d.fanout.linger
                }
                Some((Err(e), s)) => {
                    errors.push(format!("fanout.linger: {s:?}: {e}"));
                    d.fanout.linger
                }
            },
        };
        let dd = raw.dedup.unwrap_or_default();
        let dedup = DedupPolicy {
            window: dur(dd.window, d.dedup.window, "dedup.window", &mut errors),
        };
        let n = raw.notify.unwrap_or_default();
        let notify = NotifyPolicy {
            group: name(n.group, &d.notify.group, "notify.group", &mut errors),
            maxlen: positive(n.maxlen, d.notify.maxlen, "notify.maxlen", &mut errors),
            collapse_window: dur(
                n.collapse_window,
                d.notify.collapse_window,
                "notify.collapse_window",
                &mut errors,
            ),
            max_devices_per_user: positive(
                n.max_devices_per_user,
                d.notify.max_devices_per_user,
                "notify.max_devices_per_user",
                &mut errors,
            ),
            claim_idle: dur(
                n.claim_idle,
                d.notify.claim_idle,
                "notify.claim_idle",
                &mut errors,
            ),
            max_deliveries: positive(
                n.max_deliveries,
                d.notify.max_deliveries,
                "notify.max_deliveries",
                &mut errors,
            ),
            outbox_maxlen: positive(
                n.outbox_maxlen,
                d.notify.outbox_maxlen,
                "notify.outbox_maxlen",
                &mut errors,
            ),
        };
        let s = raw.summarize.unwrap_or_default();
        let summarize = SummarizePolicy {
            every_messages: s.every_messages.unwrap_or(d.summarize.every_messages),
        };
        let a = raw.archive.unwrap_or_default();
        let archive = ArchivePolicy {
            group: name(a.group, &d.archive.group, "archive.group", &mut errors),
            batch: range(
                a.batch,
                d.archive.batch as u32,
                1,
                10_000,
                "archive.batch",
                &mut errors,
            ) as usize,
            collection: name(
                a.collection,
                &d.archive.collection,
                "archive.collection",
                &mut errors,
            ),
            claim_idle: dur(
                a.claim_idle,
                d.archive.claim_idle,
                "archive.claim_idle",
                &mut errors,
            ),
            max_deliveries: positive(
                a.max_deliveries,
                d.archive.max_deliveries,
                "archive.max_deliveries",
                &mut errors,
            ),
        };
        if archive.group == fanout.group {
            errors.push("archive.group: must differ from fanout.group".into());
        }
        let webhooks = raw.webhooks.unwrap_or_default().resolve(&mut errors);
        if webhooks.group == fanout.group || webhooks.group == archive.group {
            errors.push("webhooks.group: must differ from fanout.group and archive.group".into());
        }
        if errors.is_empty() {
            Ok(Self {
                defaults,
                rooms,
                fanout,
                dedup,
                notify,
                summarize,
                archive,
                webhooks,
            })
        } else {
            Err(errors)
        }
    }
}

pub(super) fn dur(
    v: Option<String>,
    default: Duration,
    field: &str,
    errors: &mut Vec<String>,
) -> Duration {
    match v {
        None => default,
        Some(s) => match parse_duration(&s) {
            Ok(d) if !d.is_zero() => d,
            Ok(_) => {
                errors.push(format!("{field}: must be more than zero"));
                default
            }
            Err(e) => {
                errors.push(format!("{field}: {s:?}: {e}"));
                default
            }
        },
    }
}

pub(super) fn positive(v: Option<u64>, default: u64, field: &str, errors: &mut Vec<String>) -> u64 {
    match v {
        Some(0) => {
            errors.push(format!("{field}: must be at least 1"));
            default
        }
        Some(n) => n,
        None => default,
    }
}

pub(super) fn range(
    v: Option<u32>,
    default: u32,
    lo: u32,
    hi: u32,
    field: &str,
    errors: &mut Vec<String>,
) -> u32 {
    match v {
        Some(n) if n < lo || n > hi => {
            errors.push(format!("{field}: {n} is outside {lo}..={hi}"));
            default
        }
        Some(n) => n,
        None => default,
    }
}

pub(super) fn name(
    v: Option<String>,
    default: &str,
    field: &str,
    errors: &mut Vec<String>,
) -> String {
    match v {
        Some(s)
            if s.is_empty()
                || s.len() > 64
                || !s
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') =>
        {
            errors.push(format!("{field}: {s:?} must be 1-64 of [A-Za-z0-9_-]"));
            default.to_owned()
        }
        Some(s) => s,
        None => default.to_owned(),
    }
}

/// The file's sections, each key checked on its own, so that one typo or
/// wrong type does not hide the other errors (`chatctl config check` lists
/// them all). Only a file that is not TOML at all stops here.
fn read_raw(text: &str) -> Result<(RawFile, Vec<String>), Vec<String>> {
    let table: toml::Table = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
    let mut errors = Vec::new();
    let mut raw = RawFile::default();
    for (key, value) in table {
        let e = &mut errors;
        match key.as_str() {
            "defaults" => raw.defaults = Some(section(value, "defaults", e)),
            "fanout" => raw.fanout = Some(section(value, "fanout", e)),
            "dedup" => raw.dedup = Some(section(value, "dedup", e)),
            "notify" => raw.notify = Some(section(value, "notify", e)),
            "summarize" => raw.summarize = Some(section(value, "summarize", e)),
            "archive" => raw.archive = Some(section(value, "archive", e)),
            "webhooks" => raw.webhooks = Some(section(value, "webhooks", e)),
            "rooms" => match value {
                toml::Value::Array(items) => {
                    let rooms = items.into_iter().enumerate();
                    let rooms = rooms.map(|(i, v)| section(v, &format!("rooms[{i}]"), e));
                    raw.rooms = Some(rooms.collect());
                }
                _ => e.push("rooms: must be an array of tables ([[rooms]])".to_owned()),
            },
            other => e.push(format!(
                "{other}: unknown section (there are defaults, rooms, fanout, dedup, notify, summarize, archive and webhooks)"
            )),
        }
    }
    Ok((raw, errors))
}

/// One section: each key is tried alone, and those that fail (unknown, or
/// of the wrong type) are reported and left at their defaults.
fn section<T: serde::de::DeserializeOwned + Default>(
    value: toml::Value,
    name: &str,
    errors: &mut Vec<String>,
) -> T {
    let toml::Value::Table(mut table) = value else {
        errors.push(format!("{name}: must be a table ([{name}])"));
        return T::default();
    };
    let keys: Vec<String> = table.keys().cloned().collect();
    for key in keys {
        let mut one = toml::Table::new();
        if let Some(v) = table.get(&key) {
            one.insert(key.clone(), v.clone());
        }
        if let Err(e) = toml::Value::Table(one).try_into::<T>() {
            errors.push(format!("{name}.{key}: {}", e.message().trim()));
            table.remove(&key);
        }
    }
    toml::Value::Table(table)
        .try_into::<T>()
        .unwrap_or_else(|e| {
            errors.push(format!("{name}: {}", e.message().trim()));
            T::default()
        })
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFile {
    defaults: Option<RawRetention>,
    rooms: Option<Vec<RawRoom>>,
    fanout: Option<RawFanout>,
    dedup: Option<RawDedup>,
    notify: Option<RawNotify>,
    summarize: Option<RawSummarize>,
    archive: Option<RawArchive>,
    webhooks: Option<super::webhooks::RawWebhooks>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    maxlen: Option<u64>,
    /// `"7d"`, or `"off"` to keep by count only.
    max_age: Option<String>,
    ttl: Option<String>,
    /// `"forever"` or a duration.
    archive_for: Option<String>,
    read_receipts: Option<bool>,
    /// `"5s"`, or `"off"`.
    slow_mode: Option<String>,
    join_notices: Option<bool>,
}

impl RawRetention {
    fn resolve(
        self,
        field: &str,
        base: &RetentionPolicy,
        errors: &mut Vec<String>,
    ) -> RetentionPolicy {
        let maxlen = positive(self.maxlen, base.maxlen, &format!("{field}.maxlen"), errors);
        let max_age = match self.max_age.as_deref() {
            None => base.max_age,
            Some("off") => None,
            Some(s) => Some(dur(
                Some(s.to_owned()),
                Duration::ZERO,
                &format!("{field}.max_age"),
                errors,
            )),
        };
        let ttl = dur(self.ttl, base.ttl, &format!("{field}.ttl"), errors);
        if ttl < Duration::from_secs(1) {
            errors.push(format!("{field}.ttl: must be at least 1s"));
        }
        let archive_for = optional(
            self.archive_for.as_deref(),
            base.archive_for,
            ("forever", Duration::from_secs(1), "at least 1s"),
            &format!("{field}.archive_for"),
            errors,
        );
        RetentionPolicy {
            maxlen,
            max_age,
            ttl,
            archive_for,
            read_receipts: self.read_receipts.unwrap_or(base.read_receipts),
            join_notices: self.join_notices.unwrap_or(base.join_notices),
            slow_mode: optional(
                self.slow_mode.as_deref(),
                base.slow_mode,
                ("off", Duration::from_millis(1), "a duration"),
                &format!("{field}.slow_mode"),
                errors,
            ),
        }
    }
}

/// A duration that a word turns off (`None`): `(word, least, what)`;
/// unset, `base`.
fn optional(
    value: Option<&str>,
    base: Option<Duration>,
    (word, least, what): (&str, Duration, &str),
    field: &str,
    errors: &mut Vec<String>,
) -> Option<Duration> {
    match value {
        None => base,
        Some(w) if w == word => None,
        Some(s) => {
            let d = dur(Some(s.to_owned()), Duration::ZERO, field, errors);
            if d < least {
                errors.push(format!("{field}: \"{word}\" or {what}"));
            }
            Some(d)
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRoom {
    pattern: Option<String>,
    #[serde(flatten)]
    retention: RawRetention,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawFanout {
    shards: Option<u32>,
    group: Option<String>,
    batch: Option<u32>,
    shard_maxlen: Option<u64>,
    claim_idle: Option<String>,
    max_deliveries: Option<u64>,
    dead_letter_maxlen: Option<u64>,
    linger: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDedup {
    window: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNotify {
    group: Option<String>,
    maxlen: Option<u64>,
    collapse_window: Option<String>,
    max_devices_per_user: Option<u64>,
    claim_idle: Option<String>,
    max_deliveries: Option<u64>,
    outbox_maxlen: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawArchive {
    group: Option<String>,
    batch: Option<u32>,
    collection: Option<String>,
    claim_idle: Option<String>,
    max_deliveries: Option<u64>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSummarize {
    every_messages: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhooks_parse_with_defaults_and_report_every_bad_field() {
        let ok = StreamsConfig::parse(
            "[webhooks]\nattempts = 3\n\n[[webhooks.endpoints]]\nname = \"app\"\nurl = \"https://example.com/hook\"\nrooms = [\"team:*\"]\nevents = [\"edit\", \"join\"]\nsecret_env = \"APP_SECRET\"\n",
        )
        .expect("valid");
        let w = &ok.webhooks;
        assert_eq!(
            (w.attempts, w.group.as_str(), w.endpoints.len()),
            (3, "webhooks", 1)
        );
        let e = &w.endpoints[0];
        assert_eq!(
            e.events,
            [super::super::EventType::Edit, super::super::EventType::Join]
        );
        assert!(e.wants("team:a", super::super::EventType::Edit));
        assert!(!e.wants("other", super::super::EventType::Edit));
        assert!(!e.wants("team:a", super::super::EventType::Message));

        let errors = StreamsConfig::validate(
            "[webhooks]\ngroup = \"fanout\"\nbackoff = \"10s\"\nbackoff_max = \"1s\"\n\n[[webhooks.endpoints]]\nname = \"a b\"\nurl = \"ftp://x\"\nrooms = [\"bad room\"]\nevents = [\"nope\"]\nsecret_env = \"lower\"\n",
        )
        .expect_err("invalid");
        for field in [
            "webhooks.group",
            "webhooks.backoff_max",
            "webhooks.endpoints[0].name",
            "webhooks.endpoints[0].url",
            "webhooks.endpoints[0].rooms",
            "webhooks.endpoints[0].events",
            "webhooks.endpoints[0].secret_env",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(field)),
                "{field} in {errors:?}"
            );
        }
    }

    #[test]
    fn shipped_streams_toml_is_valid() {
        let text = include_str!("../../../streams.toml");
        let cfg = StreamsConfig::parse(text).expect("streams.toml parses");
        assert!(cfg.defaults.maxlen > 0);
    }

    #[test]
    fn first_matching_pattern_wins_and_inherits_defaults() {
        let cfg = StreamsConfig::parse(
            r#"
            [defaults]
            maxlen = 100
            ttl = "1h"
            [[rooms]]
            pattern = "vip:*"
            maxlen = 5
            [[rooms]]
            pattern = "*"
            ttl = "10m"
            "#,
        )
        .expect("valid");
        assert_eq!(cfg.retention("vip:1").maxlen, 5);
        assert_eq!(cfg.retention("vip:1").ttl, Duration::from_secs(3600));
        assert_eq!(cfg.retention("other").maxlen, 100);
        assert_eq!(cfg.retention("other").ttl, Duration::from_secs(600));
    }

    #[test]
    fn bad_fields_are_named() {
        let err = StreamsConfig::parse(
            r#"
            [defaults]
            maxlen = 0
            ttl = "soon"
            [fanout]
            shards = 0
            [[rooms]]
            pattern = "bad room"
            "#,
        )
        .expect_err("invalid");
        for field in [
            "defaults.maxlen",
            "defaults.ttl",
            "fanout.shards",
            "rooms[0].pattern",
        ] {
            assert!(err.contains(field), "{field} not named in {err}");
        }
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_refused() {
        let err = StreamsConfig::parse("[defaults]\nmaxlenn = 3\n").expect_err("unknown");
        assert!(err.contains("maxlenn"), "{err}");
        let err = StreamsConfig::parse("[defaults]\nmaxlen = \"ten\"\n").expect_err("type");
        assert!(err.contains("maxlen"), "{err}");
    }

    #[test]
    fn one_typo_or_wrong_type_does_not_hide_the_other_errors() {
        let text = "[defaults]\nmaxlenn = 3\nttl = 5\n\n[fanout]\nshards = \"four\"\nbatch = 0\n\n\
                    [[rooms]]\npattern = \"a b\"\nmaxlen = -1\n\n[nope]\nx = 1\n";
        let errors = match StreamsConfig::validate(text) {
            Err(e) => e,
            Ok(_) => panic!("accepted"),
        };
        for field in [
            "defaults.maxlenn",
            "defaults.ttl",
            "fanout.shards",
            "fanout.batch",
            "rooms[0].pattern",
            "rooms[0].maxlen",
            "nope",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(field)),
                "{field} missing from {errors:#?}"
            );
        }
    }

    #[test]
    fn fanout_linger_is_zero_to_a_bound() {
        assert_eq!(
            StreamsConfig::default().fanout.linger,
            Duration::from_millis(1)
        );
        let cfg = StreamsConfig::parse("[fanout]\nlinger = \"0s\"\n").expect("zero is off");
        assert_eq!(cfg.fanout.linger, Duration::ZERO);
        let cfg = StreamsConfig::parse("[fanout]\nlinger = \"2ms\"\n").expect("valid");
        assert_eq!(cfg.fanout.linger, Duration::from_millis(2));
        for bad in ["\"1s\"", "\"soon\"", "\"-1ms\"", "5"] {
            let err = StreamsConfig::parse(&format!("[fanout]\nlinger = {bad}\n")).expect_err(bad);
            assert!(err.contains("linger"), "{bad}: {err}");
        }
    }

    #[test]
    fn max_age_can_be_turned_off() {
        let cfg = StreamsConfig::parse("[defaults]\nmax_age = \"off\"\n").expect("valid");
        assert_eq!(cfg.defaults.max_age, None);
    }

    #[test]
    fn archive_retention_and_policy() {
        let cfg = StreamsConfig::parse(
            "[defaults]\narchive_for = \"30d\"\n\n[[rooms]]\npattern = \"keep:*\"\narchive_for = \"forever\"\n\n[archive]\nbatch = 50\n",
        )
        .expect("valid");
        assert_eq!(
            cfg.retention("a").archive_for,
            Some(Duration::from_secs(30 * 86_400))
        );
        assert_eq!(cfg.retention("keep:x").archive_for, None);
        assert_eq!(cfg.archive.batch, 50);
        assert_eq!(cfg.archive.group, "archive");
        assert_eq!(StreamsConfig::default().defaults.archive_for, None);
        let err = StreamsConfig::parse(
            "[defaults]\narchive_for = \"0s\"\n\n[archive]\nbatch = 0\ngroup = \"fanout\"\ncollection = \"a b\"\n",
        )
        .expect_err("invalid");
        for field in [
            "defaults.archive_for",
            "archive.batch",
            "archive.group",
            "archive.collection",
        ] {
            assert!(err.contains(field), "{field} not named in {err}");
        }
    }
}
