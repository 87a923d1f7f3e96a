//! How results are written: a line at a time to stdout, ending quietly when
//! the reader goes away (`chatctl rooms tail | head`), and the formats the
//! commands share.

use chat_core::protocol::{Message, ServerFrame};
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

/// Writes one line and flushes it, so a follower sees each at once. A closed
/// pipe ends the process with success: the reader has what it wanted.
pub fn line(s: &str) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    match writeln!(out, "{s}").and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => Err(e.into()),
    }
}

/// RFC 3339 UTC with milliseconds.
pub fn time(ms: u64) -> String {
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Control characters escaped, so one message stays one line.
pub fn one_line(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\\' => out.push_str("\\\\"),
            c if c.is_control() => out.push_str(&c.escape_unicode().to_string()),
            c => out.push(c),
        }
    }
    out
}

/// A message as a line: offset, time, user, kind, text; or, with `json`,
/// the contract's `message` frame.
pub fn message(m: &Message, json: bool) -> String {
    if json {
        ServerFrame::Message(m).to_json(None)
    } else {
        format!(
            "{:>6}  {}  {}  {}  {}",
            m.offset,
            time(m.ts),
            one_line(&m.user),
            m.kind.as_str(),
            one_line(&m.text)
        )
    }
}

/// A URL with its password hidden (`redis://user:***@host`).
pub use chat_core::config::redact_url;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_stays_on_one_line() {
        assert_eq!(one_line("a\nb\tc\\d\u{7}"), "a\\nb\\tc\\\\d\\u{7}");
    }

    #[test]
    fn credentials_are_hidden() {
        assert_eq!(redact_url("redis://u:secret@h:1/"), "redis://u:***@h:1/");
        assert_eq!(
            redact_url("redis+cluster://:pw@a:1,b:2"),
            "redis+cluster://:***@a:1,b:2"
        );
        assert_eq!(redact_url("redis://h:1/"), "redis://h:1/");
    }

    #[test]
    fn times_are_utc_with_milliseconds() {
        assert_eq!(time(1_700_000_000_123), "2023-11-14T22:13:20.123Z");
    }
}
