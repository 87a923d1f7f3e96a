//! What a socket's writer receives, and how anyone closes a socket.
//!
//! Every producer (the connection's own replies, room hubs, the session
//! sweeper) pushes with `try_send` into one queue per socket, bounded in
//! frames and in bytes (counted until the writer has handed them to the
//! kernel): a full queue means the reader on the other end is too slow, and
//! the socket is closed 4008 instead of letting memory grow.

use axum::extract::ws::Utf8Bytes;
use chat_core::protocol::close;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU16, AtomicUsize, Ordering};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// A message's frame, as every socket receives it (live or replayed).
pub fn message_frame(m: &chat_core::protocol::Message) -> Utf8Bytes {
    chat_core::protocol::ServerFrame::Message(m)
        .to_json(None)
        .into()
}

/// What the writer is asked to write.
#[derive(Debug)]
pub enum Out {
    /// A frame; `Utf8Bytes` clones share one buffer, so a message fanned out
    /// to many sockets is serialized once.
    Frame(Utf8Bytes),
    /// A live message from a room hub, with the times its hops are measured from.
    Live(Utf8Bytes, crate::hops::Stamp),
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

/// Frames below this size are not counted in bytes: the frame bound alone
/// keeps them under 1,024 × 4 KiB, and most are live messages whose buffer
/// every recipient shares. Counting only the large ones (history pages, big
/// messages) keeps an atomic add off the common delivery.
const COUNTED_FROM: usize = 4096;

impl Out {
    /// What it holds in memory while queued and counts against the byte
    /// bound (a replay is read later, in chunks).
    fn bytes(&self) -> usize {
        match self {
            Out::Frame(f) | Out::Live(f, _) if f.len() >= COUNTED_FROM => f.len(),
            _ => 0,
        }
    }
}

/// The producers' end of a socket's queue.
#[derive(Clone, Debug)]
pub struct Outbound {
    tx: mpsc::Sender<Out>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The writer's end.
pub struct Inbox {
    rx: mpsc::Receiver<Out>,
    queued: Arc<AtomicUsize>,
    /// The live frames of the batch being written, timed when its flush is
    /// done (empty, and unallocated, on a socket that gets no live messages).
    pub stamps: Vec<crate::hops::Stamp>,
}

pub enum Refused {
    /// Over the frame or byte bound: the peer does not keep up.
    Full,
    /// The writer is gone.
    Closed,
}

impl Outbound {
    pub fn channel(frames: usize, max_bytes: usize) -> (Self, Inbox) {
        let (tx, rx) = mpsc::channel(frames);
        let queued = Arc::new(AtomicUsize::new(0));
        (
            Self {
                tx,
                queued: queued.clone(),
                max_bytes,
            },
            Inbox {
                rx,
                queued,
                stamps: Vec::new(),
            },
        )
    }

    /// Bytes queued and not yet written.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    pub fn max_bytes(&self) -> usize {
        self.max_bytes
    }

    pub fn try_push(&self, out: Out) -> Result<(), Refused> {
        let n = out.bytes();
        if n > 0 && self.queued.fetch_add(n, Ordering::Relaxed) + n > self.max_bytes {
            self.queued.fetch_sub(n, Ordering::Relaxed);
            return Err(Refused::Full);
        }
        self.tx.try_send(out).map_err(|e| {
            if n > 0 {
                self.queued.fetch_sub(n, Ordering::Relaxed);
            }
            match e {
                mpsc::error::TrySendError::Full(_) => Refused::Full,
                mpsc::error::TrySendError::Closed(_) => Refused::Closed,
            }
        })
    }
}

impl Inbox {
    pub async fn recv(&mut self) -> Option<Out> {
        self.rx.recv().await
    }

    pub fn try_recv(&mut self) -> Option<Out> {
        self.rx.try_recv().ok()
    }

    /// What `out` held, now written: no longer counted against the socket.
    pub fn written(&self, bytes: usize) {
        if bytes > 0 {
            self.queued.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    pub fn bytes_of(out: &Out) -> usize {
        out.bytes()
    }
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
        close::TRY_AGAIN_LATER => "node at capacity",
        _ => "",
    }
}

/// How hubs and the session machinery reach one socket.
#[derive(Clone, Debug)]
pub struct SocketHandle {
    pub id: u64,
    pub user: Arc<str>,
    pub out: Outbound,
    pub closer: Closer,
    /// Set by any client frame; read (and cleared) by the session sweeper.
    pub active: Arc<AtomicBool>,
    /// A hub removed this socket from a room (deleted): the reader forgets it.
    pub removed: Arc<tokio::sync::Notify>,
}

impl SocketHandle {
    pub fn new(id: u64, user: Arc<str>, out: Outbound, closer: Closer) -> Self {
        Self {
            id,
            user,
            out,
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
        match self.out.try_push(out) {
            Ok(()) => true,
            Err(Refused::Full) => {
                // Once: every later push fails the same way until it closes.
                if !self.closer.is_closed() {
                    metrics::counter!("chat_slow_consumers_total").increment(1);
                    tracing::warn!(user = %self.user, socket = self.id, "slow consumer, closing 4008");
                }
                self.closer.close(close::POLICY);
                false
            }
            Err(Refused::Closed) => false,
        }
    }
}
