//! A wiremock double of Gemini's `models.generateContent`, on real HTTP.
//!
//! A call (`POST /v1beta/models/{model}:generateContent`, the key in
//! `x-goog-api-key`, a JSON body with `contents`) is recorded and answered by
//! the first matching [`FakeGemini::answer_when_prompt_contains`], else the
//! next [`FakeGemini::answer_next`], else [`derived_summary`] of the prompt.
//! Anything else is refused as Google would; a key in the URL is refused too
//! (URLs end up in logs) and flagged. Our request's shape is unit-tested in
//! `summarizer_worker::gemini`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use wiremock::matchers::{any, header, method};
use wiremock::{Mock, MockBuilder, MockServer, Request, Respond, ResponseTemplate};

use crate::google_api::{MockSwitch, bad_request_detail, google_error, json_object, start_server};

pub const API_KEY_HEADER: &str = "x-goog-api-key";
pub const KEY_IN_URL_MESSAGE: &str = "API key must be sent in the x-goog-api-key header";
/// Each line quoted by [`derived_summary`] is cut to this many characters.
pub const SUMMARY_LINE_CHARS: usize = 60;

const UNREGISTERED_MESSAGE: &str = "Method doesn't allow unregistered callers (callers without \
     established identity). Please use API Key or other form of API consumer identity.";
const API_KEY_INVALID_MESSAGE: &str = "API key not valid. Please pass a valid API key.";
const QUOTA_MESSAGE: &str = "You exceeded your current quota, please check your plan and billing \
     details. For more information on this error, head to: \
     https://ai.google.dev/gemini-api/docs/rate-limits.";
/// Finish reasons whose candidate has no `content` at all.
const NO_CONTENT_FINISH: &[&str] = &["SAFETY", "PROHIBITED_CONTENT", "SPII", "BLOCKLIST"];

/// Mock priorities (lower wins).
const WHEN_PROMPT_CONTAINS: u8 = 1;
const NEXT: u8 = 2;
const DEFAULT: u8 = 5;
const REFUSE: u8 = 255;

/// A well-formed, authenticated `generateContent` request.
#[derive(Clone, Debug)]
pub struct GeminiCall {
    pub model: String,
    /// The `systemInstruction` parts' text joined with `\n`.
    pub system: String,
    /// The text of every part of every `contents` entry, joined with `\n`.
    pub prompt: String,
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
}

