//! Typed configuration: `streams.toml` (retention and stream policy) and
//! service settings from `CHAT_*` variables layered over an optional file.

mod settings;
mod streams;
mod webhooks;

pub use settings::{Settings, Strings, load_strings};
pub use streams::{
    DedupPolicy, FanoutPolicy, NotifyPolicy, RetentionPolicy, RoomPolicy, StreamsConfig,
    SummarizePolicy,
};
pub use webhooks::{Endpoint, EventType, WebhookPolicy};

use std::path::PathBuf;

/// Everything that stops a service at start.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: {message}")]
    Parse { path: PathBuf, message: String },
    /// One line per bad field, each naming it.
    #[error("invalid configuration:\n  {}", .0.join("\n  "))]
    Invalid(Vec<String>),
}

/// `"90s"`, `"24h"`, `"10m"` into a duration.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim()).map_err(|e| format!("{e} (expected e.g. \"90s\", \"24h\")"))
}

/// `url` with any password in it replaced by `***`, for logs, errors and
/// Debug output (`redis://u:secret@h:1/` → `redis://u:***@h:1/`).
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|i| i + 3) else {
        return url.to_owned();
    };
    let rest = &url[scheme_end..];
    let authority = rest.find(['/', '?', '#']).map_or(rest, |i| &rest[..i]);
    let Some(at) = authority.rfind('@') else {
        return url.to_owned();
    };
    match authority[..at].find(':') {
        Some(colon) => format!(
            "{}:***{}",
            &url[..scheme_end + colon],
            &url[scheme_end + at..]
        ),
        None => url.to_owned(),
    }
}

/// Where the archive lives and how writes to it are acknowledged.
#[derive(Clone)]
pub struct MongoSettings {
    pub url: String,
    pub database: String,
    /// Write concern `w`: "majority" or a number of nodes.
    pub w: String,
    /// Write concern `j`: acknowledged only once in the journal.
    pub journal: bool,
    /// Server selection, connect, and write-concern timeout.
    pub timeout: std::time::Duration,
}

impl std::fmt::Debug for MongoSettings {
    // The URL's password never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoSettings")
            .field("url", &redact_url(&self.url))
            .field("database", &self.database)
            .field("w", &self.w)
            .field("journal", &self.journal)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Settings every service shares: where Redis is, the key prefix, the policy.
#[derive(Clone)]
pub struct Common {
    pub redis_url: String,
    pub prefix: String,
    pub streams: std::sync::Arc<StreamsConfig>,
    /// After SIGTERM: how long a service may finish the work in hand.
    pub shutdown_grace: std::time::Duration,
    /// `CHAT_REDIS_DURABLE`: Redis keeps every acknowledged write across
    /// restarts and failovers (e.g. `appendfsync always`, or acks that wait
    /// for replicas), so a room keeps its epoch when the Redis process
    /// behind it changes. Defaults to on when `ack_replicas` is.
    pub redis_durable: bool,
    /// `CHAT_REDIS_ACK_REPLICAS` and `CHAT_REDIS_ACK_TIMEOUT`: appends are
    /// acked, and consumer groups hand entries on, only once this many
    /// replicas hold them.
    pub ack_replicas: crate::replicas::AckReplicas,
}

impl std::fmt::Debug for Common {
    // The URL's password never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Common")
            .field("redis_url", &redact_url(&self.redis_url))
            .field("prefix", &self.prefix)
            .field("streams", &self.streams)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("redis_durable", &self.redis_durable)
            .field("ack_replicas", &self.ack_replicas)
            .finish()
    }
}

