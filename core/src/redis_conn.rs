//! Connections to Redis: a reconnecting multiplexed connection for commands
//! (concurrent callers are pipelined on one socket), with timeouts so that a
//! Redis outage turns into an error instead of a hang.
//!
//! A `redis+cluster://host:port[,host:port...]` URL selects Redis Cluster:
//! the same [`Conn`] then routes each command to the master of its slot.
//! Room channels use sharded pub/sub there (`SPUBLISH`/`SSUBSCRIBE`), so a
//! message travels only to the shard that owns its room.

use futures_util::FutureExt;
use futures_util::future::{BoxFuture, join_all};
use redis::aio::{AsyncPushSender, ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClientBuilder;
use redis::cluster_async::ClusterConnection;
use redis::{
    Client, Cmd, ErrorKind, Pipeline, ProtocolVersion, RedisResult, ServerErrorKind, Value,
};
use std::time::Duration;

/// How long a command may wait for its reply before it fails `unavailable`.
pub const RESPONSE_TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The URL scheme that selects Redis Cluster.
pub const CLUSTER_SCHEME: &str = "redis+cluster://";

/// A command connection to a standalone Redis or to a Redis Cluster.
#[derive(Clone)]
pub enum Conn {
    Single(ConnectionManager),
    Cluster(ClusterConnection),
}

/// The seed nodes of a `redis+cluster://` URL as `redis://` URLs, or `None`
/// for a standalone URL.
pub fn cluster_nodes(url: &str) -> Option<Vec<String>> {
    let rest = url.strip_prefix(CLUSTER_SCHEME)?;
    // Credentials (`user:pass@`) apply to every node; the path is ignored.
    let (auth, hosts) = match rest.rsplit_once('@') {
        Some((a, h)) => (format!("{a}@"), h),
        None => (String::new(), rest),
    };
    let hosts = hosts.split('/').next().unwrap_or("");
    Some(
        hosts
            .split(',')
            .filter(|h| !h.is_empty())
            .map(|h| format!("redis://{auth}{h}/"))
            .collect(),
    )
}

/// Checks a Redis URL (standalone or cluster) without connecting.
pub fn check_url(url: &str) -> Result<(), String> {
    match cluster_nodes(url) {
        Some(nodes) if nodes.is_empty() => Err("no cluster nodes in the URL".into()),
        Some(nodes) => nodes.iter().try_for_each(|n| {
            Client::open(n.as_str())
                .map(drop)
                .map_err(|e| e.to_string())
        }),
        None => Client::open(url).map(drop).map_err(|e| e.to_string()),
    }
}

fn base_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(3)
        .set_max_delay(Duration::from_secs(2))
        .set_pipeline_buffer_size(4096)
}

/// TCP_NODELAY: the redis crate leaves Nagle on, so a command written while
/// the previous one is unacknowledged waits for Redis' (delayed) ACK, up to
/// 40 ms on Linux: the p99 of a pipelined connection.
fn tcp() -> redis::io::tcp::TcpSettings {
    redis::io::tcp::TcpSettings::default().set_nodelay(true)
}

/// A standalone client with our TCP settings.
fn client(url: &str) -> RedisResult<Client> {
    use redis::IntoConnectionInfo;
    Client::open(url.into_connection_info()?.set_tcp_settings(tcp()))
}

fn cluster_builder(nodes: Vec<String>, response: Duration) -> ClusterClientBuilder {
    ClusterClientBuilder::new(nodes)
        .tcp_settings(tcp())
        .connection_timeout(CONNECT_TIMEOUT)
        .response_timeout(response)
        .retries(3)
        .max_retry_wait(2000)
}

async fn connect(url: &str, response: Duration) -> RedisResult<Conn> {
    match cluster_nodes(url) {
        Some(nodes) => Ok(Conn::Cluster(
            cluster_builder(nodes, response)
                .build()?
                .get_async_connection()
                .await?,
        )),
        None => Ok(Conn::Single(
            client(url)?
                .get_connection_manager_with_config(
                    base_config().set_response_timeout(Some(response)),
                )
                .await?,
        )),
    }
}

/// A command connection.
pub async fn manager(url: &str) -> RedisResult<Conn> {
    connect(url, RESPONSE_TIMEOUT).await
}

/// A standalone connection for the job queue (apalis-redis is not
/// cluster-safe, so a cluster URL is refused here).
pub async fn standalone(url: &str) -> RedisResult<ConnectionManager> {
    if cluster_nodes(url).is_some() {
        return Err(redis::RedisError::from((
            ErrorKind::InvalidClientConfig,
            "the job queue needs a standalone Redis (set CHAT_JOBS_REDIS_URL)",
        )));
    }
    client(url)?
        .get_connection_manager_with_config(base_config())
        .await
}

