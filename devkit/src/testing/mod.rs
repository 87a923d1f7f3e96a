//! Test support shared by every crate's tests: wait for a condition with a
//! deadline instead of sleeping and hoping.

pub mod process;

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` until it returns `Some`, or fails after `timeout` with `what`.
pub async fn wait_until<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Appends message `i` (text `message <i>`, client id `c<i>`, user `w`) to
/// `room` through the real append script; returns its offset.
pub async fn append(
    conn: &mut chat_core::redis_conn::Conn,
    keys: &chat_core::keys::Keys,
    streams: &chat_core::config::StreamsConfig,
    room: &str,
    i: usize,
) -> u64 {
    let req = chat_core::scripts::AppendRequest {
        room,
        user: "w",
        text: &format!("message {i}"),
        client_id: &format!("c{i}"),
        kind: chat_core::protocol::Kind::User,
        retention: streams.retention(room),
        dedup_window: streams.dedup.window,
        shard_maxlen: streams.fanout.shard_maxlen,
        op: Default::default(),
        checks: Default::default(),
    };
    chat_core::scripts::Scripts::default()
        .append(conn, keys, &req)
        .await
        .expect("append")
        .offset
}

/// Appends `n` messages round-robin over the rooms `<prefix>0` ..
/// `<prefix><rooms - 1>`, pausing `pause` after every `every`: a steady
/// writer for tests that kill workers while it runs.
#[allow(clippy::too_many_arguments)]
pub async fn append_many(
    mut conn: chat_core::redis_conn::Conn,
    keys: chat_core::keys::Keys,
    streams: chat_core::config::StreamsConfig,
    prefix: &str,
    rooms: usize,
    n: usize,
    every: usize,
    pause: Duration,
) {
    for i in 0..n {
        append(
            &mut conn,
            &keys,
            &streams,
            &format!("{prefix}{}", i % rooms),
            i,
        )
        .await;
        if (i + 1) % every == 0 {
            tokio::time::sleep(pause).await;
        }
    }
}
