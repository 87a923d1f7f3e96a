//! Gemini `generateContent`, with its answers sorted into done, permanent
//! failure and retry, and a client-side requests-per-minute limit.

use crate::settings::GeminiSettings;
use serde_json::{Value, json};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Finish reasons that mean the model would not answer this prompt.
const BLOCKING_FINISH: [&str; 5] = [
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
];

#[derive(Debug, PartialEq)]
pub enum GeminiError {
    /// Not retried: a blocked prompt or answer, or a 400/403/404.
    Permanent(String),
    /// Retried later (429, 5xx, timeouts), not before `after` when Gemini says.
    Transient {
        why: String,
        after: Option<Duration>,
    },
}

#[derive(Debug, PartialEq)]
pub struct Generated {
    pub text: String,
    /// The answer stopped at `maxOutputTokens` (finishReason MAX_TOKENS).
    pub truncated: bool,
}

pub struct Gemini {
    http: reqwest::Client,
    url: String,
    key: reqwest::header::HeaderValue,
    /// The earliest time the next request may start (also pushed out by a
    /// 429's RetryInfo, so every job of this worker waits, not just one).
    next_slot: Mutex<Instant>,
    interval: Duration,
    thinking_budget: Option<u32>,
    attempts: u32,
}

/// A RetryInfo delay is honoured up to this inside one call.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(300);
/// Between model calls of one job (before any `RetryInfo`): 1 s, 2 s, ….
const RETRY: chat_core::backoff::Backoff =
    chat_core::backoff::Backoff::new(Duration::from_millis(500), Duration::from_secs(32));

impl Gemini {
    pub fn new(s: &GeminiSettings) -> Result<Self, reqwest::Error> {
        let mut key = reqwest::header::HeaderValue::from_str(&s.api_key)
            .unwrap_or_else(|_| reqwest::header::HeaderValue::from_static("invalid-key"));
        // Kept out of HTTP/2 header tables and client debug logs.
        key.set_sensitive(true);
        Ok(Self {
            http: reqwest::Client::builder().timeout(s.timeout).build()?,
            url: format!("{}/v1beta/models/{}:generateContent", s.endpoint, s.model),
            key,
            next_slot: Mutex::new(Instant::now()),
            interval: Duration::from_secs(60) / s.rpm.max(1),
            thinking_budget: s.thinking_budget,
            attempts: s.call_attempts.max(1),
        })
    }

    /// Every request of this worker waits until `until`.
    fn pause_until(&self, until: Instant) {
        let mut next = self.next_slot.lock().unwrap_or_else(|p| p.into_inner());
        *next = (*next).max(until);
    }

    /// One model call, retried on transient answers with exponential backoff
    /// and jitter (honouring RetryInfo), so a blip does not restart a whole
    /// map-reduce job.
    pub async fn generate(
        &self,
        system: &str,
        prompt: &str,
        max_output_tokens: u32,
    ) -> Result<Generated, GeminiError> {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match self.generate_once(system, prompt, max_output_tokens).await {
                Err(GeminiError::Transient { why, after }) if attempt < self.attempts => {
                    let wait = after.unwrap_or(RETRY.delay(attempt)).min(MAX_RETRY_DELAY);
                    let wait = wait.mul_f64(1.0 + rand::random::<f64>() * 0.2);
                    if after.is_some() {
                        self.pause_until(Instant::now() + wait);
                    }
                    tracing::info!(
                        why,
                        attempt,
                        wait_ms = chat_core::clock::millis(wait),
                        "model call retry"
                    );
                    tokio::time::sleep(wait).await;
                }
                other => return other,
            }
        }
    }

    /// Waits for this request's slot: at most `rpm` starts per minute.
    async fn pace(&self) {
        let start = {
            let mut next = self.next_slot.lock().unwrap_or_else(|p| p.into_inner());
            let start = (*next).max(Instant::now());
            *next = start + self.interval;
            start
        };
        tokio::time::sleep_until(start.into()).await;
    }

    async fn generate_once(
        &self,
        system: &str,
        prompt: &str,
        max_output_tokens: u32,
    ) -> Result<Generated, GeminiError> {
        self.pace().await;
        let body = request_body(system, prompt, max_output_tokens, self.thinking_budget);
        // The key goes in a header, never in the URL (URLs end up in logs).
        let resp = self
            .http
            .post(&self.url)
            .header("x-goog-api-key", self.key.clone())
            .json(&body)
            .send()
            .await
            .map_err(|e| GeminiError::Transient {
                why: format!("request failed: {}", e.without_url()),
                after: None,
            })?;
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap_or_default();
        classify(status, &text)
    }
}

/// The `GenerateContentRequest`: one user turn, the system instruction, and
/// the generation config.
fn request_body(
    system: &str,
    prompt: &str,
    max_output_tokens: u32,
    thinking_budget: Option<u32>,
) -> Value {
    let mut config = json!({"temperature": 0.2, "maxOutputTokens": max_output_tokens});
    if let Some(b) = thinking_budget {
        config["thinkingConfig"] = json!({"thinkingBudget": b});
    }
    json!({
        "systemInstruction": {"parts": [{"text": system}]},
        "contents": [{"role": "user", "parts": [{"text": prompt}]}],
        "generationConfig": config,
    })
}