/// A connection for blocking reads (`XREADGROUP BLOCK`): its own socket, so a
/// blocked read never delays other commands, and no response timeout shorter
/// than the block.
pub async fn blocking(url: &str, block: Duration) -> RedisResult<Conn> {
    connect(url, block + RESPONSE_TIMEOUT).await
}

/// A RESP3 connection whose pub/sub messages go to `sender`; subscriptions
/// are restored after a reconnect.
pub async fn subscriber(url: &str, sender: impl AsyncPushSender) -> RedisResult<Conn> {
    if let Some(nodes) = cluster_nodes(url) {
        return Ok(Conn::Cluster(
            cluster_builder(nodes, RESPONSE_TIMEOUT)
                .use_protocol(ProtocolVersion::RESP3)
                .push_sender(sender)
                .build()?
                .get_async_connection()
                .await?,
        ));
    }
    use redis::IntoConnectionInfo;
    let info = url.into_connection_info()?.set_tcp_settings(tcp());
    let redis = info
        .redis_settings()
        .clone()
        .set_protocol(ProtocolVersion::RESP3);
    Ok(Conn::Single(
        Client::open(info.set_redis_settings(redis))?
            .get_connection_manager_with_config(
                base_config()
                    .set_push_sender(sender)
                    .set_automatic_resubscription(),
            )
            .await?,
    ))
}

impl Conn {
    pub fn is_cluster(&self) -> bool {
        matches!(self, Conn::Cluster(_))
    }

    /// The publish command for room channels: sharded in a cluster, so a
    /// message is not broadcast over the whole cluster bus.
    pub fn room_publish(&self) -> &'static str {
        if self.is_cluster() {
            "SPUBLISH"
        } else {
            "PUBLISH"
        }
    }

    /// Adds the publish of `payload` on a room channel to a pipeline.
    pub fn publish_room(
        &self,
        pipe: &mut Pipeline,
        channel: &str,
        payload: impl redis::ToRedisArgs,
    ) {
        pipe.cmd(self.room_publish())
            .arg(channel)
            .arg(payload)
            .ignore();
    }

    /// Publishes on a room channel.
    pub async fn publish_room_now(&mut self, channel: &str, payload: &str) -> RedisResult<()> {
        let mut cmd = redis::cmd(self.room_publish());
        cmd.arg(channel).arg(payload);
        cmd.query_async::<Value>(self).await.map(drop)
    }

    /// Subscribes to a room channel (sharded in a cluster).
    pub async fn subscribe_room(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Conn::Single(c) => c.subscribe(channel).await,
            Conn::Cluster(c) => c.ssubscribe(channel).await,
        }
    }

    pub async fn unsubscribe_room(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Conn::Single(c) => c.unsubscribe(channel).await,
            Conn::Cluster(c) => c.sunsubscribe(channel).await,
        }
    }

    /// Subscribes to a node-wide channel (broadcast to every node of a cluster).
    pub async fn subscribe(&mut self, channel: &str) -> RedisResult<()> {
        match self {
            Conn::Single(c) => c.subscribe(channel).await,
            Conn::Cluster(c) => c.subscribe(channel).await,
        }
    }
}

/// The hash tag a command is routed by (the `{...}` part of its key, or the
/// whole key), for the commands our pipelines use; `None` when it has no key.
fn route_tag(cmd: &Cmd) -> Option<Vec<u8>> {
    let args: Vec<&[u8]> = cmd
        .args_iter()
        .filter_map(|a| match a {
            redis::Arg::Simple(b) => Some(b),
            _ => None,
        })
        .collect();
    let name = args.first()?.to_ascii_uppercase();
    let key = match name.as_slice() {
        b"EVAL" | b"EVALSHA" => (args.get(2)? != b"0").then(|| args.get(3)).flatten()?,
        b"XINFO" | b"XGROUP" => args.get(2)?,
        b"XREAD" | b"XREADGROUP" => {
            let at = args
                .iter()
                .position(|a| a.eq_ignore_ascii_case(b"STREAMS"))?;
            args.get(at + 1)?
        }
        _ => args.get(1)?,
    };
    let tag = match key.iter().position(|&b| b == b'{') {
        Some(open) => match key[open + 1..].iter().position(|&b| b == b'}') {
            Some(len) if len > 0 => &key[open + 1..open + 1 + len],
            _ => key,
        },
        None => key,
    };
    Some(tag.to_vec())
}

