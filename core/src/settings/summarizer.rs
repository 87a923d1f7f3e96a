//! summarizer-worker settings from `CHAT_*`.

use crate::config::{Common, ConfigError, Settings, Strings};
use std::time::Duration;

#[derive(Clone)]
pub struct GeminiSettings {
    pub api_key: String,
    /// `https://generativelanguage.googleapis.com`; tests stand in here.
    pub endpoint: String,
    pub model: String,
    /// Client-side cap on requests per minute, shared by a worker's jobs.
    pub rpm: u32,
    pub timeout: Duration,
    /// `generationConfig.thinkingConfig.thinkingBudget`: 2.5 models think by
    /// default and the thinking counts against `maxOutputTokens`, which can
    /// leave no text at all; 0 turns it off. `None` sends no thinkingConfig.
    pub thinking_budget: Option<u32>,
    /// Attempts per model call before the job's attempt fails.
    pub call_attempts: u32,
}

impl std::fmt::Debug for GeminiSettings {
    // The key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GeminiSettings")
            .field("endpoint", &self.endpoint)
            .field("model", &self.model)
            .field("rpm", &self.rpm)
            .finish_non_exhaustive()
    }
}

#[derive(Clone, Debug)]
pub struct SummarizerSettings {
    pub common: Common,
    /// The job queue's Redis: apalis-redis is not cluster-safe, so under a
    /// Redis Cluster this must be a standalone Redis.
    pub jobs_redis_url: String,
    /// Unique per process: apalis refuses a worker name still heartbeating.
    pub worker_name: String,
    /// `None`: the local extractive summarizer is used, and says so.
    pub gemini: Option<GeminiSettings>,
    /// Characters of transcript per model call; longer histories are
    /// summarized in chunks and the partial summaries combined.
    pub input_budget: usize,
    pub summary_ttl: Duration,
    /// Attempts of a job before it fails for good (apalis's own cap is 25).
    pub max_attempts: usize,
    pub concurrency: usize,
    /// How often the worker polls for new jobs (pushes by other processes).
    pub poll: Duration,
}

impl SummarizerSettings {
    pub fn from_strings(src: &dyn Strings) -> Result<Self, ConfigError> {
        let mut s = Settings::new(src);
        let common = Common::read(&mut s);
        let jobs_redis_url = common.read_jobs_url(&mut s, true);
        let worker_name = s.opt("CHAT_SUMMARIZER_NAME").unwrap_or_else(|| {
            format!(
                "summarizer-{}-{:06x}",
                std::process::id(),
                rand::random::<u32>() & 0xff_ffff
            )
        });
        let gemini = match s.opt("CHAT_GEMINI_API_KEY") {
            None => None,
            Some(api_key) => {
                let endpoint = s.string(
                    "CHAT_GEMINI_ENDPOINT",
                    "https://generativelanguage.googleapis.com",
                );
                if !(endpoint.starts_with("https://") || endpoint.starts_with("http://")) {
                    s.error(format!(
                        "CHAT_GEMINI_ENDPOINT={endpoint:?}: must be an http(s) URL"
                    ));
                }
                let model = s.string("CHAT_GEMINI_MODEL", "gemini-2.5-flash");
                if model.is_empty()
                    || !model
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                {
                    s.error(format!("CHAT_GEMINI_MODEL={model:?}: not a model name"));
                }
                let rpm: u32 = s.parse("CHAT_GEMINI_RPM", 60);
                if rpm == 0 {
                    s.error("CHAT_GEMINI_RPM: must be at least 1");
                }
                let thinking_default = if model.starts_with("gemini-2.5") {
                    Some(0)
                } else {
                    None
                };
                let thinking_budget = match s.opt("CHAT_GEMINI_THINKING_BUDGET").as_deref() {
                    None => thinking_default,
                    Some("off") => None,
                    Some(_) => Some(s.parse("CHAT_GEMINI_THINKING_BUDGET", 0u32)),
                };
                Some(GeminiSettings {
                    api_key,
                    endpoint: endpoint.trim_end_matches('/').to_owned(),
                    model,
                    rpm,
                    timeout: s.duration("CHAT_GEMINI_TIMEOUT", Duration::from_secs(60)),
                    thinking_budget,
                    call_attempts: s.parse("CHAT_GEMINI_CALL_ATTEMPTS", 3),
                })
            }
        };
        let settings = Self {
            common,
            jobs_redis_url,
            worker_name,
            gemini,
            input_budget: s.parse("CHAT_SUMMARY_INPUT_BUDGET", 24_000),
            summary_ttl: s.duration("CHAT_SUMMARY_TTL", Duration::from_secs(7 * 86_400)),
            max_attempts: s.parse("CHAT_SUMMARY_MAX_ATTEMPTS", 5),
            concurrency: s.parse("CHAT_SUMMARIZER_CONCURRENCY", 4),
            poll: s.duration("CHAT_SUMMARIZER_POLL", Duration::from_millis(200)),
        };
        if settings.input_budget < 500 {
            s.error("CHAT_SUMMARY_INPUT_BUDGET: must be at least 500 characters");
        }
        if settings.max_attempts == 0 || settings.max_attempts > 25 || settings.concurrency == 0 {
            s.error("CHAT_SUMMARY_MAX_ATTEMPTS must be 1 to 25 and CHAT_SUMMARIZER_CONCURRENCY at least 1");
        }
        if settings.poll.is_zero() || settings.summary_ttl.is_zero() {
            s.error("CHAT_SUMMARIZER_POLL / CHAT_SUMMARY_TTL: must be more than zero");
        }
        s.finish()?;
        Ok(settings)
    }
}
