//! summarizer-worker: apalis jobs on apalis-redis that summarize a room with
//! Gemini (or, without a key, an extractive summary that says so), store the
//! summary with a TTL and publish it into the room as a `summary` message.
//!
//! apalis-redis 1.0 as it behaves (see docs/design.md): jobs pushed by
//! another process are only picked up promptly with `poll_with_interval`;
//! failed jobs are rescheduled up to 25 times whatever `max_attempts` says,
//! so failures we consider final return `AbortError`; `push` returns no id,
//! so tasks carry our own.

pub mod extractive;
pub mod gemini;
pub use chat_core::settings::summarizer as settings;
use chat_jobs as jobs;
pub mod summarize;

use apalis::prelude::*;
use chat_core::keys::Keys;
use chat_core::protocol::Kind;
use chat_core::redis_conn;
use chat_core::redis_conn::Conn;
use chat_core::scripts::{AppendRequest, Scripts};
use gemini::{Gemini, GeminiError};
use jobs::{SummaryJob, finish};
use settings::SummarizerSettings;
use std::sync::Arc;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, info, warn};

#[derive(Debug, thiserror::Error)]
pub enum SummarizerError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("http client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("worker: {0}")]
    Worker(String),
}

/// The user summaries are published as.
pub const SUMMARY_USER: &str = "summarizer";
/// Summary messages are cut to fit the room's text limit (bytes).
const SUMMARY_MESSAGE_BYTES: usize = 4000;

struct JobCtx {
    keys: Keys,
    redis: Conn,
    scripts: Scripts,
    settings: SummarizerSettings,
    gemini: Option<Gemini>,
}

pub struct Summarizer {
    settings: SummarizerSettings,
    ctx: Arc<JobCtx>,
}

/// At most `max` bytes, cut at a character boundary, with an ellipsis when cut.
fn cut(s: &str, max: usize) -> std::borrow::Cow<'_, str> {
    if s.len() <= max {
        return s.into();
    }
    let mut end = max.saturating_sub('…'.len_utf8());
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end]).into()
}

impl Summarizer {
    pub async fn build(settings: SummarizerSettings) -> Result<Self, SummarizerError> {
        chat_core::metrics::register(chat_core::metrics::Service::Summarizer);
        let keys = settings.common.keys();
        let redis = redis_conn::manager(&settings.common.redis_url).await?;
        let gemini = settings.gemini.as_ref().map(Gemini::new).transpose()?;
        match &settings.gemini {
            Some(g) => info!(model = %g.model, rpm = g.rpm, "summaries by Gemini"),
            None => warn!("no CHAT_GEMINI_API_KEY: summaries are extractive, and say so"),
        }
        Ok(Self {
            ctx: Arc::new(JobCtx {
                keys,
                redis,
                scripts: Scripts::for_store(
                    settings.common.redis_durable,
                    settings.common.ack_replicas,
                ),
                settings: settings.clone(),
                gemini,
            }),
            settings,
        })
    }

    /// Works jobs until `shutdown`; the jobs in hand finish first. apalis
    /// ends a worker on a backend error (one failed heartbeat against the
    /// queue's Redis): it is started again, with backoff and a fresh name
    /// (apalis refuses a name that is still heartbeating).
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), SummarizerError> {
        let mut backoff =
            chat_core::backoff::Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut generation = 0u32;
        loop {
            let name = if generation == 0 {
                self.settings.worker_name.clone()
            } else {
                format!("{}-r{generation}", self.settings.worker_name)
            };
            generation += 1;
            let result = self.run_once(&name, shutdown.clone()).await;
            if shutdown.is_cancelled() {
                info!("summarizer stopped");
                return Ok(());
            }
            match result {
                Ok(()) => backoff.reset(),
                Err(e) => warn!(error = %e, "summarizer worker ended; starting it again"),
            }
            if !backoff.sleep(&shutdown).await {
                return Ok(());
            }
        }
    }

    async fn run_once(
        &self,
        name: &str,
        shutdown: CancellationToken,
    ) -> Result<(), SummarizerError> {
        // Our connection settings (timeouts, retries), not the library's defaults.
        let conn = redis_conn::standalone(&self.settings.jobs_redis_url).await?;
        let backend = apalis_redis::RedisStorage::<SummaryJob>::new(conn)
            .with_config(jobs::queue_config(&self.ctx.keys))
            .poll_with_interval(self.settings.poll);
        let worker = WorkerBuilder::new(name)
            .backend(backend)
            .data(self.ctx.clone())
            .concurrency(self.settings.concurrency)
            .build(run_job);
        info!(worker = name, "summarizer ready");
        worker
            .run_until(async move {
                shutdown.cancelled().await;
                Ok::<(), std::io::Error>(())
            })
            .await
            .map_err(|e| SummarizerError::Worker(e.to_string()))
    }
}

enum JobError {
    Permanent(String),
    Transient {
        why: String,
        after: Option<Duration>,
    },
}

impl From<GeminiError> for JobError {
    fn from(e: GeminiError) -> Self {
        match e {
            GeminiError::Permanent(w) => JobError::Permanent(w),
            GeminiError::Transient { why, after } => JobError::Transient { why, after },
        }
    }
}

async fn run_job(
    job: SummaryJob,
    attempt: Attempt,
    ctx: Data<Arc<JobCtx>>,
) -> Result<(), BoxDynError> {
    let span = tracing::info_span!("summary", room = %job.room, job = %job.job_id);
    run_job_inner(job, attempt.current(), (*ctx).clone())
        .instrument(span)
        .await
}

