//! One work item: a push for one user about one room, sent to each of the
//! user's devices exactly once across redeliveries and workers.

use crate::fcm::{FcmClient, SendResult};
use crate::payload::{self, Push};
use chat_core::entry::Entry;
use chat_core::keys::Keys;
use chat_core::redis_conn::Conn;
use redis::AsyncCommands;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Semaphore;
use tracing::{info, warn};

/// How long the per-item send state is kept.
const KEEP: Duration = Duration::from_secs(86_400);

#[derive(Debug, Clone)]
pub struct WorkItem {
    pub id: String,
    pub user: String,
    pub room: String,
    pub count: u64,
    pub sender: String,
    pub preview: String,
    pub offset: u64,
    pub epoch: String,
}

impl WorkItem {
    pub fn parse(e: &Entry) -> Option<Self> {
        let get = |k: &str| e.get(k).map(str::to_owned);
        Some(Self {
            id: e.id.clone(),
            user: get("user").filter(|u| !u.is_empty())?,
            room: get("room").filter(|r| chat_core::pattern::valid_room(r))?,
            count: e.get("count")?.parse().ok()?,
            sender: get("sender")?,
            preview: get("preview")?,
            offset: e.get("offset")?.parse().ok()?,
            epoch: get("epoch")?,
        })
    }

    /// What makes a push unique: its user, room and the latest message it
    /// covers (a later push of the same user and room covers a later one).
    /// Send state is kept by this, not by the stream entry, so a push queued
    /// twice (a replayed Redis Cluster outbox) is still sent once.
    pub fn push_id(&self) -> String {
        push_id(&self.user, &self.room, &self.epoch, self.offset)
    }
}

/// See [`WorkItem::push_id`].
pub fn push_id(user: &str, room: &str, epoch: &str, offset: u64) -> String {
    format!("{epoch}|{offset}|{}:{user}{room}", user.len())
}

/// Where pushes go.
pub enum Sender {
    Fcm(Box<FcmClient>),
    /// No credentials: log and record on the outbox stream.
    DryRun {
        outbox_maxlen: u64,
    },
}

pub struct Ctx {
    pub keys: Keys,
    pub redis: Conn,
    pub sender: Sender,
    /// Bounds concurrent FCM requests, not items: a retry waits without a permit.
    pub requests: Semaphore,
    pub claim_send: redis::Script,
    /// This worker's name, the owner of its send leases.
    pub worker: String,
    /// A send lease lasts this long and is renewed before every attempt, so
    /// a crashed worker's lease runs out soon (about two request timeouts).
    pub lease: Duration,
    pub max_attempts: u32,
    /// Between attempts of one device, with jitter.
    pub backoff: chat_core::backoff::Backoff,
    /// Set on QUOTA_EXCEEDED: no request to FCM before this (ms since the
    /// epoch), so a project-wide throttle is not hammered by every task.
    pub paused_until: std::sync::atomic::AtomicU64,
    /// For unread counts (the badge).
    pub scripts: chat_core::scripts::Scripts,
}

/// The badge counts at most this many of a user's rooms.
const BADGE_ROOMS: usize = 100;

/// The user's unread count in the item's room and over all their rooms
/// (the app badge); `None` when Redis could not say (the push goes
/// without them).
async fn unread(ctx: &Ctx, item: &WorkItem) -> Option<(u64, u64)> {
    let mut conn = ctx.redis.clone();
    let mut rooms: Vec<String> =
        redis::AsyncCommands::smembers(&mut conn, ctx.keys.user_rooms(&item.user))
            .await
            .map_err(|e| warn!(user = %item.user, error = %e, "unread rooms lookup failed"))
            .ok()?;
    rooms.sort();
    rooms.truncate(BADGE_ROOMS);
    if !rooms.contains(&item.room) {
        rooms.push(item.room.clone());
    }
    let (mut here, mut total) = (0, 0);
    for room in &rooms {
        let u = ctx
            .scripts
            .unread(&mut conn, &ctx.keys, room, &item.user)
            .await
            .map_err(|e| warn!(user = %item.user, room, error = %e, "unread count failed"))
            .ok()?;
        total += u.unread;
        if *room == item.room {
            here = u.unread;
        }
    }
    Some((here, total))
}

/// A `Retry-After` is honoured up to this; longer and the work is left for
/// redelivery.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(900);

