//! What a frame handler sees of its socket: the authenticated session's
//! state (user, rooms joined, token expiry), and replies to the client.

use crate::outbound::SocketHandle;
use crate::state::Shared;
use chat_core::protocol::{ErrorCode, ServerFrame};
use serde_json::Value;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

/// A joined room as the connection sees it.
pub struct JoinedRoom {
    pub epoch: String,
    /// Shared with the room's hub; cleared on leave so delivery stops at once.
    pub active: Arc<std::sync::atomic::AtomicBool>,
}

/// The authenticated socket's state, owned by its reader task and handed
/// to each frame's handler.
pub struct Session {
    pub state: Shared,
    pub socket: SocketHandle,
    pub sid: Option<Arc<str>>,
    pub exp: u64,
    pub rooms_claim: Option<Vec<String>>,
    pub joined: HashMap<String, JoinedRoom>,
    pub expiring_sent: bool,
}

impl Session {
    pub fn user(&self) -> &str {
        &self.socket.user
    }

    pub fn reply(&self, frame: &ServerFrame<'_>, reference: Option<&Value>) {
        self.socket.push(frame.to_json(reference).into());
    }

    pub fn error(&self, code: ErrorCode, message: &str, reference: Option<&Value>) {
        self.reply(&ServerFrame::Error { code, message }, reference);
    }

    /// Forgets rooms a hub removed this socket from (a deleted room): the hub
    /// has sent `left` and cleared the shared flag; the rest is done here,
    /// before the next frame is handled.
    pub async fn drop_removed_rooms(&mut self) {
        let gone: Vec<String> = self
            .joined
            .iter()
            .filter(|(_, j)| !j.active.load(Ordering::Acquire))
            .map(|(room, _)| room.clone())
            .collect();
        for room in gone {
            self.joined.remove(&room);
            self.state.hubs.leave(&room, self.socket.id);
            self.state
                .sockets
                .set_member_room(self.socket.id, &room, false);
            self.state.presence.left(&room, &self.socket.user).await;
        }
    }
}
