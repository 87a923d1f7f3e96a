//! `chatctl config check`: reads the configuration the way each service
//! does at start (`CHAT_*` over `CHAT_CONFIG`, and streams.toml) and prints
//! every problem, a line each naming its field, instead of the first one a
//! service would stop at. A variable no service reads is a warning (a typo
//! is otherwise silent).

use crate::output::redact_url;
use chat_core::config::{ConfigError, StreamsConfig, Strings, load_strings};
use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::path::PathBuf;

/// Variables read outside the services' settings: `chatctl`'s own, the
/// config file's name, and test switches.
const NOT_SERVICE_SETTINGS: &[&str] = &[
    "CHAT_CONFIG",
    "CHAT_URL",
    "CHAT_API_KEY",
    "CHAT_TEST_REDIS",
    "CHAT_TEST_CLUSTER",
    "CHAT_NX_27017",
];

/// The settings source, remembering which keys were asked for.
struct Recording<'a> {
    inner: &'a HashMap<String, String>,
    asked: RefCell<BTreeSet<String>>,
}

impl Strings for Recording<'_> {
    fn get(&self, key: &str) -> Option<String> {
        self.asked.borrow_mut().insert(key.to_owned());
        self.inner.get(key).cloned()
    }
}

/// One problem, and which services would stop on it.
struct Problem {
    message: String,
    services: Vec<&'static str>,
}

type Check = fn(&dyn Strings) -> Result<String, ConfigError>;

/// Returns whether the configuration is valid.
pub fn run() -> bool {
    let strings = match load_strings() {
        Ok(s) => s,
        Err(e) => {
            println!("error: {e}");
            println!("1 error");
            return false;
        }
    };
    let source = Recording {
        inner: &strings,
        asked: RefCell::new(BTreeSet::new()),
    };
    let mut errors = 0;

    let (streams_path, streams_errors) = check_streams(&strings);
    let shown = streams_path
        .as_ref()
        .map_or("built-in defaults".to_owned(), |p| p.display().to_string());
    if streams_errors.is_empty() {
        println!("streams: ok ({shown})");
    } else {
        println!("streams: {shown}");
        for e in &streams_errors {
            println!("  error: {}", indent(e));
        }
        errors += streams_errors.len();
    }

    let mut checks: Vec<(&'static str, Check)> = vec![
        ("ingress", ingress),
        ("fanout-worker", fanout),
        ("notifier-worker", notifier),
        ("summarizer-worker", summarizer),
    ];
    // The archive runs only with a MongoDB to write to.
    let archive_on = strings
        .get("CHAT_MONGODB_URL")
        .is_some_and(|u| !u.trim().is_empty());
    if archive_on {
        checks.push(("archive-worker", archive));
    }
    // The webhook worker runs only with endpoints to deliver to.
    let webhooks_on = streams_path
        .as_deref()
        .and_then(|p| chat_core::config::StreamsConfig::load(p).ok())
        .is_some_and(|c| !c.webhooks.endpoints.is_empty());
    if webhooks_on {
        checks.push(("webhook-worker", webhook));
    }
    let mut problems: Vec<Problem> = Vec::new();
    let mut status = Vec::new();
    for (service, check) in checks {
        let result = check(&source);
        status.push(match &result {
            Ok(summary) => format!("{service}: ok ({summary})"),
            Err(_) => format!("{service}: would not start"),
        });
        match result {
            Ok(_) => {}
            Err(ConfigError::Invalid(list)) => {
                for message in list {
                    // Reported above, a line per field.
                    if message.starts_with("CHAT_STREAMS: ")
                        || message.starts_with("streams.toml: ")
                    {
                        continue;
                    }
                    match problems.iter_mut().find(|p| p.message == message) {
                        Some(p) => p.services.push(service),
                        None => problems.push(Problem {
                            message,
                            services: vec![service],
                        }),
                    }
                }
            }
            Err(other) => problems.push(Problem {
                message: other.to_string(),
                services: vec![service],
            }),
        }
    }
    if let Some(listen) = source
        .get("CHAT_METRICS_LISTEN")
        .filter(|v| !v.trim().is_empty())
        && listen.trim().parse::<std::net::SocketAddr>().is_err()
    {
        problems.push(Problem {
            message: format!(
                "CHAT_METRICS_LISTEN={listen:?}: expected host:port, e.g. 0.0.0.0:9100"
            ),
            services: vec!["workers"],
        });
    }
    println!(
        "environment{}:",
        match std::env::var("CHAT_CONFIG") {
            Ok(p) => format!(" (CHAT_* over {p})"),
            Err(_) => " (CHAT_*)".to_owned(),
        }
    );
    for p in &problems {
        println!(
            "  error: {}  [{}]",
            indent(&p.message),
            p.services.join(", ")
        );
    }
    errors += problems.len();
    let asked = source.asked.borrow();
    let mut unread: Vec<&String> = strings
        .keys()
        .filter(|k| !asked.contains(*k) && !NOT_SERVICE_SETTINGS.contains(&k.as_str()))
        .collect();
    unread.sort();
    for k in &unread {
        println!("  warning: {k} is set but no service reads it with this configuration (a typo?)");
    }
    if problems.is_empty() && unread.is_empty() {
        println!("  ok");
    }
    println!("services:");
    for line in &status {
        println!("  {line}");
    }
    if !archive_on {
        println!("  archive-worker: off (CHAT_MONGODB_URL unset)");
    }
    if !webhooks_on {
        println!("  webhook-worker: off (no [[webhooks.endpoints]] in streams.toml)");
    }
    if errors == 0 {
        println!("configuration ok");
        true
    } else {
        println!(
            "{errors} error{}: the services would not start",
            if errors == 1 { "" } else { "s" }
        );
        false
    }
}