use chat_core::clock::now_ms;

/// What became of an item.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every device settled: acknowledge.
    Done,
    /// Some device still to try (FCM unavailable, or another worker holds
    /// its lease): leave pending; it is redelivered after the claim idle time.
    Pending,
}

enum Claim {
    Send,
    Done,
    Held,
}

impl Ctx {
    /// `entry`: the stream entry in hand. The lease is this worker's for
    /// this entry only, so the same push queued twice is sent once even when
    /// one worker holds both.
    async fn claim(&self, item: &str, entry: &str, token: &str) -> redis::RedisResult<Claim> {
        let mut conn = self.redis.clone();
        let n: i64 = self
            .claim_send
            .key(self.keys.push_sent(item))
            .arg(token)
            .arg(chat_core::clock::millis(self.lease))
            .arg(KEEP.as_secs())
            .arg(format!("{}/{entry}", self.worker))
            .invoke_async(&mut conn)
            .await?;
        Ok(match n {
            1 => Claim::Send,
            0 => Claim::Done,
            _ => Claim::Held,
        })
    }

    async fn settle(&self, item: &str, token: &str, done: bool) {
        let mut conn = self.redis.clone();
        let key = self.keys.push_sent(item);
        let r: redis::RedisResult<()> = if done {
            conn.hset(key, token, "done").await
        } else {
            conn.hdel(key, token).await
        };
        if let Err(e) = r {
            warn!(item, error = %e, "could not record the send state");
        }
    }

    async fn remove_token(&self, user: &str, token: &str) {
        let mut conn = self.redis.clone();
        let r: redis::RedisResult<()> = redis::pipe()
            .zrem(self.keys.user_devices(user), token)
            .ignore()
            .hdel(self.keys.user_device_platforms(user), token)
            .ignore()
            .query_async(&mut conn)
            .await;
        if let Err(e) = r {
            warn!(user, error = %e, "could not remove a dead device token");
        }
    }
}

/// Sends the item to every device of its user.
pub async fn process(ctx: Arc<Ctx>, item: WorkItem) -> Outcome {
    let mut conn = ctx.redis.clone();
    let devices: redis::RedisResult<(Vec<String>, std::collections::HashMap<String, String>)> =
        redis::pipe()
            .zrange(ctx.keys.user_devices(&item.user), 0, -1)
            .hgetall(ctx.keys.user_device_platforms(&item.user))
            .query_async(&mut conn)
            .await;
    let (tokens, platforms) = match devices {
        Ok(d) => d,
        Err(e) => {
            warn!(user = %item.user, error = %e, "device lookup failed");
            return Outcome::Pending;
        }
    };
    let mut outcome = Outcome::Done;
    let counts = if tokens.is_empty() {
        None
    } else {
        unread(&ctx, &item).await
    };
    for token in &tokens {
        let platform = platforms.get(token).map_or("unknown", String::as_str);
        if push_one(&ctx, &item, token, platform, counts).await == Outcome::Pending {
            outcome = Outcome::Pending;
        }
    }
    outcome
}

