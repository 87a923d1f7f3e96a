//! Who may join or read a room: the token's `rooms` claim, else membership.

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
    if rooms_claim.is_some_and(|pats| pats.iter().any(|p| glob_match(p, room))) {
        return Ok(Access::Claim);
    }
    let mut conn = state.redis.clone();
    let member: bool =
        redis::AsyncCommands::sismember(&mut conn, state.keys.room_members(room), user)
            .await
            .map_err(|_| ErrorCode::Unavailable)?;
    Ok(if member {
        Access::Member
    } else {
        Access::Denied
    })
}