/// The policy file the services would read, and every bad field in it.
fn check_streams(strings: &HashMap<String, String>) -> (Option<PathBuf>, Vec<String>) {
    let path = match strings.get("CHAT_STREAMS").filter(|p| !p.trim().is_empty()) {
        Some(p) => PathBuf::from(p),
        None if std::path::Path::new("streams.toml").exists() => PathBuf::from("streams.toml"),
        None => return (None, Vec::new()),
    };
    let errors = match std::fs::read_to_string(&path) {
        Err(e) => vec![format!("CHAT_STREAMS: cannot read {}: {e}", path.display())],
        Ok(text) => match StreamsConfig::validate(&text) {
            Ok(_) => Vec::new(),
            Err(errors) => errors,
        },
    };
    (Some(path), errors)
}

fn ingress(src: &dyn Strings) -> Result<String, ConfigError> {
    let s = chat_core::settings::ingress::IngressSettings::from_strings(src)?;
    let streams = &s.common.streams;
    Ok(format!(
        "listen {}, redis {}, prefix {}, {} fanout shards, {} room pattern{}, sessions {}, {} api key{}, archive {}",
        s.listen,
        redact_url(&s.common.redis_url),
        s.common.prefix,
        streams.fanout.shards,
        streams.rooms.len(),
        if streams.rooms.len() == 1 { "" } else { "s" },
        if s.require_session {
            "required"
        } else {
            "optional"
        },
        s.api_keys.len(),
        if s.api_keys.len() == 1 { "" } else { "s" },
        if s.mongodb.is_some() { "on" } else { "off" },
    ))
}

fn fanout(src: &dyn Strings) -> Result<String, ConfigError> {
    let s = chat_core::settings::fanout::FanoutSettings::from_strings(src)?;
    let f = &s.common.streams.fanout;
    Ok(format!(
        "group {}, max_deliveries {}, dead letters in {}",
        f.group,
        f.max_deliveries,
        s.common.keys().dead_letter(&f.group)
    ))
}

fn notifier(src: &dyn Strings) -> Result<String, ConfigError> {
    let s = chat_core::settings::notifier::NotifierSettings::from_strings(src)?;
    Ok(match &s.fcm {
        Some(f) => format!("FCM project {}", f.account.project_id),
        None => "dry run: no CHAT_FCM_SERVICE_ACCOUNT".to_owned(),
    })
}

fn summarizer(src: &dyn Strings) -> Result<String, ConfigError> {
    let s = chat_core::settings::summarizer::SummarizerSettings::from_strings(src)?;
    let own = src
        .get("CHAT_JOBS_REDIS_URL")
        .is_some_and(|v| !v.trim().is_empty());
    Ok(format!(
        "{}, job queue {}{}",
        match &s.gemini {
            Some(g) => format!("Gemini {}", g.model),
            None => "extractive: no CHAT_GEMINI_API_KEY".to_owned(),
        },
        redact_url(&s.jobs_redis_url),
        if own {
            ""
        } else {
            " (CHAT_JOBS_REDIS_URL inherited from CHAT_REDIS_URL)"
        }
    ))
}

fn webhook(src: &dyn Strings) -> Result<String, ConfigError> {
    let s = chat_core::settings::webhook::WebhookSettings::from_strings(src)?;
    let names: Vec<&str> = s
        .common
        .streams
        .webhooks
        .endpoints
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    Ok(format!("endpoints {}", names.join(", ")))
}

fn archive(src: &dyn Strings) -> Result<String, ConfigError> {
    let s = chat_core::settings::archive::ArchiveSettings::from_strings(src)?;
    Ok(format!(
        "mongodb {}, database {}",
        redact_url(&s.mongodb.url),
        s.mongodb.database
    ))
}

/// A multi-line message (a TOML parse error) kept under its `error:`.
fn indent(message: &str) -> String {
    message.trim_end().replace('\n', "\n      ")
}
