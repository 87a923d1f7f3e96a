//! The tracing subscriber, set up in one place. `RUST_LOG` filters; tests stay
//! quiet unless `TEST_LOG` is set.
//!
//! `CHAT_LOG_FORMAT=json` writes one JSON object per line: `timestamp`,
//! `level`, `target`, `service`, `node`, the message and the event's fields,
//! and the fields of every span it happened in (so `room`, `user` and
//! `socket` sit at the top level, where a log pipeline indexes them).
//! Otherwise lines are text, coloured only when stdout is a terminal.
//! `node` is `CHAT_NODE_ID` (the ingress names its presence entries by it
//! too), else the host name.

use std::io::IsTerminal;
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::{JsonFields, Writer};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, FormattedFields};
use tracing_subscriber::registry::LookupSpan;

/// Sets up logging for `service` (`RUST_LOG` or `default_filter`).
pub fn init(default_filter: &str) {
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let json = std::env::var("CHAT_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    if json {
        let format = FlatJson {
            service: service_name(),
            node: node_name(),
        };
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .fmt_fields(JsonFields::new())
            .event_format(format)
            .try_init();
    } else {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_ansi(std::io::stdout().is_terminal())
            .try_init();
    }
}

/// For tests: logs only when `TEST_LOG` is set.
pub fn init_for_tests() {
    if std::env::var_os("TEST_LOG").is_some() {
        init("info");
    }
}

fn service_name() -> String {
    std::env::args()
        .next()
        .and_then(|a| {
            let name = std::path::Path::new(&a).file_name()?.to_str()?.to_owned();
            Some(name)
        })
        .unwrap_or_default()
}

fn node_name() -> String {
    let named = std::env::var("CHAT_NODE_ID").ok().filter(|n| !n.is_empty());
    named
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|n| n.trim().to_owned())
        .unwrap_or_default()
}

/// One flat JSON object per event (tracing-subscriber's own JSON nests the
/// span fields under `span` and `spans`).
struct FlatJson {
    service: String,
    node: String,
}

impl<S, N> FormatEvent<S, N> for FlatJson
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> std::fmt::Result {
        use serde_json::{Map, Value};
        let mut obj = Map::new();
        let now = humantime::format_rfc3339_micros(std::time::SystemTime::now());
        obj.insert("timestamp".into(), Value::String(now.to_string()));
        let meta = event.metadata();
        obj.insert("level".into(), Value::String(meta.level().to_string()));
        obj.insert("target".into(), Value::String(meta.target().to_owned()));
        obj.insert("service".into(), Value::String(self.service.clone()));
        obj.insert("node".into(), Value::String(self.node.clone()));
        if let Some(scope) = ctx.event_scope() {
            let mut names = Vec::new();
            for span in scope.from_root() {
                names.push(span.name());
                let ext = span.extensions();
                let Some(fields) = ext.get::<FormattedFields<N>>() else {
                    continue;
                };
                if let Ok(Value::Object(m)) = serde_json::from_str::<Value>(fields) {
                    obj.extend(m);
                }
            }
            if !names.is_empty() {
                obj.insert("span".into(), Value::String(names.join(":")));
            }
        }
        let mut fields = FieldsToJson(Map::new());
        event.record(&mut fields);
        obj.extend(fields.0);
        writeln!(writer, "{}", Value::Object(obj))
    }
}

struct FieldsToJson(serde_json::Map<String, serde_json::Value>);

impl Visit for FieldsToJson {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let v = serde_json::Value::String(format!("{value:?}"));
        self.0.insert(field.name().to_owned(), v);
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), value.into());
    }

    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), value.into());
    }
}