impl Common {
    /// `CHAT_REDIS_URL`, `CHAT_PREFIX`, `CHAT_STREAMS` (path of streams.toml;
    /// `./streams.toml` when present, else the built-in defaults).
    pub fn read(s: &mut Settings<'_>) -> Self {
        let redis_url = s.string("CHAT_REDIS_URL", "redis://127.0.0.1:6379/");
        if let Err(e) = crate::redis_conn::check_url(&redis_url) {
            s.error(format!("CHAT_REDIS_URL={:?}: {e}", redact_url(&redis_url)));
        }
        let prefix = s.string("CHAT_PREFIX", "chat");
        if prefix.is_empty()
            || prefix.len() > 32
            || !prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            s.error(format!(
                "CHAT_PREFIX={prefix:?}: must be 1-32 of [A-Za-z0-9_-]"
            ));
        }
        let streams = match s.opt("CHAT_STREAMS") {
            Some(path) => StreamsConfig::load(std::path::Path::new(&path)).unwrap_or_else(|e| {
                s.error(format!("CHAT_STREAMS: {e}"));
                StreamsConfig::default()
            }),
            None if std::path::Path::new("streams.toml").exists() => {
                StreamsConfig::load(std::path::Path::new("streams.toml")).unwrap_or_else(|e| {
                    s.error(format!("streams.toml: {e}"));
                    StreamsConfig::default()
                })
            }
            None => StreamsConfig::default(),
        };
        let shutdown_grace = s.duration("CHAT_SHUTDOWN_GRACE", std::time::Duration::from_secs(10));
        let ack_replicas = crate::replicas::AckReplicas {
            replicas: s.parse("CHAT_REDIS_ACK_REPLICAS", 0),
            timeout: s.duration(
                "CHAT_REDIS_ACK_TIMEOUT",
                std::time::Duration::from_millis(500),
            ),
        };
        if ack_replicas.timeout.is_zero()
            || ack_replicas.timeout >= crate::redis_conn::RESPONSE_TIMEOUT
        {
            s.error(format!(
                "CHAT_REDIS_ACK_TIMEOUT={:?}: must be above zero and under {:?}",
                ack_replicas.timeout,
                crate::redis_conn::RESPONSE_TIMEOUT
            ));
        }
        // Acks that wait for replicas make a failover lossless: the room
        // keeps its epoch unless the operator says otherwise.
        let redis_durable = s.bool("CHAT_REDIS_DURABLE", ack_replicas.is_on());
        Self {
            redis_durable,
            ack_replicas,
            shutdown_grace,
            redis_url,
            prefix,
            streams: std::sync::Arc::new(streams),
        }
    }

    /// `CHAT_JOBS_REDIS_URL` (default `CHAT_REDIS_URL`): the summary job
    /// queue, which must be a standalone Redis (apalis-redis is not
    /// cluster-safe). Without one, a service that can do without the queue
    /// (`required` false) starts, and summary requests fail `unavailable`.
    pub fn read_jobs_url(&self, s: &mut Settings<'_>, required: bool) -> String {
        let url = s.string("CHAT_JOBS_REDIS_URL", &self.redis_url);
        if crate::redis_conn::cluster_nodes(&url).is_some() {
            if !required {
                return url;
            }
            s.error(format!(
                "CHAT_JOBS_REDIS_URL={:?}: the job queue needs a standalone Redis; \
                 set CHAT_JOBS_REDIS_URL when CHAT_REDIS_URL is a cluster",
                redact_url(&url)
            ));
        } else if let Err(e) = crate::redis_conn::check_url(&url) {
            s.error(format!("CHAT_JOBS_REDIS_URL={:?}: {e}", redact_url(&url)));
        }
        url
    }

    /// The archive's MongoDB (`CHAT_MONGODB_URL` and friends); `None` when
    /// the URL is unset (the archive is off) unless `required`.
    pub fn read_mongodb(&self, s: &mut Settings<'_>, required: bool) -> Option<MongoSettings> {
        let Some(url) = s.opt("CHAT_MONGODB_URL").filter(|u| !u.is_empty()) else {
            if required {
                s.error("CHAT_MONGODB_URL: required (mongodb://host:port/...)");
            }
            return None;
        };
        if !(url.starts_with("mongodb://") || url.starts_with("mongodb+srv://")) {
            s.error("CHAT_MONGODB_URL: must start with mongodb:// or mongodb+srv://");
        }
        let database = s.string("CHAT_MONGODB_DB", "chat");
        if database.is_empty()
            || database.len() > 63
            || !database
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            s.error(format!(
                "CHAT_MONGODB_DB={database:?}: must be 1-63 of [A-Za-z0-9_-]"
            ));
        }
        let w = s.string("CHAT_MONGODB_W", "majority");
        if w.is_empty() || (w != "majority" && w.parse::<u32>().is_err()) {
            s.error(format!(
                "CHAT_MONGODB_W={w:?}: \"majority\" or a number of nodes"
            ));
        }
        let journal = s.bool("CHAT_MONGODB_JOURNAL", true);
        let timeout = s.duration("CHAT_MONGODB_TIMEOUT", std::time::Duration::from_secs(10));
        if timeout.is_zero() {
            s.error("CHAT_MONGODB_TIMEOUT: must be more than zero");
        }
        Some(MongoSettings {
            url,
            database,
            w,
            journal,
            timeout,
        })
    }

    pub fn keys(&self) -> crate::keys::Keys {
        crate::keys::Keys::new(self.prefix.clone(), self.streams.fanout.shards)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[test]
    fn passwords_in_urls_are_redacted() {
        for (url, shown) in [
            ("redis://u:secret@h:1/", "redis://u:***@h:1/"),
            ("redis://:secret@h:1", "redis://:***@h:1"),
            (
                "redis+cluster://u:secret@a:1,b:2",
                "redis+cluster://u:***@a:1,b:2",
            ),
            (
                "mongodb://app:p%40ss@db:27017/?authSource=admin",
                "mongodb://app:***@db:27017/?authSource=admin",
            ),
            ("redis://h:1/", "redis://h:1/"),
            ("redis://user@h:1/", "redis://user@h:1/"),
            ("nonsense", "nonsense"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
        let src: HashMap<&str, &str> = [
            ("CHAT_REDIS_URL", "redis://u:secret@127.0.0.1:1/"),
            ("CHAT_MONGODB_URL", "mongodb://app:secret@db:27017/"),
        ]
        .into_iter()
        .collect();
        let mut s = Settings::new(&src);
        let common = Common::read(&mut s);
        let mongo = common.read_mongodb(&mut s, true).expect("mongodb settings");
        let shown = format!("{common:?} {mongo:?}");
        assert!(!shown.contains("secret"), "{shown}");
        assert!(shown.contains("u:***@127.0.0.1:1"), "{shown}");
    }

    fn read(pairs: &[(&str, &str)], required: bool) -> (Option<MongoSettings>, Vec<String>) {
        let src: HashMap<&str, &str> = pairs.iter().copied().collect();
        let mut s = Settings::new(&src);
        let common = Common::read(&mut s);
        let m = common.read_mongodb(&mut s, required);
        let errors = match s.finish() {
            Ok(()) => Vec::new(),
            Err(ConfigError::Invalid(e)) => e,
            Err(e) => vec![e.to_string()],
        };
        (m, errors)
    }

    #[test]
    fn mongodb_settings() {
        let (m, errors) = read(&[], false);
        assert!(
            m.is_none() && errors.is_empty(),
            "unset: the archive is off"
        );
        let (_, errors) = read(&[], true);
        assert!(errors.iter().any(|e| e.starts_with("CHAT_MONGODB_URL")));
        let (m, errors) = read(&[("CHAT_MONGODB_URL", "mongodb://db:27017/")], false);
        let m = m.expect("settings");
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(
            (m.database.as_str(), m.w.as_str(), m.journal),
            ("chat", "majority", true)
        );
        let (_, errors) = read(
            &[
                ("CHAT_MONGODB_URL", "http://db"),
                ("CHAT_MONGODB_DB", "a b"),
                ("CHAT_MONGODB_W", "most"),
                ("CHAT_MONGODB_TIMEOUT", "0s"),
            ],
            false,
        );
        for var in [
            "CHAT_MONGODB_URL",
            "CHAT_MONGODB_DB",
            "CHAT_MONGODB_W",
            "CHAT_MONGODB_TIMEOUT",
        ] {
            assert!(
                errors.iter().any(|e| e.starts_with(var)),
                "{var}: {errors:?}"
            );
        }
    }
}
