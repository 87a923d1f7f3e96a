//! Service settings from `CHAT_*` variables, over an optional TOML file named
//! by `CHAT_CONFIG` (keys without the prefix, lower case: `redis_url = ...`).
//! The environment wins. Every bad value is reported, each naming its field,
//! before the service starts anything.

use super::{ConfigError, parse_duration};
use std::collections::HashMap;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// A source of settings; tests pass a map instead of touching the process
/// environment (unsafe to mutate in edition 2024 and racy across tests).
pub trait Strings {
    fn get(&self, key: &str) -> Option<String>;
}

impl Strings for HashMap<String, String> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).cloned()
    }
}

impl Strings for HashMap<&str, &str> {
    fn get(&self, key: &str) -> Option<String> {
        HashMap::get(self, key).map(|s| (*s).to_owned())
    }
}

/// The process environment layered over `CHAT_CONFIG`'s file.
pub fn load_strings() -> Result<HashMap<String, String>, ConfigError> {
    let file = std::env::var("CHAT_CONFIG").ok();
    merge_strings(file.as_deref().map(Path::new), std::env::vars())
}

/// The config file's values, then every `CHAT_*` of `env` over them: the
/// environment wins.
fn merge_strings(
    file: Option<&Path>,
    env: impl Iterator<Item = (String, String)>,
) -> Result<HashMap<String, String>, ConfigError> {
    let mut out = HashMap::new();
    if let Some(path) = file {
        out.extend(read_settings_file(path)?);
    }
    out.extend(env.filter(|(k, _)| k.starts_with("CHAT_")));
    Ok(out)
}

fn read_settings_file(path: &Path) -> Result<HashMap<String, String>, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_owned(),
        source,
    })?;
    let table: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })?;
    let mut out = HashMap::new();
    for (k, v) in table {
        let value = match v {
            toml::Value::String(s) => s,
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            toml::Value::Array(items) => items
                .iter()
                .map(|i| match i {
                    toml::Value::String(s) => s.clone(),
                    toml::Value::Integer(i) => i.to_string(),
                    toml::Value::Float(f) => f.to_string(),
                    toml::Value::Boolean(b) => b.to_string(),
                    _ => String::new(),
                })
                .collect::<Vec<_>>()
                .join(","),
            toml::Value::Datetime(_) | toml::Value::Table(_) => {
                return Err(ConfigError::Parse {
                    path: path.to_owned(),
                    message: format!("{k}: expected a string, number, boolean or list"),
                });
            }
        };
        out.insert(format!("CHAT_{}", k.to_ascii_uppercase()), value);
    }
    Ok(out)
}

/// Reads typed values, collecting every error instead of stopping at the first.
pub struct Settings<'a> {
    src: &'a dyn Strings,
    errors: Vec<String>,
}

impl<'a> Settings<'a> {
    pub fn new(src: &'a dyn Strings) -> Self {
        Self {
            src,
            errors: Vec::new(),
        }
    }

    /// A non-empty value, or `None`.
    pub fn opt(&self, key: &str) -> Option<String> {
        self.src.get(key).filter(|v| !v.trim().is_empty())
    }

    pub fn string(&self, key: &str, default: &str) -> String {
        self.opt(key).unwrap_or_else(|| default.to_owned())
    }

    pub fn parse<T: FromStr>(&mut self, key: &str, default: T) -> T
    where
        T::Err: std::fmt::Display,
    {
        match self.opt(key) {
            None => default,
            Some(v) => match v.trim().parse() {
                Ok(t) => t,
                Err(e) => {
                    self.errors.push(format!("{key}={v:?}: {e}"));
                    default
                }
            },
        }
    }

    pub fn bool(&mut self, key: &str, default: bool) -> bool {
        match self.opt(key).map(|v| v.trim().to_ascii_lowercase()) {
            None => default,
            Some(v) if matches!(v.as_str(), "1" | "true" | "yes" | "on") => true,
            Some(v) if matches!(v.as_str(), "0" | "false" | "no" | "off") => false,
            Some(v) => {
                self.errors
                    .push(format!("{key}={v:?}: expected true or false"));
                default
            }
        }
    }

    pub fn duration(&mut self, key: &str, default: Duration) -> Duration {
        match self.opt(key) {
            None => default,
            Some(v) => match parse_duration(&v) {
                Ok(d) => d,
                Err(e) => {
                    self.errors.push(format!("{key}={v:?}: {e}"));
                    default
                }
            },
        }
    }

    /// Comma-separated, trimmed, empty items dropped.
    pub fn list(&self, key: &str) -> Vec<String> {
        self.opt(key)
            .map(|v| {
                v.split(',')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Records a problem found by the caller's own validation.
    pub fn error(&mut self, message: impl Into<String>) {
        self.errors.push(message.into());
    }

    pub fn finish(self) -> Result<(), ConfigError> {
        if self.errors.is_empty() {
            Ok(())
        } else {
            Err(ConfigError::Invalid(self.errors))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_every_bad_field() {
        let src: HashMap<&str, &str> = [
            ("CHAT_A", "x"),
            ("CHAT_B", "maybe"),
            ("CHAT_C", "3 parsecs"),
            ("CHAT_D", "42"),
        ]
        .into();
        let mut s = Settings::new(&src);
        let _: u32 = s.parse("CHAT_A", 1);
        s.bool("CHAT_B", false);
        s.duration("CHAT_C", Duration::ZERO);
        let d: u32 = s.parse("CHAT_D", 1);
        assert_eq!(d, 42);
        let Err(ConfigError::Invalid(errs)) = s.finish() else {
            panic!("expected errors")
        };
        assert_eq!(errs.len(), 3);
        assert!(errs[0].starts_with("CHAT_A"));
        assert!(errs[1].starts_with("CHAT_B"));
        assert!(errs[2].starts_with("CHAT_C"));
    }

    #[test]
    fn file_values_are_overridden_by_environment_keys() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("chat.toml");
        std::fs::write(
            &path,
            "redis_url = \"redis://file\"\napi_keys = [\"a\", \"b\"]\nport = 9\n",
        )
        .expect("write");
        let env = [
            ("CHAT_REDIS_URL", "redis://env"),
            ("CHAT_PREFIX", "envonly"),
            ("HOME", "/not/ours"),
        ]
        .map(|(k, v)| (k.to_owned(), v.to_owned()));
        let merged = merge_strings(Some(&path), env.into_iter()).expect("parse");
        assert_eq!(
            merged["CHAT_REDIS_URL"], "redis://env",
            "the environment wins"
        );
        assert_eq!(merged["CHAT_API_KEYS"], "a,b");
        assert_eq!(merged["CHAT_PORT"], "9");
        assert_eq!(merged["CHAT_PREFIX"], "envonly");
        assert!(!merged.contains_key("HOME"), "only CHAT_* is read");
    }
}