/// In a cluster a pipeline must stay within one slot; ours mix slots (a
/// batch's publishes with its acknowledgements), so a cross-slot pipeline is
/// split by hash tag: each part keeps its order and the parts run
/// concurrently. Order across slots is not kept: a caller that needs it
/// (acknowledge only after the work) sends two pipelines. None of ours is a
/// MULTI.
async fn split_pipeline(
    conn: &mut ClusterConnection,
    pipeline: &Pipeline,
    offset: usize,
    count: usize,
) -> RedisResult<Vec<Value>> {
    let mut parts: Vec<(Option<Vec<u8>>, Pipeline, Vec<usize>)> = Vec::new();
    for (i, cmd) in pipeline.cmd_iter().enumerate() {
        let tag = route_tag(cmd);
        let at = match parts
            .iter()
            .position(|(t, _, _)| tag.is_some() && *t == tag)
        {
            Some(at) => at,
            None => {
                parts.push((tag, redis::pipe(), Vec::new()));
                parts.len() - 1
            }
        };
        parts[at].1.add_command(cmd.clone());
        parts[at].2.push(i);
    }
    let replies = join_all(parts.iter().map(|(_, p, _)| {
        let mut c = conn.clone();
        async move { c.req_packed_commands(p, 0, p.len()).await }
    }))
    .await;
    let mut values = vec![Value::Nil; pipeline.len()];
    for ((_, _, idx), reply) in parts.iter().zip(replies) {
        for (i, v) in idx.iter().zip(reply?) {
            values[*i] = v;
        }
    }
    Ok(values.into_iter().skip(offset).take(count).collect())
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> redis::RedisFuture<'a, Value> {
        match self {
            Conn::Single(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> redis::RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Single(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => cluster_pipeline(c, pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Single(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

fn cluster_pipeline<'a>(
    c: &'a mut ClusterConnection,
    pipeline: &'a Pipeline,
    offset: usize,
    count: usize,
) -> BoxFuture<'a, RedisResult<Vec<Value>>> {
    async move {
        if pipeline.is_empty() {
            return Ok(Vec::new());
        }
        match c.req_packed_commands(pipeline, offset, count).await {
            // A MULTI cannot be split without losing what it is for.
            Err(e)
                if e.kind() == ErrorKind::Server(ServerErrorKind::CrossSlot)
                    && !pipeline.is_transaction() =>
            {
                split_pipeline(c, pipeline, offset, count).await
            }
            other => other,
        }
    }
    .boxed()
}

/// True when the error means Redis could not be reached or answered in time,
/// or is between roles (loading a dump, a primary demoted in a failover, a
/// replica whose primary is down): worth a retry, not a fault of the request.
pub fn is_unavailable(e: &redis::RedisError) -> bool {
    e.is_io_error()
        || e.is_timeout()
        || e.is_connection_dropped()
        || e.is_connection_refusal()
        || e.is_cluster_error()
        || matches!(
            e.kind(),
            ErrorKind::ClusterConnectionNotFound
                | ErrorKind::Server(
                    ServerErrorKind::BusyLoading
                        | ServerErrorKind::ReadOnly
                        | ServerErrorKind::MasterDown
                )
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_urls_list_their_seed_nodes() {
        assert_eq!(cluster_nodes("redis://h:1/"), None);
        assert_eq!(
            cluster_nodes("redis+cluster://a:1,b:2/").expect("cluster"),
            vec!["redis://a:1/", "redis://b:2/"]
        );
        assert_eq!(
            cluster_nodes("redis+cluster://u:p@a:1,b:2").expect("cluster"),
            vec!["redis://u:p@a:1/", "redis://u:p@b:2/"]
        );
        assert!(check_url("redis+cluster://").is_err());
        assert!(check_url("redis+cluster://a:1,b:2").is_ok());
        assert!(check_url("nonsense").is_err());
    }

    #[test]
    fn commands_route_by_their_hash_tag() {
        let mut c = redis::cmd("XACK");
        c.arg("chat:fanout:{3}").arg("g").arg("1-1");
        assert_eq!(route_tag(&c).expect("tag"), b"3");
        let mut c = redis::cmd("EVALSHA");
        c.arg("abc").arg(2).arg("chat:room:{r}:meta").arg("x");
        assert_eq!(route_tag(&c).expect("tag"), b"r");
        let mut c = redis::cmd("XINFO");
        c.arg("GROUPS").arg("plain");
        assert_eq!(route_tag(&c).expect("tag"), b"plain");
        let mut c = redis::cmd("SET");
        c.arg("k{}").arg("v");
        assert_eq!(route_tag(&c).expect("tag"), b"k{}");
        assert_eq!(route_tag(&redis::cmd("PING")), None);
    }
}
