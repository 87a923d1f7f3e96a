//! Summary jobs as the API and fanout see them: submission (one pending or
//! running job per room), the job record, and the room's latest summary.
//!
//! Job ids are ours (`<room>~<hex>`): apalis-redis's `push` returns no id,
//! so the task is built with this id, and the record lives next to the
//! room's keys. The apalis queue itself may live on another Redis
//! (`CHAT_JOBS_REDIS_URL`).

use apalis::prelude::*;
use apalis_redis::{Config as QueueConfig, RedisStorage};
use chat_core::entry;
use chat_core::keys::Keys;
use chat_core::pattern::valid_room;
use chat_core::redis_conn::Conn;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::time::Duration;

/// The job's arguments in the queue.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct SummaryJob {
    pub job_id: String,
    pub room: String,
    /// Only messages at or after this time (ms), when given.
    pub since: Option<u64>,
    /// Only messages at or before this time (ms), when given.
    pub until: Option<u64>,
    /// `api` or `auto`.
    pub reason: String,
}

#[derive(Debug, thiserror::Error)]
pub enum JobsError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// The submit script answered something this code cannot read.
    #[error(transparent)]
    Reply(#[from] chat_core::entry::ReplyError),
    /// apalis could not queue the job (its record says failed).
    #[error("queue: {0}")]
    Queue(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The room's current job changed under every attempt to submit.
    #[error("the room's current job kept changing")]
    Contended,
    #[error("{0}")]
    BadRequest(String),
}

/// What a submission did.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize, PartialEq)]
pub struct Submitted {
    pub room: String,
    pub job_id: String,
    /// True when the room already had a pending or running job: that one is returned.
    pub existing: bool,
}

/// A job's status as `GET /v1/summaries/{id}` answers it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct JobStatus {
    pub job_id: String,
    pub room: String,
    /// `pending`, `running`, `done` or `failed`.
    pub status: String,
    pub attempts: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub summary: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub truncated: Option<bool>,
}

/// A room's latest summary, as the worker stores it and
/// `GET /v1/rooms/{room}/summary` answers it.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct RoomSummary {
    pub room: String,
    pub job_id: String,
    pub summary: String,
    /// `gemini:<model>` or `extractive`.
    pub method: String,
    pub truncated: bool,
    /// Messages summarized.
    pub messages: u64,
    /// Offsets of the first and last message summarized (null: none).
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub from_offset: Option<u64>,
    #[cfg_attr(feature = "openapi", schema(required = true))]
    pub to_offset: Option<u64>,
    /// When it was made, in ms since the epoch.
    pub created_at: u64,
}

/// How long job records and the current-job marker are kept.
pub const RECORD_TTL: Duration = Duration::from_secs(7 * 86_400);
/// A pending or running job untouched this long is considered abandoned
/// (running jobs touch their record every `TOUCH_EVERY`).
pub const STALE: Duration = Duration::from_secs(30 * 60);
pub const TOUCH_EVERY: Duration = Duration::from_secs(30);

pub type Queue = RedisStorage<SummaryJob>;

/// The queue's config: hash-tagged name, heartbeats that find a crashed
/// worker's jobs within seconds.
pub fn queue_config(keys: &Keys) -> QueueConfig {
    QueueConfig::default()
        .queue(keys.summary_queue())
        .heartbeat_interval(Duration::from_secs(2))
        .missed_heartbeats(5)
        .batch_size(1)
}

/// The room a job id belongs to.
pub fn room_of(job_id: &str) -> Option<&str> {
    let (room, hex) = job_id.rsplit_once('~')?;
    (valid_room(room) && !hex.is_empty() && hex.bytes().all(|b| b.is_ascii_hexdigit()))
        .then_some(room)
}

#[derive(Clone)]
pub struct Jobs {
    keys: Keys,
    redis: Conn,
    /// Connected on first use: chat must not depend on the queue's Redis.
    queue: std::sync::Arc<tokio::sync::OnceCell<Queue>>,
    jobs_redis_url: String,
    submit: std::sync::Arc<redis::Script>,
}

impl Jobs {
    pub async fn connect(keys: Keys, redis: Conn, jobs_redis_url: &str) -> Result<Self, JobsError> {
        // A cluster URL is refused on first use (`standalone`), so chat
        // runs on a cluster without a job queue.
        if chat_core::redis_conn::cluster_nodes(jobs_redis_url).is_none() {
            redis::Client::open(jobs_redis_url)?;
        }
        Ok(Self {
            keys,
            redis,
            queue: Default::default(),
            jobs_redis_url: jobs_redis_url.to_owned(),
            submit: std::sync::Arc::new(redis::Script::new(include_str!("submit.lua"))),
        })
    }

    async fn queue(&self) -> Result<Queue, JobsError> {
        let q = self
            .queue
            .get_or_try_init(|| async {
                // A queue that cannot be reached, or a cluster URL (the queue
                // needs a standalone Redis): summaries are unavailable.
                let conn = chat_core::redis_conn::standalone(&self.jobs_redis_url)
                    .await
                    .map_err(|e| JobsError::Queue(Box::new(e)))?;
                Ok::<_, JobsError>(RedisStorage::new(conn).with_config(queue_config(&self.keys)))
            })
            .await?;
        Ok(q.clone())
    }

