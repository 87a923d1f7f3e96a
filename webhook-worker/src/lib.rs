//! webhook-worker: consumer group `webhooks` over the fanout shard streams
//! (and the re-drive stream `chatctl dlq replay` fills), delivering room
//! events to the app backend's endpoints (`[webhooks]` in streams.toml).
//! At least once: a batch is acknowledged only after every delivery in it
//! succeeded or was dead-lettered. Each request is signed (`sign`) and
//! carries the event's room, epoch and offset as its idempotency key;
//! failures are retried with backoff, honouring `Retry-After`, and after
//! the last attempt the event is dead-lettered for that endpoint alone.

pub mod sign;

pub use chat_core::settings::webhook as settings;

use chat_core::config::{Endpoint, EventType, WebhookPolicy};
use chat_core::consumer::{
    BatchHandler, ConsumerSpec, GroupError, Messages, Received, ShardConsumer,
};
use chat_core::entry::Entry;
use chat_core::group;
use chat_core::keys::Keys;
use chat_core::protocol::Message;
use chat_core::redis_conn::{self, Conn};
use serde::Serialize;
use settings::WebhookSettings;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

pub struct Webhooks {
    consumer: ShardConsumer,
    handler: Deliverer,
}

struct Deliverer {
    policy: WebhookPolicy,
    secrets: std::collections::HashMap<String, Vec<u8>>,
    keys: Keys,
    conn: Conn,
    http: reqwest::Client,
    dead_letter_maxlen: u64,
}

/// What an endpoint receives (JSON), one event per request.
#[derive(Serialize)]
pub struct Delivery<'a> {
    /// `<room>|<epoch>|<offset>`: the same on every retry and re-drive.
    pub id: String,
    /// `message`, `edit`, `delete`, `reaction`, `join` or `moderation`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub room: &'a str,
    pub epoch: &'a str,
    pub offset: u64,
    /// The room entry, as the `message` frame has it.
    pub message: &'a Message,
}

impl Webhooks {
    pub async fn build(settings: WebhookSettings) -> Result<Self, GroupError> {
        chat_core::metrics::register(chat_core::metrics::Service::Webhook);
        let policy = settings.common.streams.webhooks.clone();
        if let Some(e) = policy
            .endpoints
            .iter()
            .find(|e| !settings.secrets.contains_key(&e.name))
        {
            return Err(GroupError::Sink(
                format!(
                    "webhook endpoint {} has no signing secret ({})",
                    e.name, e.secret_env
                )
                .into(),
            ));
        }
        for e in &policy.endpoints {
            for outcome in ["delivered", "retried", "dead_lettered"] {
                metrics::counter!("chat_webhook_deliveries_total", "endpoint" => e.name.clone(), "outcome" => outcome)
                    .absolute(0);
            }
        }
        let keys = settings.common.keys();
        let url = settings.common.redis_url.clone();
        let conn = redis_conn::manager(&url).await?;
        let spec = ConsumerSpec {
            url,
            group: policy.group.clone(),
            consumer: settings.consumer.clone(),
            batch: policy.batch,
            block: settings.block,
            claim_idle: policy.claim_idle,
            linger: Duration::ZERO,
            acks: settings.common.ack_replicas,
            max_deliveries: policy.max_deliveries,
            dead_letter: keys.dead_letter(&policy.group),
            dead_letter_maxlen: settings.common.streams.fanout.dead_letter_maxlen,
        };
        let mut streams = keys.all_shard_streams();
        streams.push(keys.webhook_redrive());
        let consumer = ShardConsumer::connect(spec, conn.clone(), streams).await?;
        let http = reqwest::Client::builder()
            .user_agent(concat!("chat-webhooks/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| GroupError::Sink(Box::new(e)))?;
        info!(consumer = %settings.consumer, endpoints = policy.endpoints.len(), "webhook worker ready");
        Ok(Self {
            consumer,
            handler: Deliverer {
                dead_letter_maxlen: settings.common.streams.fanout.dead_letter_maxlen,
                policy,
                secrets: settings.secrets,
                keys,
                conn,
                http,
            },
        })
    }

    /// Runs until `shutdown`; the batch in hand is delivered and acknowledged first.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), GroupError> {
        self.consumer.run(&mut self.handler, shutdown).await
    }
}

impl BatchHandler for Deliverer {
    type Item = Message;

