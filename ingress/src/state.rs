//! The state every handler shares.

use crate::hub::Hubs;
use crate::presence::Presence;
use crate::settings::IngressSettings;
use crate::sockets::SocketRegistry;
use chat_core::jwt::Verifier;
use chat_core::keys::Keys;
use chat_core::redis_conn::Conn;
use chat_core::scripts::Scripts;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub struct AppState {
    pub settings: IngressSettings,
    pub keys: Keys,
    pub scripts: Arc<Scripts>,
    /// Multiplexed: concurrent callers share one socket, pipelined.
    pub redis: Conn,
    pub verifier: Verifier,
    pub hubs: Hubs,
    pub sockets: Arc<SocketRegistry>,
    pub presence: Presence,
    /// Cancelled when the node drains.
    pub shutdown: CancellationToken,
    /// Socket tasks, so the drain can wait for their last writes.
    pub tracker: TaskTracker,
    pub next_socket: AtomicU64,
    /// Summary jobs: submission and status.
    pub jobs: chat_jobs::Jobs,
    /// The archive, when `CHAT_MONGODB_URL` is set: history older than Redis holds.
    pub archive: Option<chat_archive::Store>,
    /// Refuses new messages while deliveries run behind (ingress/src/overload.rs).
    pub backpressure: Arc<crate::overload::Backpressure>,
}

pub type Shared = Arc<AppState>;