async fn run_job_inner(job: SummaryJob, n: usize, ctx: Arc<JobCtx>) -> Result<(), BoxDynError> {
    let mut conn = ctx.redis.clone();
    let attempts = n.to_string();
    finish(
        &ctx.keys,
        &mut conn,
        &job.room,
        &job.job_id,
        "running",
        &[("attempts", attempts.as_str()), ("error", "")],
    )
    .await
    .map_err(|e| -> BoxDynError { e.to_string().into() })?;
    // Touch the record while working, so a long job is not taken for abandoned.
    let work = summarize_room(&ctx, &job);
    tokio::pin!(work);
    let mut touch = tokio::time::interval(jobs::TOUCH_EVERY);
    touch.tick().await;
    let outcome = loop {
        tokio::select! {
            r = &mut work => break r,
            _ = touch.tick() => {
                let _ = jobs::touch(&ctx.keys, &mut conn, &job.room, &job.job_id).await;
            }
        }
    };
    // Out of attempts, a transient failure is final too.
    let outcome = match outcome {
        Err(JobError::Transient { why, .. }) if n >= ctx.settings.max_attempts => Err(
            JobError::Permanent(format!("gave up after {n} attempts: {why}")),
        ),
        other => other,
    };
    match outcome {
        Ok(()) => {
            metrics::counter!("chat_summary_jobs_total", "status" => "done").increment(1);
            Ok(())
        }
        Err(JobError::Permanent(why)) => {
            warn!(why, "summary failed for good");
            metrics::counter!("chat_summary_jobs_total", "status" => "failed").increment(1);
            let _ = finish(
                &ctx.keys,
                &mut conn,
                &job.room,
                &job.job_id,
                "failed",
                &[("error", why.as_str())],
            )
            .await;
            Err(AbortError::new(why).into())
        }
        Err(JobError::Transient { why, after }) => {
            warn!(why, attempt = n, "summary attempt failed; will retry");
            metrics::counter!("chat_summary_jobs_total", "status" => "retry").increment(1);
            let _ = finish(
                &ctx.keys,
                &mut conn,
                &job.room,
                &job.job_id,
                "pending",
                &[("error", why.as_str())],
            )
            .await;
            // apalis reschedules without a delay of its own choosing: honour
            // Gemini's RetryInfo here.
            if let Some(d) = after {
                tokio::time::sleep(d.min(Duration::from_secs(60))).await;
            }
            Err(why.into())
        }
    }
}

async fn summarize_room(ctx: &JobCtx, job: &SummaryJob) -> Result<(), JobError> {
    let mut conn = ctx.redis.clone();
    let unavailable = |e: chat_core::scripts::ScriptError| JobError::Transient {
        why: format!("redis: {e}"),
        after: None,
    };
    let messages = summarize::load(
        &ctx.scripts,
        &mut conn,
        &ctx.keys,
        &job.room,
        job.since,
        job.until,
    )
    .await
    .map_err(unavailable)?;
    let outcome = if messages.is_empty() {
        summarize::Outcome {
            summary: "No messages to summarize.".into(),
            method: "none".into(),
            truncated: false,
            calls: 0,
        }
    } else if let (Some(g), Some(s)) = (&ctx.gemini, &ctx.settings.gemini) {
        let lines: Vec<String> = messages.iter().map(summarize::transcript_line).collect();
        summarize::with_gemini(g, &s.model, &lines, ctx.settings.input_budget).await?
    } else {
        summarize::extractive(&messages)
    };
    let now = chat_core::clock::now_ms();
    let stored = jobs::RoomSummary {
        room: job.room.clone(),
        job_id: job.job_id.clone(),
        summary: outcome.summary.clone(),
        method: outcome.method.clone(),
        truncated: outcome.truncated,
        messages: messages.len() as u64,
        from_offset: messages.first().map(|m| m.offset),
        to_offset: messages.last().map(|m| m.offset),
        created_at: now,
    };
    let ttl = ctx.settings.summary_ttl.as_secs().max(1);
    if !messages.is_empty() {
        // An empty window does not replace the room's latest summary.
        let stored =
            serde_json::to_string(&stored).map_err(|e| JobError::Permanent(e.to_string()))?;
        let _: () =
            redis::AsyncCommands::set_ex(&mut conn, ctx.keys.room_summary(&job.room), stored, ttl)
                .await
                .map_err(|e| JobError::Transient {
                    why: format!("redis: {e}"),
                    after: None,
                })?;
        // Published with the job id as client_id: a retried job is stored once.
        let streams = &ctx.settings.common.streams;
        let req = AppendRequest {
            room: &job.room,
            user: SUMMARY_USER,
            text: &cut(&outcome.summary, SUMMARY_MESSAGE_BYTES),
            // The id's random part: unique per job, short whatever the room's name.
            client_id: &format!(
                "summary-{}",
                job.job_id
                    .rsplit_once('~')
                    .map_or(job.job_id.as_str(), |(_, h)| h)
            ),
            kind: Kind::Summary,
            retention: streams.retention(&job.room),
            dedup_window: streams.dedup.window,
            shard_maxlen: streams.fanout.shard_maxlen,
            op: Default::default(),
            checks: Default::default(),
        };
        let ack = ctx
            .scripts
            .append(&mut conn, &ctx.keys, &req)
            .await
            .map_err(unavailable)?;
        tracing::debug!(offset = ack.offset, duplicate = ack.duplicate, client_id = %ack.client_id, "summary published");
    }
    info!(method = %outcome.method, calls = outcome.calls, messages = messages.len(), "summary done");
    finish(
        &ctx.keys,
        &mut conn,
        &job.room,
        &job.job_id,
        "done",
        &[
            ("summary", outcome.summary.as_str()),
            ("method", outcome.method.as_str()),
            ("truncated", if outcome.truncated { "1" } else { "0" }),
            ("error", ""),
        ],
    )
    .await
    .map_err(|e| JobError::Transient {
        why: e.to_string(),
        after: None,
    })
}
