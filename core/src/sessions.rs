//! Sessions as the auth server registers them (`PUT /v1/sessions/{sid}`)
//! and every node checks them: the record under `Keys::session`, the sid
//! rule, and revocation, which the API and `chatctl sessions revoke` share.

use crate::config::Settings;
use crate::control::Control;
use crate::keys::Keys;
use crate::redis_conn::Conn;
use std::time::Duration;

/// The value under a session's key: `user\nttl_secs`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionRecord<'a> {
    pub user: &'a str,
    /// The TTL it was registered with; active sessions slide by it.
    pub ttl_secs: u64,
}

impl<'a> SessionRecord<'a> {
    pub fn encode(&self) -> String {
        format!("{}\n{}", self.user, self.ttl_secs)
    }

    pub fn decode(v: &'a str) -> Option<Self> {
        let (user, ttl) = v.rsplit_once('\n')?;
        Some(Self {
            user,
            ttl_secs: ttl.parse().ok()?,
        })
    }
}

/// A session id the API and `chatctl` accept: 1-128 printable ASCII.
pub fn valid_sid(sid: &str) -> bool {
    !sid.is_empty() && sid.len() <= 128 && sid.bytes().all(|b| b.is_ascii_graphic())
}

/// `CHAT_REVOKED_SESSION_TTL`: how long a deleted session's tokens stay
/// refused (default 30 days, the longest a session may be registered for).
pub fn revoked_session_ttl(s: &mut Settings<'_>) -> Duration {
    let ttl = s.duration("CHAT_REVOKED_SESSION_TTL", Duration::from_secs(30 * 86_400));
    if ttl < Duration::from_secs(1) {
        s.error("CHAT_REVOKED_SESSION_TTL: must be at least 1s");
    }
    ttl
}

/// Deletes the session, leaves a tombstone so its tokens stay refused for
/// `tombstone_ttl` (in either session mode), and tells every node to close
/// its sockets (4003). Returns whether the session existed; its sockets are
/// told to close either way.
pub async fn revoke_session(
    conn: &mut Conn,
    keys: &Keys,
    sid: &str,
    tombstone_ttl: Duration,
) -> redis::RedisResult<bool> {
    let (deleted,): (u64,) = redis::pipe()
        .del(keys.session(sid))
        .set_ex(keys.session_revoked(sid), 1, tombstone_ttl.as_secs().max(1))
        .ignore()
        .publish(
            keys.control_channel(),
            Control::SessionRevoked { sid: sid.into() }.encode(),
        )
        .ignore()
        .query_async(conn)
        .await?;
    Ok(deleted > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_record_round_trips_and_junk_is_none() {
        let r = SessionRecord {
            user: "alice",
            ttl_secs: 3600,
        };
        assert_eq!(r.encode(), "alice\n3600");
        assert_eq!(SessionRecord::decode(&r.encode()), Some(r));
        for junk in ["", "alice", "alice\n", "alice\nsoon"] {
            assert_eq!(SessionRecord::decode(junk), None, "{junk:?}");
        }
    }

    #[test]
    fn sids() {
        assert!(valid_sid("a-1_B"));
        assert!(!valid_sid(""));
        assert!(!valid_sid("a b"));
        assert!(!valid_sid(&"x".repeat(129)));
    }
}