    /// Queues a summary of `room`, or returns its pending/running job.
    pub async fn submit(
        &self,
        room: &str,
        since: Option<u64>,
        until: Option<u64>,
        reason: &str,
    ) -> Result<Submitted, JobsError> {
        if !valid_room(room) {
            return Err(JobsError::BadRequest(format!(
                "{room:?} is not a room name"
            )));
        }
        let mut conn = self.redis.clone();
        let id = format!("{room}~{:016x}", rand::random::<u64>());
        let now = chat_core::clock::now_ms();
        for _ in 0..5 {
            let seen: Option<String> =
                redis::AsyncCommands::get(&mut conn, self.keys.room_summary_job(room)).await?;
            let seen_record = match &seen {
                Some(s) => self.keys.summary_job(room, s),
                None => self.keys.summary_job(room, &id),
            };
            let reply: redis::Value = self
                .submit
                .key(self.keys.room_summary_job(room))
                .key(seen_record)
                .key(self.keys.summary_job(room, &id))
                .arg(seen.as_deref().unwrap_or(""))
                .arg(&id)
                .arg(room)
                .arg(since.map(|s| s.to_string()).unwrap_or_default())
                .arg(until.map(|s| s.to_string()).unwrap_or_default())
                .arg(now)
                .arg(RECORD_TTL.as_secs())
                .arg(reason)
                .arg(chat_core::clock::millis(STALE))
                .invoke_async(&mut conn)
                .await?;
            let parts = entry::array(&reply)?;
            let kind = parts.first().map(entry::string).transpose()?;
            match (kind.as_deref(), parts.get(1)) {
                (Some("existing"), Some(v)) => {
                    return Ok(Submitted {
                        room: room.to_owned(),
                        job_id: entry::string(v)?,
                        existing: true,
                    });
                }
                (Some("new"), _) => {
                    let job = SummaryJob {
                        job_id: id.clone(),
                        room: room.to_owned(),
                        since,
                        until,
                        reason: reason.to_owned(),
                    };
                    let task = TaskBuilder::new(job)
                        .task_id(TaskId::from_string(&id))
                        .build();
                    let pushed = match self.queue().await {
                        Ok(mut queue) => queue
                            .push_task(task)
                            .await
                            .map(drop)
                            .map_err(|e| JobsError::Queue(Box::new(e))),
                        Err(e) => Err(e),
                    };
                    if let Err(e) = pushed {
                        let why = format!("could not queue: {e}");
                        self.finish(room, &id, "failed", &[("error", why.as_str())])
                            .await?;
                        return Err(e);
                    }
                    return Ok(Submitted {
                        room: room.to_owned(),
                        job_id: id,
                        existing: false,
                    });
                }
                _ => continue,
            }
        }
        Err(JobsError::Contended)
    }

    /// The job's record, or `None` for an unknown id.
    pub async fn status(&self, job_id: &str) -> Result<Option<JobStatus>, JobsError> {
        let Some(room) = room_of(job_id) else {
            return Ok(None);
        };
        let mut conn = self.redis.clone();
        let h: HashMap<String, String> =
            redis::AsyncCommands::hgetall(&mut conn, self.keys.summary_job(room, job_id)).await?;
        let Some(status) = h.get("status").cloned() else {
            return Ok(None);
        };
        let summary = h.get("summary").cloned().filter(|s| !s.is_empty());
        Ok(Some(JobStatus {
            job_id: job_id.to_owned(),
            room: room.to_owned(),
            status,
            attempts: h.get("attempts").and_then(|a| a.parse().ok()).unwrap_or(0),
            summary,
            error: h.get("error").cloned().filter(|s| !s.is_empty()),
            method: h.get("method").cloned().filter(|s| !s.is_empty()),
            truncated: h.get("truncated").map(|t| t == "1"),
        }))
    }

    /// The room's latest summary, as stored by the worker.
    pub async fn latest(&self, room: &str) -> Result<Option<RoomSummary>, JobsError> {
        let mut conn = self.redis.clone();
        let raw: Option<String> =
            redis::AsyncCommands::get(&mut conn, self.keys.room_summary(room)).await?;
        Ok(raw.and_then(|r| serde_json::from_str(&r).ok()))
    }

    /// Records the job's end and frees the room for its next job.
    pub async fn finish(
        &self,
        room: &str,
        id: &str,
        status: &str,
        fields: &[(&str, &str)],
    ) -> Result<(), JobsError> {
        finish(
            &self.keys,
            &mut self.redis.clone(),
            room,
            id,
            status,
            fields,
        )
        .await
    }
}

/// Marks a running job alive (its record's `updated_at`), so a submission
/// does not take it for abandoned.
pub async fn touch(keys: &Keys, conn: &mut Conn, room: &str, id: &str) -> redis::RedisResult<()> {
    let now = chat_core::clock::now_ms();
    redis::AsyncCommands::hset(conn, keys.summary_job(room, id), "updated_at", now).await
}

/// Writes the record's status (and fields); a final status frees the room.
pub async fn finish(
    keys: &Keys,
    conn: &mut Conn,
    room: &str,
    id: &str,
    status: &str,
    fields: &[(&str, &str)],
) -> Result<(), JobsError> {
    let now = chat_core::clock::now_ms().to_string();
    let record = keys.summary_job(room, id);
    let mut pipe = redis::pipe();
    let mut all: Vec<(&str, &str)> = vec![("status", status), ("updated_at", now.as_str())];
    all.extend_from_slice(fields);
    pipe.hset_multiple(&record, &all).ignore();
    pipe.expire(&record, RECORD_TTL.as_secs() as i64).ignore();
    if status == "done" || status == "failed" {
        // Only this job's marker: a newer job may already hold the room.
        pipe.cmd("EVAL")
            .arg("if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0")
            .arg(1)
            .arg(keys.room_summary_job(room))
            .arg(id)
            .ignore();
    }
    pipe.query_async::<()>(conn).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_ids_carry_their_room() {
        assert_eq!(room_of("team:eng~00ff"), Some("team:eng"));
        assert_eq!(room_of("bad room~00ff"), None);
        assert_eq!(room_of("team~"), None);
        assert_eq!(room_of("team~xyz"), None);
        assert_eq!(room_of("nothing"), None);
    }
}
