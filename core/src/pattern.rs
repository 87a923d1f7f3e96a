//! Room names and the glob patterns (`prefix:*`, `*`) used by retention
//! policies and the JWT `rooms` claim.

/// `^[A-Za-z0-9_.:-]{1,128}$`
pub fn valid_room(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// Glob match where `*` matches any run of characters (including none).
pub fn glob_match(pattern: &str, name: &str) -> bool {
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
        assert!(glob_match("team:*", "team:eng"));
        assert!(glob_match("team:*", "team:"));
        assert!(!glob_match("team:*", "teams:eng"));
        assert!(glob_match("exact", "exact"));
        assert!(!glob_match("exact", "exactly"));
        assert!(glob_match("a*c", "abbbc"));
        assert!(!glob_match("a*c", "abbbd"));
    }
}