    async fn handle(&mut self, messages: Messages) -> Result<usize, GroupError> {
        let redrive = self.keys.webhook_redrive();
        // Per endpoint, its events in stream order.
        let mut work: Vec<Vec<&Received>> = vec![Vec::new(); self.policy.endpoints.len()];
        let mut total = 0;
        for (stream, received) in &messages {
            for r in received {
                total += 1;
                if *stream == redrive {
                    // A re-driven dead letter: for the endpoint it failed at.
                    match self
                        .policy
                        .endpoints
                        .iter()
                        .position(|e| Some(e.name.as_str()) == r.entry.get("w"))
                    {
                        Some(i) => work[i].push(r),
                        None => {
                            warn!(id = %r.entry.id, "re-driven webhook for an endpoint no longer configured; dropped")
                        }
                    }
                    continue;
                }
                let event = EventType::of(&r.item);
                for (i, e) in self.policy.endpoints.iter().enumerate() {
                    if e.wants(&r.item.room, event) {
                        work[i].push(r);
                    }
                }
            }
        }
        // Endpoints side by side; each one's events in order.
        let (http, policy, secrets) = (&self.http, &self.policy, &self.secrets);
        let runs = policy.endpoints.iter().zip(work).map(|(e, events)| {
            let secret = secrets.get(&e.name).map(Vec::as_slice).unwrap_or_default();
            async move {
                let mut failed = Vec::new();
                for r in events {
                    if let Err(reason) = deliver(http, policy, e, secret, &r.item).await {
                        failed.push((&r.entry, reason));
                    }
                }
                (e, failed)
            }
        });
        let results = futures_util::future::join_all(runs).await;
        let dlq = self.keys.dead_letter(&self.policy.group);
        let mut pipe = redis::pipe();
        for (e, failed) in results {
            for (entry, reason) in failed {
                warn!(endpoint = %e.name, id = %entry.id, reason = %reason, "webhook dead-lettered");
                metrics::counter!("chat_webhook_deliveries_total", "endpoint" => e.name.clone(), "outcome" => "dead_lettered").increment(1);
                // Re-driven to this endpoint alone: the dead letter names
                // it, and its stream is the re-drive stream.
                let mut fields: Vec<(String, String)> = entry
                    .fields
                    .iter()
                    .filter(|(k, _)| k != "w")
                    .cloned()
                    .collect();
                fields.push(("w".to_owned(), e.name.clone()));
                let letter = Entry {
                    id: entry.id.clone(),
                    fields,
                };
                group::dead_letter(
                    &mut pipe,
                    &dlq,
                    self.dead_letter_maxlen,
                    &redrive,
                    &letter,
                    &reason,
                );
            }
        }
        // Dead letters are written before any ack.
        if pipe.cmd_iter().next().is_some() {
            let _: () = pipe.query_async(&mut self.conn).await?;
        }
        let mut acks = redis::pipe();
        chat_core::consumer::ack(&mut acks, &messages, &self.policy.group);
        let _: () = acks.query_async(&mut self.conn).await?;
        Ok(total)
    }
}

/// The longest `Retry-After` honoured: beyond it, the backoff's own wait.
fn retry_after(r: &reqwest::Response, max: Duration) -> Option<Duration> {
    let secs: u64 = r
        .headers()
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    Some(Duration::from_secs(secs).min(max))
}

/// One event to one endpoint, retried with backoff; the reason of the last
/// failure when every attempt failed.
pub async fn deliver(
    http: &reqwest::Client,
    policy: &WebhookPolicy,
    endpoint: &Endpoint,
    secret: &[u8],
    m: &Message,
) -> Result<(), String> {
    let event = EventType::of(m);
    let id = format!("{}|{}|{}", m.room, m.epoch, m.offset);
    let body = serde_json::to_vec(&Delivery {
        id: id.clone(),
        kind: event.as_str(),
        room: &m.room,
        epoch: &m.epoch,
        offset: m.offset,
        message: m,
    })
    .map_err(|e| format!("encoding: {e}"))?;
    let backoff = chat_core::backoff::Backoff::new(policy.backoff, policy.backoff_max);
    let mut reason = String::new();
    for attempt in 0..policy.attempts {
        if attempt > 0 {
            metrics::counter!("chat_webhook_deliveries_total", "endpoint" => endpoint.name.clone(), "outcome" => "retried").increment(1);
        }
        // Signed afresh each attempt: the timestamp is the send's.
        let t = chat_core::clock::now_ms() / 1000;
        let sent = http
            .post(&endpoint.url)
            .timeout(policy.timeout)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("Chat-Webhook-Id", &id)
            .header("Chat-Webhook-Event", event.as_str())
            .header("Chat-Webhook-Attempt", (attempt + 1).to_string())
            .header("Chat-Signature", sign::header(secret, t, &body))
            .body(body.clone())
            .send()
            .await;
        let mut wait = backoff.jittered(attempt, 0.5);
        match sent {
            Ok(r) if r.status().is_success() => {
                metrics::counter!("chat_webhook_deliveries_total", "endpoint" => endpoint.name.clone(), "outcome" => "delivered").increment(1);
                return Ok(());
            }
            Ok(r) => {
                reason = format!("HTTP {}", r.status().as_u16());
                if let Some(after) = retry_after(&r, policy.backoff_max) {
                    wait = wait.max(after);
                }
            }
            Err(e) if e.is_timeout() => {
                reason = format!("timed out after {}", humanize(policy.timeout));
            }
            Err(e) => reason = format!("request failed: {e}"),
        }
        tracing::debug!(endpoint = %endpoint.name, id = %id, attempt = attempt + 1, reason = %reason, "webhook attempt failed");
        if attempt + 1 < policy.attempts {
            tokio::time::sleep(wait).await;
        }
    }
    Err(format!(
        "{} attempts failed; last: {reason}",
        policy.attempts
    ))
}

fn humanize(d: Duration) -> String {
    format!("{} ms", d.as_millis())
}