async fn push_one(
    ctx: &Ctx,
    item: &WorkItem,
    token: &str,
    platform: &str,
    counts: Option<(u64, u64)>,
) -> Outcome {
    // Another worker's lease (it crashed mid-send, or is still sending): wait
    // for it to be settled or to run out, keeping the item in hand.
    let deadline = tokio::time::Instant::now() + ctx.lease * 2;
    loop {
        match ctx.claim(&item.push_id(), &item.id, token).await {
            Ok(Claim::Send) => break,
            Ok(Claim::Done) => return Outcome::Done,
            Ok(Claim::Held) if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Ok(Claim::Held) => return Outcome::Pending,
            Err(e) => {
                warn!(error = %e, "send claim failed");
                return Outcome::Pending;
            }
        }
    }
    let push = Push {
        room: &item.room,
        sender: &item.sender,
        preview: &item.preview,
        count: item.count,
        offset: item.offset,
        epoch: &item.epoch,
        unread: counts.map(|(here, _)| here),
        badge: counts.map(|(_, total)| total),
    };
    let body = payload::build(token, &push);
    let client = match &ctx.sender {
        Sender::Fcm(c) => c,
        Sender::DryRun { outbox_maxlen } => {
            info!(user = %item.user, room = %item.room, platform, "dry run: push not sent (no FCM credentials)");
            metrics::counter!("chat_pushes_total", "outcome" => "dry_run").increment(1);
            let mut conn = ctx.redis.clone();
            let r: redis::RedisResult<String> = redis::cmd("XADD")
                .arg(ctx.keys.notify_outbox())
                .arg("MAXLEN")
                .arg("~")
                .arg(*outbox_maxlen)
                .arg("*")
                .arg("item")
                .arg(&item.id)
                .arg("user")
                .arg(&item.user)
                .arg("token")
                .arg(token)
                .arg("platform")
                .arg(platform)
                .arg("message")
                .arg(body.to_string())
                .query_async(&mut conn)
                .await;
            let ok = r.is_ok();
            ctx.settle(&item.push_id(), token, ok).await;
            return if ok { Outcome::Done } else { Outcome::Pending };
        }
    };
    for attempt in 1..=ctx.max_attempts {
        if attempt > 1 {
            // Renew the lease; if it ran out and someone else took over, stop.
            match ctx.claim(&item.push_id(), &item.id, token).await {
                Ok(Claim::Send) => {}
                Ok(Claim::Done) => return Outcome::Done,
                Ok(Claim::Held) | Err(_) => return Outcome::Pending,
            }
        }
        let pause = ctx
            .paused_until
            .load(std::sync::atomic::Ordering::Acquire)
            .saturating_sub(now_ms());
        if pause > 0 {
            tokio::time::sleep(Duration::from_millis(pause)).await;
        }
        let result = {
            let _permit = ctx.requests.acquire().await;
            client.send(&body).await
        };
        match result {
            SendResult::Sent => {
                info!(user = %item.user, room = %item.room, count = item.count, "push sent");
                metrics::counter!("chat_pushes_total", "outcome" => "sent").increment(1);
                ctx.settle(&item.push_id(), token, true).await;
                return Outcome::Done;
            }
            SendResult::BadToken(why) => {
                info!(user = %item.user, why, "device token no longer valid; removed");
                metrics::counter!("chat_pushes_total", "outcome" => "bad_token").increment(1);
                ctx.remove_token(&item.user, token).await;
                ctx.settle(&item.push_id(), token, true).await;
                return Outcome::Done;
            }
            SendResult::BadPayload(why) => {
                tracing::error!(user = %item.user, why, "FCM refused our payload; not retried");
                metrics::counter!("chat_pushes_total", "outcome" => "bad_payload").increment(1);
                ctx.settle(&item.push_id(), token, true).await;
                return Outcome::Done;
            }
            SendResult::Rejected(why) => {
                warn!(user = %item.user, why, "FCM refused the push; token kept, not retried");
                metrics::counter!("chat_pushes_total", "outcome" => "rejected").increment(1);
                ctx.settle(&item.push_id(), token, true).await;
                return Outcome::Done;
            }
            SendResult::Misconfigured(why) => {
                metrics::counter!("chat_pushes_total", "outcome" => "misconfigured").increment(1);
                tracing::error!(user = %item.user, why, "FCM endpoint, project or permissions misconfigured; push left pending");
                break;
            }
            SendResult::Retry { after, why } => {
                metrics::counter!("chat_pushes_total", "outcome" => "retry").increment(1);
                if let Some(after) =
                    after.filter(|_| why.contains("QUOTA_EXCEEDED") || why.starts_with("429"))
                {
                    let until = now_ms() + chat_core::clock::millis(after);
                    ctx.paused_until
                        .fetch_max(until, std::sync::atomic::Ordering::AcqRel);
                }
                // FCM's Retry-After is honoured in hand (the item stays in
                // flight, so no delivery is counted); our own backoff otherwise.
                let wait = after.unwrap_or_else(|| ctx.backoff.jittered(attempt, 0.5));
                if attempt == ctx.max_attempts || wait > MAX_RETRY_AFTER {
                    warn!(user = %item.user, why, attempt, "push not sent yet; left for redelivery");
                    break;
                }
                info!(user = %item.user, why, attempt, wait_ms = chat_core::clock::millis(wait), "push retry");
                tokio::time::sleep(wait).await;
            }
        }
    }
    ctx.settle(&item.push_id(), token, false).await;
    Outcome::Pending
}
