//! Connections to Redis: a reconnecting multiplexed manager for commands
//! (concurrent callers are pipelined on one socket), with timeouts so that a
//! Redis outage turns into an error instead of a hang.

use redis::aio::AsyncPushSender;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::{Client, ProtocolVersion, RedisResult};
use std::time::Duration;

/// How long a command may wait for its reply before it fails `unavailable`.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);

fn base_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(3)))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(2))
        .set_pipeline_buffer_size(4096)
}

/// A command connection.
pub async fn manager(url: &str) -> RedisResult<ConnectionManager> {
    Client::open(url)?
        .get_connection_manager_with_config(base_config())
        .await
}

/// A RESP3 connection whose pub/sub messages go to `sender`; subscriptions
/// are restored after a reconnect.
pub async fn subscriber(url: &str, sender: impl AsyncPushSender) -> RedisResult<ConnectionManager> {
    use redis::IntoConnectionInfo;
    let info = url.into_connection_info()?;
    let redis = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Client::open(info.set_redis_settings(redis))?
        .get_connection_manager_with_config(
            base_config()
                .set_push_sender(sender)
                .set_automatic_resubscription(),
        )
        .await
}

/// A connection for blocking reads (`XREADGROUP BLOCK`): its own socket, so a
/// blocked read never delays other commands, and no response timeout shorter
/// than the block.
pub async fn blocking(url: &str, block: Duration) -> RedisResult<ConnectionManager> {
    Client::open(url)?
        .get_connection_manager_with_config(
            base_config().set_response_timeout(Some(block + RESPONSE_TIMEOUT)),
        )
        .await
}

/// True when the error means Redis could not be reached or answered in time.
pub fn is_unavailable(e: &redis::RedisError) -> bool {
    e.is_io_error() || e.is_timeout() || e.is_connection_dropped() || e.is_connection_refusal()
}
