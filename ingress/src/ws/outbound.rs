//! What a socket's writer receives, and how anyone closes a socket.
//!
//! Every producer (the connection's own replies, room hubs, the session
//! sweeper) pushes with `try_send` into one bounded queue per socket: a full
//! queue means the reader on the other end is too slow, and the socket is
//! closed 4008 instead of letting memory grow.

use axum::extract::ws::Utf8Bytes;
use chat_core::protocol::close;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, Ordering};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// What the writer is asked to write.
#[derive(Debug)]
pub enum Out {
    /// A frame; `Utf8Bytes` clones share one buffer, so a message fanned out
    /// to many sockets is serialized once.
    Frame(Utf8Bytes),
    /// Messages `from..=to` of a room, read from the room stream by the
    /// writer itself in chunks: a long recovery streams with the socket's own
    /// backpressure instead of flooding the queue or memory.
    Replay(Box<Replay>),
}

#[derive(Debug)]
pub struct Replay {
    pub room: Arc<str>,
    pub epoch: String,
    pub from: u64,
    pub to: u64,
}

/// Closes a socket once, with the first code asked for.
#[derive(Clone, Debug, Default)]
pub struct Closer(Arc<CloserInner>);

#[derive(Debug, Default)]
struct CloserInner {
    token: CancellationToken,
    code: AtomicU16,
}

impl Closer {
    pub fn close(&self, code: u16) {
        if self
            .0
            .code
            .compare_exchange(0, code, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            self.0.token.cancel();
        }
    }

    pub fn code(&self) -> u16 {
        self.0.code.load(Ordering::Acquire)
    }

    pub fn is_closed(&self) -> bool {
        self.code() != 0
    }

    pub async fn closed(&self) {
        self.0.token.cancelled().await
    }
}

/// The reason text sent with a close code.
pub fn close_reason(code: u16) -> &'static str {
    match code {
        close::GOING_AWAY => "server going away",
        close::UNSUPPORTED => "binary frames are not supported",
        close::TOO_LARGE => "frame too large",
        close::UNAUTHENTICATED => "unauthenticated",
        close::REVOKED => "session revoked",
        close::POLICY => "policy violation",
        _ => "",
    }
}

/// How hubs and the session machinery reach one socket.
#[derive(Clone, Debug)]
pub struct SocketHandle {
    pub id: u64,
    pub user: Arc<str>,
    tx: mpsc::Sender<Out>,
    pub closer: Closer,
    /// Set by any client frame; read (and cleared) by the session sweeper.
    pub active: Arc<AtomicBool>,
    /// A hub removed this socket from a room (deleted): the reader forgets it.
    pub removed: Arc<tokio::sync::Notify>,
}

impl SocketHandle {
    pub fn new(id: u64, user: Arc<str>, tx: mpsc::Sender<Out>, closer: Closer) -> Self {
        Self {
            id,
            user,
            tx,
            closer,
            active: Arc::new(AtomicBool::new(true)),
            removed: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// Queues a frame; a full queue closes the socket 4008 (slow consumer).
    pub fn push(&self, frame: Utf8Bytes) -> bool {
        self.push_out(Out::Frame(frame))
    }

    pub fn push_out(&self, out: Out) -> bool {
        match self.tx.try_send(out) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                metrics::counter!("chat_slow_consumers_total").increment(1);
                tracing::warn!(user = %self.user, socket = self.id, "slow consumer, closing 4008");
                self.closer.close(close::POLICY);
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        }
    }
}
