//! Room moderation (docs/protocol.md, "Moderation"): roles, mutes, bans
//! and slow mode. Every action is also a `system` message in the room, so
//! it is delivered, recovered and archived like the rest.

use crate::append::{Entry, store_and_deliver};
use crate::state::AppState;
use chat_core::control::Control;
use chat_core::protocol::{Ack, ErrorCode, Kind, ModAction, Notice, Refusal};
use chat_core::scripts::{Checks, Op};

/// A user's role in a room; ordered, so that staff act only on those below.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Member,
    Moderator,
    Owner,
}

impl Role {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "member" => Some(Self::Member),
            "moderator" => Some(Self::Moderator),
            "owner" => Some(Self::Owner),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Moderator => "moderator",
            Self::Owner => "owner",
        }
    }

    pub fn is_staff(self) -> bool {
        self >= Self::Moderator
    }
}

fn unavailable(e: redis::RedisError) -> Refusal {
    tracing::warn!(error = %e, "moderation: redis error");
    Refusal::new(ErrorCode::Unavailable, "could not read the room's roles")
}

/// `user`'s role in `room` (a member unless the roles hash says otherwise).
pub async fn role(state: &AppState, room: &str, user: &str) -> Result<Role, Refusal> {
    let mut conn = state.redis.clone();
    let r: Option<String> =
        redis::AsyncCommands::hget(&mut conn, state.keys.room_roles(room), user)
            .await
            .map_err(unavailable)?;
    Ok(r.as_deref().and_then(Role::parse).unwrap_or(Role::Member))
}

/// The checks a user's own append makes: their mute, and the room's slow
/// mode unless `staff`.
pub fn checks(state: &AppState, room: &str, staff: bool) -> Checks {
    Checks {
        mute: true,
        slow_mode: if staff {
            None
        } else {
            state.settings.common.streams.retention(room).slow_mode
        },
    }
}

/// The `system` message recording `m`, stored as by `m.by`.
async fn notice(state: &AppState, room: &str, m: &Notice, text: &str) -> Result<Ack, Refusal> {
    let action = serde_json::to_string(m).unwrap_or_default();
    let client_id = format!("mod-{:016x}", rand::random::<u64>());
    let e = Entry {
        op: Op::Notice { action: &action },
        ..Entry::message(room, &m.by, text, &client_id, Kind::System)
    };
    store_and_deliver(state, &e).await
}

/// Mutes, bans or lifts either: `by` is a user with a role above
/// `user`'s, or `None` for the admin API. A ban takes the user's sockets
/// out of the room on every node and refuses their joins until it ends.
pub async fn sanction(
    state: &AppState,
    room: &str,
    by: Option<&str>,
    user: &str,
    action: ModAction,
    duration_secs: Option<u64>,
) -> Result<Ack, Refusal> {
    if let Some(by) = by {
        let mine = role(state, room, by).await?;
        if !mine.is_staff() {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "only the room's owners and moderators moderate",
            ));
        }
        if role(state, room, user).await? >= mine {
            return Err(Refusal::new(
                ErrorCode::Forbidden,
                "staff act only on users with a lower role",
            ));
        }
    }
    let until =
        duration_secs.map(|d| chat_core::clock::now_ms().saturating_add(d.saturating_mul(1000)));
    let key = state.keys.room_sanctions(room);
    let field = match action {
        ModAction::Mute | ModAction::Unmute => format!("m:{user}"),
        ModAction::Ban | ModAction::Unban => format!("b:{user}"),
    };
    let mut conn = state.redis.clone();
    let mut pipe = redis::pipe();
    match action {
        ModAction::Mute | ModAction::Ban => pipe.hset(&key, &field, until.unwrap_or(0)).ignore(),
        ModAction::Unmute | ModAction::Unban => pipe.hdel(&key, &field).ignore(),
    };
    let _: () = pipe.query_async(&mut conn).await.map_err(unavailable)?;
    let by = by.unwrap_or("system");
    let m = Notice {
        action: action.as_str().to_owned(),
        user: user.to_owned(),
        by: by.to_owned(),
        until,
        role: None,
    };
    let done = match action {
        ModAction::Mute => "muted",
        ModAction::Unmute => "unmuted",
        ModAction::Ban => "banned",
        ModAction::Unban => "unbanned",
    };
    let span = duration_secs
        .map(|d| format!(" for {d} s"))
        .unwrap_or_default();
    tracing::info!(room, user, by, action = action.as_str(), "moderation");
    let ack = notice(state, room, &m, &format!("{user} was {done} by {by}{span}")).await?;
    if action == ModAction::Ban {
        // Every node takes the user out, after delivering the notice.
        let _: () = redis::AsyncCommands::publish(
            &mut conn,
            state.keys.control_channel(),
            Control::Banned {
                room: room.into(),
                user: user.into(),
                offset: ack.offset,
                epoch: ack.epoch.as_str().into(),
            }
            .encode(),
        )
        .await
        .map_err(unavailable)?;
    }
    Ok(ack)
}

/// Sets `user`'s role (the admin API), with its `system` message.
pub async fn set_role(state: &AppState, room: &str, user: &str, r: Role) -> Result<Ack, Refusal> {
    let key = state.keys.room_roles(room);
    let mut conn = state.redis.clone();
    let mut pipe = redis::pipe();
    match r {
        Role::Member => pipe.hdel(&key, user).ignore(),
        staff => pipe.hset(&key, user, staff.as_str()).ignore(),
    };
    let _: () = pipe.query_async(&mut conn).await.map_err(unavailable)?;
    let m = Notice {
        action: "role".to_owned(),
        user: user.to_owned(),
        by: "system".to_owned(),
        until: None,
        role: Some(r.as_str().to_owned()),
    };
    notice(
        state,
        room,
        &m,
        &format!("{user} is now a {} of the room", r.as_str()),
    )
    .await
}

/// A user's first join of a room whose policy has `join_notices`: a
/// `system` message (notice `join`). Returns whether one was stored.
pub async fn join_notice(state: &AppState, room: &str, user: &str) -> Result<bool, Refusal> {
    let mut conn = state.redis.clone();
    let ttl = state.settings.common.streams.retention(room).ttl;
    let (added,): (i64,) = redis::pipe()
        .sadd(state.keys.room_joined(room), user)
        .expire(state.keys.room_joined(room), ttl.as_secs().max(1) as i64)
        .ignore()
        .query_async(&mut conn)
        .await
        .map_err(unavailable)?;
    if added == 0 {
        return Ok(false);
    }
    let m = Notice {
        action: "join".to_owned(),
        user: user.to_owned(),
        by: user.to_owned(),
        until: None,
        role: None,
    };
    notice(state, room, &m, &format!("{user} joined")).await?;
    Ok(true)
}

/// Whether `user` is banned from `room` now, from the sanctions field read.
pub fn banned_now(until: Option<u64>) -> bool {
    until.is_some_and(|u| u == 0 || u > chat_core::clock::now_ms())
}
