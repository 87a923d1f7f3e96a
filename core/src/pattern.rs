//! Room names and the glob patterns (`prefix:*`, `*`) used by retention
//! policies (streams.toml `[[rooms]] pattern`) and the JWT `rooms` claim.
//!
//! A pattern is matched against the whole room name, byte for byte; `*` is
//! its only special character. A `*` matches any run of room-name
//! characters, `:` included (so `team:*` matches `team:a:b:c`), except that
//! a `*` ending the pattern needs at least one character: `team:*` matches
//! `team:eng` but not `team:`, and `*` alone matches every room name (which
//! is never empty). A `*` anywhere else may match nothing (`a*c` matches
//! `ac`). A pattern without `*` matches only the room of that name.

/// `^[A-Za-z0-9_.:-]{1,128}$`
pub fn valid_room(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Whether `name` matches `pattern` (see the module doc): `*` matches any
/// run of characters, but a trailing `*` at least one.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        // `P*` with a non-empty run for the last `*` is `P*` with any run
        // for it, matched against the name without its last character.
        Some(_) => name
            .char_indices()
            .next_back()
            .is_some_and(|(last, _)| glob_any(pattern, &name[..last])),
        None => glob_any(pattern, name),
    }
}

/// Glob match where every `*` matches any run of characters (including none).
fn glob_any(pattern: &str, name: &str) -> bool {
    let (p, n) = (pattern.as_bytes(), name.as_bytes());
    let (mut pi, mut ni) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ni < n.len() {
        if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if pi < p.len() && p[pi] == n[ni] {
            pi += 1;
            ni += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'*')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn room_names() {
        assert!(valid_room("general"));
        assert!(valid_room("team:eng.backend-1_x"));
        assert!(!valid_room(""));
        assert!(!valid_room("has space"));
        assert!(!valid_room("{tag}"));
        assert!(!valid_room(&"a".repeat(129)));
        assert!(valid_room(&"a".repeat(128)));
        assert!(!valid_room("é"));
    }

    #[test]
    fn globs() {
        assert!(glob_match("*", "anything"));
        assert!(glob_match("*", "a"));
        assert!(glob_match("*", "a:b"));
        assert!(!glob_match("*", ""));
        assert!(glob_match("team:*", "team:eng"));
        assert!(glob_match("team:*", "team:e"));
        assert!(glob_match("team:*", "team:a:b:c"));
        assert!(!glob_match("team:*", "team:"));
        assert!(!glob_match("team:*", "team"));
        assert!(!glob_match("team:*", "teams:eng"));
        assert!(!glob_match("team:*", "xteam:eng"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(!glob_match("exact", "exac"));
        assert!(glob_match("a*c", "abbbc"));
        assert!(glob_match("a*c", "ac"));
        assert!(glob_match("a*c", "a:b:c"));
        assert!(!glob_match("a*c", "abbbd"));
        assert!(!glob_match("a*c", "abbbcd"));
    }

    #[test]
    fn only_a_trailing_star_needs_a_character() {
        assert!(glob_match("*:eng", ":eng"));
        assert!(glob_match("*:eng", "team:eng"));
        assert!(glob_match("a*b*", "abx"));
        assert!(glob_match("a*b*", "axbx"));
        assert!(!glob_match("a*b*", "ab"));
        assert!(!glob_match("a*b*", "axb"));
        // `**` at the end: together they still need one character.
        assert!(glob_match("team:**", "team:x"));
        assert!(!glob_match("team:**", "team:"));
        assert!(!glob_match("", "a"));
        assert!(glob_match("", ""));
        // Non-ASCII (a claim may hold anything): one character, not one byte.
        assert!(glob_match("x*", "xé"));
        assert!(!glob_match("x*", "x"));
    }
}
