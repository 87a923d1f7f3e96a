//! What every Redis-reading command shares: the services' configuration
//! (`CHAT_*` over `CHAT_CONFIG`, and streams.toml), read and checked the way
//! the services read it, so `chatctl` talks to the same keys they use.

use anyhow::Context as _;
use chat_core::config::{Common, MongoSettings, Settings, load_strings};
use chat_core::keys::Keys;
use chat_core::redis_conn::{self, Conn};

pub struct Context {
    pub common: Common,
    pub keys: Keys,
    /// Set when asked for and `CHAT_MONGODB_URL` is set.
    pub mongodb: Option<MongoSettings>,
    /// How long a revoked session's tokens stay refused.
    pub revoked_session_ttl: std::time::Duration,
}

impl Context {
    /// Fails with every bad field, as the services would at start.
    pub fn load(with_mongodb: bool) -> anyhow::Result<Self> {
        let strings = load_strings()?;
        let mut s = Settings::new(&strings);
        let common = Common::read(&mut s);
        let revoked_session_ttl = chat_core::sessions::revoked_session_ttl(&mut s);
        let mongodb = if with_mongodb {
            common.read_mongodb(&mut s, false)
        } else {
            None
        };
        s.finish()
            .context("the configuration is invalid (`chatctl config check` lists every problem)")?;
        Ok(Self {
            keys: common.keys(),
            common,
            mongodb,
            revoked_session_ttl,
        })
    }

    /// A command connection (standalone or cluster, as `CHAT_REDIS_URL` says).
    pub async fn redis(&self) -> anyhow::Result<Conn> {
        redis_conn::manager(&self.common.redis_url)
            .await
            .with_context(|| {
                format!(
                    "connecting to Redis at {}",
                    crate::output::redact_url(&self.common.redis_url)
                )
            })
    }
}

/// Room names as the contract has them: `^[A-Za-z0-9_.:-]{1,128}$`.
pub fn check_room(room: &str) -> anyhow::Result<()> {
    if chat_core::pattern::valid_room(room) {
        Ok(())
    } else {
        anyhow::bail!("bad room name {room:?}: room names match ^[A-Za-z0-9_.:-]{{1,128}}$")
    }
}
