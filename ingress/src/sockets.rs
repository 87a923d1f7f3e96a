//! Every socket this node holds, for what crosses rooms: session revocation
//! and expiry, membership withdrawal, and the drain at shutdown.

use crate::outbound::SocketHandle;
use chat_core::protocol::close;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

struct Entry {
    handle: SocketHandle,
    sid: Option<Arc<str>>,
    /// The session's TTL when it was found in Redis at auth: such sockets are
    /// swept (sliding expiry, closed when the session is gone).
    session_ttl: Option<u64>,
    /// Rooms joined on the strength of membership (not the token's claim).
    member_rooms: HashSet<Arc<str>>,
}

#[derive(Default)]
pub struct SocketRegistry {
    map: Mutex<HashMap<u64, Entry>>,
}

/// One session to check in a sweep.
pub struct SessionCheck {
    pub sid: Arc<str>,
    pub ttl: u64,
    /// Any of its sockets sent a frame since the last sweep.
    pub active: bool,
}

impl SocketRegistry {
    fn lock(&self) -> MutexGuard<'_, HashMap<u64, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn insert(&self, handle: SocketHandle, sid: Option<Arc<str>>, session_ttl: Option<u64>) {
        self.lock().insert(
            handle.id,
            Entry {
                handle,
                sid,
                session_ttl,
                member_rooms: HashSet::new(),
            },
        );
    }

    pub fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn set_member_room(&self, id: u64, room: &str, by_membership: bool) {
        if let Some(e) = self.lock().get_mut(&id) {
            if by_membership {
                e.member_rooms.insert(Arc::from(room));
            } else {
                e.member_rooms.remove(room);
            }
        }
    }

    /// A session was deleted: close its sockets 4003.
    pub fn revoke_session(&self, sid: &str) -> usize {
        let mut n = 0;
        for e in self.lock().values() {
            if e.sid.as_deref() == Some(sid) {
                e.handle.closer.close(close::REVOKED);
                n += 1;
            }
        }
        n
    }

    /// A user's membership was withdrawn: close the sockets that joined the
    /// room by membership 4003 (access withdrawn).
    pub fn withdraw(&self, room: &str, user: &str) -> usize {
        let mut n = 0;
        for e in self.lock().values() {
            if &*e.handle.user == user && e.member_rooms.contains(room) {
                e.handle.closer.close(close::REVOKED);
                n += 1;
            }
        }
        n
    }

    /// Sessions to check, each once, with activity since the last sweep.
    pub fn sessions(&self) -> Vec<SessionCheck> {
        let mut by_sid: HashMap<Arc<str>, SessionCheck> = HashMap::new();
        for e in self.lock().values() {
            let (Some(sid), Some(ttl)) = (&e.sid, e.session_ttl) else {
                continue;
            };
            let active = e.handle.active.swap(false, Ordering::AcqRel);
            by_sid
                .entry(sid.clone())
                .and_modify(|c| c.active |= active)
                .or_insert(SessionCheck {
                    sid: sid.clone(),
                    ttl,
                    active,
                });
        }
        by_sid.into_values().collect()
    }

    pub fn close_all(&self, code: u16) {
        for e in self.lock().values() {
            e.handle.closer.close(code);
        }
    }
}