/// `"2s"`, `"1.5s"` (protobuf Duration JSON).
fn parse_delay(s: &str) -> Option<Duration> {
    let secs: f64 = s.strip_suffix('s')?.parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(3600.0)))
}

fn classify(status: u16, text: &str) -> Result<Generated, GeminiError> {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let message = chat_core::google::error_message(&body, text);
    match status {
        // A 200 that is not JSON (a proxy, a cut connection) is worth another try.
        200 if body.is_null() => Err(GeminiError::Transient {
            why: "unreadable answer".into(),
            after: None,
        }),
        200 => {
            if let Some(reason) = body["promptFeedback"]["blockReason"].as_str()
                && body["candidates"].as_array().is_none_or(Vec::is_empty)
            {
                return Err(GeminiError::Permanent(format!("prompt blocked: {reason}")));
            }
            let Some(c) = body["candidates"].as_array().and_then(|c| c.first()) else {
                return Err(GeminiError::Permanent("no candidates in the answer".into()));
            };
            let finish = c["finishReason"].as_str().unwrap_or("");
            if BLOCKING_FINISH.contains(&finish) {
                return Err(GeminiError::Permanent(format!(
                    "answer blocked: finishReason {finish}"
                )));
            }
            let text: String = c["content"]["parts"]
                .as_array()
                .map(|ps| ps.iter().filter_map(|p| p["text"].as_str()).collect())
                .unwrap_or_default();
            if text.trim().is_empty() {
                return Err(GeminiError::Permanent(format!(
                    "empty answer (finishReason {finish})"
                )));
            }
            Ok(Generated {
                text: text.trim().to_owned(),
                truncated: finish == "MAX_TOKENS",
            })
        }
        429 => {
            let after = body["error"]["details"].as_array().and_then(|ds| {
                ds.iter()
                    .find(|d| {
                        d["@type"]
                            .as_str()
                            .is_some_and(|t| t.ends_with("google.rpc.RetryInfo"))
                    })
                    .and_then(|d| d["retryDelay"].as_str())
                    .and_then(parse_delay)
            });
            Err(GeminiError::Transient {
                why: format!("429 RESOURCE_EXHAUSTED: {message}"),
                after,
            })
        }
        408 | 409 | 499 | 500..=599 => Err(GeminiError::Transient {
            why: format!("{status}: {message}"),
            after: None,
        }),
        _ => Err(GeminiError::Permanent(format!("{status}: {message}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(text: &str, finish: &str) -> String {
        json!({"candidates": [{"content": {"role": "model", "parts": [{"text": text}]}, "finishReason": finish}]}).to_string()
    }

    fn keys(v: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Field names and types per the `models.generateContent` reference
    /// (GenerateContentRequest, Content, Part, GenerationConfig).
    #[test]
    fn the_request_has_the_generate_content_shape() {
        let body = request_body("be brief", "the transcript", 256, Some(0));
        assert_eq!(
            keys(&body),
            ["contents", "generationConfig", "systemInstruction"]
        );
        assert_eq!(
            body["contents"],
            json!([{"role": "user", "parts": [{"text": "the transcript"}]}])
        );
        assert_eq!(
            body["systemInstruction"],
            json!({"parts": [{"text": "be brief"}]})
        );
        let config = &body["generationConfig"];
        assert_eq!(
            keys(config),
            ["maxOutputTokens", "temperature", "thinkingConfig"]
        );
        assert_eq!(config["maxOutputTokens"], 256);
        assert!(
            config["temperature"]
                .as_f64()
                .is_some_and(|t| (0.0..=2.0).contains(&t))
        );
        assert_eq!(config["thinkingConfig"], json!({"thinkingBudget": 0}));
        let without = request_body("s", "p", 1, None);
        assert_eq!(
            keys(&without["generationConfig"]),
            ["maxOutputTokens", "temperature"]
        );
    }

    #[test]
    fn answers_are_sorted() {
        assert_eq!(
            classify(200, &ok("hi", "STOP")),
            Ok(Generated {
                text: "hi".into(),
                truncated: false
            })
        );
        assert_eq!(
            classify(200, &ok("hi", "MAX_TOKENS")),
            Ok(Generated {
                text: "hi".into(),
                truncated: true
            })
        );
        for f in BLOCKING_FINISH {
            assert!(
                matches!(classify(200, &ok("", f)), Err(GeminiError::Permanent(_))),
                "{f}"
            );
        }
        let blocked = json!({"promptFeedback": {"blockReason": "SAFETY"}}).to_string();
        assert_eq!(
            classify(200, &blocked),
            Err(GeminiError::Permanent("prompt blocked: SAFETY".into()))
        );
        let quota = json!({"error": {"code": 429, "status": "RESOURCE_EXHAUSTED", "message": "quota",
            "details": [{"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "1.5s"}]}})
        .to_string();
        assert!(
            matches!(classify(429, &quota), Err(GeminiError::Transient { after: Some(d), .. }) if d == Duration::from_millis(1500))
        );
        for s in [500, 503, 504] {
            assert!(matches!(
                classify(s, "{}"),
                Err(GeminiError::Transient { .. })
            ));
        }
        for s in [400, 403, 404] {
            assert!(matches!(classify(s, "{}"), Err(GeminiError::Permanent(_))));
        }
        assert!(matches!(
            classify(200, "not json"),
            Err(GeminiError::Transient { .. })
        ));
    }
}