/// A canned answer to a call.
#[derive(Clone, Debug)]
pub enum GeminiAnswer {
    /// 200, [`derived_summary`] of the prompt, `STOP`.
    Summary,
    /// 200, the first half of [`derived_summary`], `MAX_TOKENS`.
    MaxTokens,
    /// 200, a candidate with this finishReason and no text (`SAFETY` with
    /// `safetyRatings`, one of them `blocked`).
    Finish(&'static str),
    /// 200, no `candidates`, `promptFeedback.blockReason` set.
    PromptBlocked(&'static str),
    /// 429 with `QuotaFailure` and, when `Some`, `RetryInfo` details (Gemini
    /// sends no `Retry-After`).
    ResourceExhausted { retry_delay: Option<&'static str> },
    /// This status with Google's error body; outside 400..=599, a 500.
    Status(u16),
}

/// The running fake. The server stops when this is dropped.
pub struct FakeGemini {
    server: MockServer,
    shared: Arc<Shared>,
}

struct Shared {
    api_key: String,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    calls: Vec<GeminiCall>,
    delay: Duration,
    key_in_url_seen: bool,
    /// The mounted answers; dropping a switch unmounts its mock.
    answer_next: Vec<MockSwitch>,
    by_needle: HashMap<String, MockSwitch>,
}

impl FakeGemini {
    /// Starts the fake; calls must carry `api_key` in `x-goog-api-key`.
    pub async fn start(api_key: &str) -> FakeGemini {
        assert!(!api_key.is_empty(), "FakeGemini::start: an empty API key");
        let server = start_server().await;
        let shared = Arc::new(Shared {
            api_key: api_key.to_owned(),
            state: Mutex::default(),
        });
        call_request(&shared)
            .respond_with(answering(&shared, GeminiAnswer::Summary))
            .with_priority(DEFAULT)
            .mount(&server)
            .await;
        let s = Arc::clone(&shared);
        Mock::given(any())
            .respond_with(move |r: &Request| s.refuse(r))
            .with_priority(REFUSE)
            .mount(&server)
            .await;
        FakeGemini { server, shared }
    }

    /// Calls go to `POST {endpoint}/v1beta/models/{model}:generateContent`.
    pub fn endpoint(&self) -> String {
        self.server.uri()
    }

    /// Every call, in order of arrival, whatever it was answered.
    pub fn calls(&self) -> Vec<GeminiCall> {
        self.shared.state().calls.clone()
    }

    pub fn call_count(&self) -> usize {
        self.shared.state().calls.len()
    }

    /// The next `n` calls get `a`, after those queued before. A call
    /// answered by [`Self::answer_when_prompt_contains`] does not use one up.
    pub async fn answer_next(&self, n: usize, a: GeminiAnswer) {
        if n == 0 {
            return;
        }
        let (switch, on) = MockSwitch::new();
        let mock = call_request(&self.shared)
            .and(on)
            .respond_with(answering(&self.shared, a))
            .up_to_n_times(u64::try_from(n).unwrap_or(u64::MAX))
            .with_priority(NEXT);
        self.server.register(mock).await;
        self.shared.state().answer_next.push(switch);
    }

    /// Every call whose prompt contains `needle` gets `a`, until
    /// [`Self::clear`]. Setting a needle again replaces its answer; when
    /// several match, the one mounted first wins.
    pub async fn answer_when_prompt_contains(&self, needle: &str, a: GeminiAnswer) {
        let (switch, on) = MockSwitch::new();
        let wanted = needle.to_owned();
        let mock = call_request(&self.shared)
            .and(move |r: &Request| call(r).is_some_and(|c| c.prompt.contains(&wanted)))
            .and(on)
            .respond_with(answering(&self.shared, a))
            .with_priority(WHEN_PROMPT_CONTAINS);
        self.server.register(mock).await;
        let mut state = self.shared.state();
        state.by_needle.insert(needle.to_owned(), switch);
    }

    /// Forgets every answer set: calls get `Summary` again.
    pub fn clear(&self) {
        let mut state = self.shared.state();
        state.answer_next.clear();
        state.by_needle.clear();
    }

    /// Whether any request so far had a `key` parameter in its URL.
    pub fn key_in_url_seen(&self) -> bool {
        self.shared.state().key_in_url_seen
    }

    /// Every call arriving from now on waits `d` before it is answered.
    pub fn set_delay(&self, d: Duration) {
        self.shared.state().delay = d;
    }
}

/// The text of a [`GeminiAnswer::Summary`] for `prompt`: its non-empty lines
/// (trimmed, each cut to [`SUMMARY_LINE_CHARS`] characters) as
/// `"Summary of {N} lines: {first}… {last}"`, `"Summary of 1 line: {line}"`
/// or `"Summary of 0 lines."`.
pub fn derived_summary(prompt: &str) -> String {
    let lines: Vec<String> = prompt
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(|l| l.chars().take(SUMMARY_LINE_CHARS).collect())
        .collect();
    match lines.as_slice() {
        [] => "Summary of 0 lines.".to_owned(),
        [only] => format!("Summary of 1 line: {only}"),
        [first, .., last] => format!("Summary of {} lines: {first}… {last}", lines.len()),
    }
}

/// An authenticated, well-formed call.
fn call_request(shared: &Shared) -> MockBuilder {
    Mock::given(method("POST"))
        .and(header(API_KEY_HEADER, shared.api_key.as_str()))
        .and(|r: &Request| !key_in_url(r) && call(r).is_some())
}

/// The call a request makes: a JSON body with non-empty `contents`.
fn call(r: &Request) -> Option<GeminiCall> {
    let model = model(r.url.path())?.to_owned();
    let body = json_object(r)?;
    let contents = body.get("contents")?.as_array().filter(|c| !c.is_empty())?;
    let prompt: Vec<&str> = contents.iter().flat_map(part_texts).collect();
    let system: Vec<&str> = part_texts(&body["systemInstruction"]).collect();
    Some(GeminiCall {
        model,
        system: system.join("\n"),
        prompt: prompt.join("\n"),
        at: Instant::now(),
        body: body.clone(),
    })
}

fn part_texts(content: &Value) -> impl Iterator<Item = &str> {
    let parts = content["parts"].as_array().into_iter().flatten();
    parts.filter_map(|p| p["text"].as_str())
}

/// The model of a generateContent path.
fn model(path: &str) -> Option<&str> {
    let model = path.strip_prefix("/v1beta/models/")?;
    let model = model.strip_suffix(":generateContent")?;
    (!model.is_empty() && !model.contains(['/', ':'])).then_some(model)
}

fn key_in_url(r: &Request) -> bool {
    r.url.query_pairs().any(|(name, _)| name == "key")
}

/// A responder that records the call and answers `answer`.
fn answering(shared: &Arc<Shared>, answer: GeminiAnswer) -> impl Respond + 'static {
    let shared = Arc::clone(shared);
    move |r: &Request| {
        let Some(call) = call(r) else {
            return shared.refuse(r);
        };
        let mut state = shared.state();
        let template = answer.template(&call, state.calls.len() + 1);
        state.calls.push(call);
        match state.delay {
            Duration::ZERO => template,
            delay => template.set_delay(delay),
        }
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Answers a request that is not a call.
    fn refuse(&self, r: &Request) -> ResponseTemplate {
        let (code, message, details) = self.why_not_a_call(r);
        self.state().key_in_url_seen |= key_in_url(r);
        google_error(code, message, details)
    }

    /// In Google's order: the key in the URL, the path, the key, the body.
    fn why_not_a_call(&self, r: &Request) -> (u16, &'static str, Vec<Value>) {
        let key = r.headers.get(API_KEY_HEADER).map(|v| v.as_bytes());
        match key {
            _ if key_in_url(r) => (400, KEY_IN_URL_MESSAGE, vec![]),
            _ if r.method != "POST" || model(r.url.path()).is_none() => {
                (404, "Method not found.", vec![])
            }
            None | Some(b"") => (403, UNREGISTERED_MESSAGE, vec![]),
            Some(key) if key != self.api_key.as_bytes() => {
                let reason = json!({"@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID", "domain": "googleapis.com"});
                (400, API_KEY_INVALID_MESSAGE, vec![reason])
            }
            Some(_) if json_object(r).is_none() => {
                let message = "Invalid JSON payload received. Expected a JSON object.";
                (400, message, vec![bad_request_detail(None, message)])
            }
            Some(_) => {
                let message = "* GenerateContentRequest.contents: contents is not specified\n";
                (400, message, vec![])
            }
        }
    }
}

impl GeminiAnswer {
    /// The answer to `call`, the `seq`th call.
    fn template(&self, call: &GeminiCall, seq: usize) -> ResponseTemplate {
        let mut answer = match self {
            Self::Summary => with_text(&derived_summary(&call.prompt), "STOP"),
            Self::MaxTokens => with_text(&cut_short(&call.prompt), "MAX_TOKENS"),
            Self::Finish(reason) => json!({ "candidates": [no_text(reason)] }),
            Self::PromptBlocked(reason) => {
                json!({"promptFeedback": rated(json!({ "blockReason": reason }), reason)})
            }
            Self::ResourceExhausted { retry_delay } => {
                return resource_exhausted(&call.model, *retry_delay);
            }
            Self::Status(code) => return status_response(*code, &call.model),
        };
        let text = answer["candidates"][0]["content"]["parts"][0]["text"].as_str();
        let (prompt_tokens, answer_tokens) = (tokens(&call.prompt), text.map_or(0, tokens));
        answer["usageMetadata"] = json!({
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": answer_tokens,
            "totalTokenCount": prompt_tokens + answer_tokens,
        });
        answer["modelVersion"] = json!(call.model);
        answer["responseId"] = json!(format!("fake-gemini-{seq:06}"));
        ResponseTemplate::new(200).set_body_json(answer)
    }
}

fn with_text(text: &str, finish_reason: &str) -> Value {
    json!({"candidates": [{
        "content": {"role": "model", "parts": [{ "text": text }]},
        "finishReason": finish_reason,
        "index": 0,
    }]})
}

/// A candidate that stopped for `reason` without text.
fn no_text(reason: &str) -> Value {
    let mut candidate = json!({"finishReason": reason, "index": 0});
    if !NO_CONTENT_FINISH.contains(&reason) {
        // Proto JSON leaves out an empty `parts` list.
        candidate["content"] = json!({"role": "model"});
    }
    rated(candidate, reason)
}

/// `value` with `safetyRatings`, one of them blocked, when `reason` is SAFETY.
fn rated(mut value: Value, reason: &str) -> Value {
    if reason == "SAFETY" {
        value["safetyRatings"] = json!([
            {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
            {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
            {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": true},
            {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "NEGLIGIBLE"},
        ]);
    }
    value
}

/// A rough token count: a token per 4 characters, at least one.
fn tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4).max(1)
}

/// The first half of [`derived_summary`], never all of it.
fn cut_short(prompt: &str) -> String {
    let full = derived_summary(prompt);
    let half = (full.chars().count() / 2).max(1);
    full.chars().take(half).collect()
}

fn resource_exhausted(model: &str, retry_delay: Option<&str>) -> ResponseTemplate {
    let metric = "generativelanguage.googleapis.com/generate_content_free_tier_requests";
    let mut message = format!(
        "{QUOTA_MESSAGE} \n* Quota exceeded for metric: {metric}, limit: 10, model: {model}"
    );
    let mut details = vec![json!({
        "@type": "type.googleapis.com/google.rpc.QuotaFailure",
        "violations": [{
            "quotaMetric": metric,
            "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
            "quotaDimensions": {"location": "global", "model": model},
        }],
    })];
    if let Some(delay) = retry_delay {
        message.push_str(&format!("\nPlease retry in {delay}."));
        let retry_info = "type.googleapis.com/google.rpc.RetryInfo";
        details.push(json!({"@type": retry_info, "retryDelay": delay}));
    }
    google_error(429, &message, details)
}

fn status_response(code: u16, model: &str) -> ResponseTemplate {
    let code = if (400..=599).contains(&code) {
        code
    } else {
        500
    };
    let message = match code {
        400 => "Request contains an invalid argument.".to_owned(),
        401 => "Request had invalid authentication credentials.".to_owned(),
        403 => "The caller does not have permission".to_owned(),
        404 => format!("models/{model} is not found for API version v1beta."),
        429 => return resource_exhausted(model, None),
        500 => "An internal error has occurred. Please retry.".to_owned(),
        503 => "The model is overloaded. Please try again later.".to_owned(),
        504 => "Deadline expired before operation could complete.".to_owned(),
        other => format!("Fake Gemini error {other}."),
    };
    google_error(code, &message, vec![])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_calls_are_answered_and_a_key_in_the_url_is_flagged() {
        let fake = FakeGemini::start("key").await;
        let url = format!("{}/v1beta/models/m:generateContent", fake.endpoint());
        let call = json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}]});
        let http = reqwest::Client::new();
        let status = |key: &str, url: &str, body: &Value| {
            let request = http.post(url).header(API_KEY_HEADER, key).json(body);
            async move { request.send().await.expect("request").status().as_u16() }
        };
        assert_eq!(status("", &url, &call).await, 403);
        assert_eq!(status("other", &url, &call).await, 400);
        assert_eq!(status("key", &url, &json!({"contents": []})).await, 400);
        assert_eq!(status("key", &format!("{url}?key=key"), &call).await, 400);
        assert!(fake.key_in_url_seen());
        assert_eq!(fake.call_count(), 0, "refusals are not calls");
        assert_eq!(status("key", &url, &call).await, 200);
        assert_eq!(fake.calls()[0].prompt, "hi");
    }
}
