//! The ingress: WebSocket and HTTP API. Authenticates sockets, appends
//! messages with one script call, and delivers live messages to the sockets
//! it holds, in offset order.

pub mod access;
mod append;
pub mod auth;
pub mod conns;
pub mod control;
pub mod history;
pub mod hops;
pub mod http;
pub mod hub;
pub mod moderation;
pub mod outbound;
pub mod overload;
pub mod presence;
mod serve;
pub use chat_core::settings::ingress as settings;
pub mod sockets;
pub mod state;
pub mod ws;

use chat_core::jwt::{JwtError, Verifier};
use chat_core::protocol::close;
use chat_core::redis_conn;
use chat_core::scripts::Scripts;
use hub::{HubContext, Hubs, Rooms};
use presence::Presence;
use settings::IngressSettings;
use sockets::SocketRegistry;
use state::{AppState, Shared};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use settings::Limits;

#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("jwt configuration: {0}")]
    Jwt(#[from] JwtError),
    #[error("listen: {0}")]
    Io(#[from] std::io::Error),
    /// The address is taken (another process, or a second node on one
    /// port), or not this host's: named with the setting to change.
    #[error("cannot listen on {addr} (set by {setting}): {source}")]
    Listen {
        addr: SocketAddr,
        setting: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("summary jobs: {0}")]
    Jobs(#[from] chat_jobs::JobsError),
    #[error("archive: {0}")]
    Archive(#[from] chat_archive::StoreError),
}

/// Connections the metrics listener takes at once: scrapers and probes.
const METRICS_CONNECTIONS: usize = 64;

/// A bound, ready ingress node; `run` serves until `shutdown` is cancelled.
pub struct Ingress {
    state: Shared,
    listener: TcpListener,
    addr: SocketAddr,
    budget: Arc<conns::Budget>,
    metrics: Option<(TcpListener, SocketAddr)>,
}

impl Ingress {
    /// Connects to Redis, subscribes to the control channel and binds the
    /// listener (port 0 picks a free one).
    pub async fn build(
        settings: IngressSettings,
        shutdown: CancellationToken,
    ) -> Result<Self, IngressError> {
        chat_core::metrics::register(chat_core::metrics::Service::Ingress);
        let keys = settings.common.keys();
        let url = settings.common.redis_url.clone();
        let redis = redis_conn::manager(&url).await?;
        let rooms = Arc::new(Rooms::default());
        let sockets = Arc::new(SocketRegistry::default());
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (subs_tx, subs_rx) = tokio::sync::mpsc::unbounded_channel();
        let mut subscriber = redis_conn::subscriber(
            &url,
            control::push_handler(
                keys.clone(),
                rooms.clone(),
                sockets.clone(),
                lost.clone(),
                subs_tx.clone(),
                shutdown.clone(),
            ),
        )
        .await?;
        subscriber.subscribe(&keys.control_channel()).await?;
        tokio::spawn(control::supervise_pubsub(
            subscriber.clone(),
            rooms.clone(),
            lost,
            std::time::Duration::from_millis(500),
            shutdown.clone(),
        ));
        tokio::spawn(hub::run_subscriptions(
            subscriber,
            subs_rx,
            rooms.clone(),
            keys.clone(),
            subs_tx.clone(),
        ));
        let scripts = Arc::new(Scripts::for_store(
            settings.common.redis_durable,
            settings.common.ack_replicas,
        ));
        let backpressure = Arc::new(overload::Backpressure::new(
            settings.limits.max_delivery_lag,
        ));
        let hubs = Hubs::new(
            rooms,
            HubContext {
                redis: redis.clone(),
                scripts: scripts.clone(),
                keys: keys.clone(),
                streams: settings.common.streams.clone(),
                max_recover: settings.limits.max_recover,
                subs: subs_tx,
                backpressure: backpressure.clone(),
            },
        );
        let verifier = Verifier::new(settings.jwt.clone()).await?;
        let presence = Presence::new(settings.node_id.clone(), keys.clone(), redis.clone());
        let jobs =
            chat_jobs::Jobs::connect(keys.clone(), redis.clone(), &settings.jobs_redis_url).await?;
        // Connecting does not reach MongoDB yet: a node starts while the
        // archive is down, and history says `unavailable` for what is only there.
        let archive = match &settings.mongodb {
            Some(m) => Some(
                chat_archive::Store::connect(m, &settings.common.streams.archive.collection)
                    .await?,
            ),
            None => None,
        };
        let listen = settings.listen;
        let listener = TcpListener::bind(listen)
            .await
            .map_err(|source| IngressError::Listen {
                addr: listen,
                setting: "CHAT_LISTEN",
                source,
            })?;
        let addr = listener.local_addr()?;
        let metrics = match settings.metrics_listen {
            Some(at) => {
                let l = TcpListener::bind(at)
                    .await
                    .map_err(|source| IngressError::Listen {
                        addr: at,
                        setting: "CHAT_METRICS_LISTEN",
                        source,
                    })?;
                let a = l.local_addr()?;
                tracing::info!(addr = %a, "metrics listening");
                Some((l, a))
            }
            None => None,
        };
        let budget = conns::Budget::new(
            "public",
            conns::cap_for_descriptors(settings.limits.max_connections),
        );
        let state = Arc::new(AppState {
            settings,
            keys: keys.clone(),
            scripts,
            redis: redis.clone(),
            verifier,
            hubs,
            sockets: sockets.clone(),
            presence,
            shutdown: shutdown.clone(),
            tracker: TaskTracker::new(),
            next_socket: AtomicU64::new(1),
            jobs,
            archive,
            backpressure,
        });
        tokio::spawn(control::sweep_sessions(
            keys,
            redis,
            sockets,
            state.settings.session_sweep,
            shutdown.clone(),
        ));
        let s = state.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(presence::REFRESH);
            loop {
                tokio::select! {
                    _ = s.shutdown.cancelled() => return,
                    _ = tick.tick() => s.presence.refresh().await,
                }
            }
        });
        tracing::info!(%addr, node = %state.settings.node_id, cap = budget.cap(), "ingress listening");
        Ok(Self {
            state,
            listener,
            addr,
            budget,
            metrics,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// The metrics listener's address, when `CHAT_METRICS_LISTEN` is set.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(|(_, a)| *a)
    }

    /// Connections the public listener holds at most.
    pub fn connection_cap(&self) -> usize {
        self.budget.cap()
    }

    pub fn state(&self) -> Shared {
        self.state.clone()
    }

    /// Serves until shutdown, then drains: every socket is closed 1001 after
    /// its queued frames are written, within the configured grace.
    pub async fn run(self) -> Result<(), IngressError> {
        let state = self.state;
        let app = http::router(state.clone());
        if let Some((listener, _)) = self.metrics {
            tokio::spawn(serve::serve(
                listener,
                conns::Budget::new("metrics", METRICS_CONNECTIONS),
                http::operations_router(state.clone()),
                state.shutdown.clone(),
                state.settings.limits.head_timeout,
                state.settings.shutdown_grace,
            ));
        }
        let stop = state.shutdown.clone();
        let grace = state.settings.shutdown_grace;
        // One deadline for the whole drain: sockets start closing the moment
        // the stop comes, while HTTP requests in hand finish alongside.
        let drain = {
            let (stop, sockets) = (stop.clone(), state.sockets.clone());
            tokio::spawn(async move {
                stop.cancelled().await;
                sockets.close_all(close::GOING_AWAY);
                tokio::time::Instant::now() + grace
            })
        };
        serve::serve(
            self.listener,
            self.budget,
            app,
            stop,
            state.settings.limits.head_timeout,
            grace,
        )
        .await;
        let deadline = drain
            .await
            .unwrap_or_else(|_| tokio::time::Instant::now() + grace);
        // Sockets upgraded by requests that finished during the drain.
        state.sockets.close_all(close::GOING_AWAY);
        state.tracker.close();
        if tokio::time::timeout_at(deadline, state.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(left = state.sockets.len(), "drain grace ran out");
        }
        state.presence.clear().await;
        tracing::info!("ingress stopped");
        Ok(())
    }
}
