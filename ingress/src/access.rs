//! Who may join or read a room: the token's `rooms` claim, else membership;
//! never a user banned from it.

use crate::state::AppState;
use chat_core::pattern::glob_match;
use chat_core::protocol::ErrorCode;

#[derive(Debug, PartialEq, Eq)]
pub enum Access {
    /// The token's `rooms` claim allows it.
    Claim,
    /// The user is a member (admin API).
    Member,
    Denied,
}

pub async fn authorize(
    state: &AppState,
    rooms_claim: Option<&[String]>,
    user: &str,
    room: &str,
) -> Result<Access, ErrorCode> {
    let mut conn = state.redis.clone();
    let (member, ban): (bool, Option<u64>) = redis::pipe()
        .sismember(state.keys.room_members(room), user)
        .hget(state.keys.room_sanctions(room), format!("b:{user}"))
        .query_async(&mut conn)
        .await
        .map_err(|_| ErrorCode::Unavailable)?;
    Ok(if crate::moderation::banned_now(ban) {
        Access::Denied
    } else if rooms_claim.is_some_and(|pats| pats.iter().any(|p| glob_match(p, room))) {
        Access::Claim
    } else if member {
        Access::Member
    } else {
        Access::Denied
    })
}
