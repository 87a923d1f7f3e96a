//! A local fake of the Gemini API's `models.generateContent`, served over
//! real HTTP on `127.0.0.1` with an ephemeral port.
//!
//! * `POST /v1beta/models/{model}:generateContent` takes the API key in the
//!   `x-goog-api-key` header only. A key in the URL (`?key=`) is refused with
//!   400 `INVALID_ARGUMENT` and flagged ([`FakeGemini::key_in_url_seen`]): the
//!   real API accepts it, but our product must never put the key where it ends
//!   up in logs. A missing key is 403 `PERMISSION_DENIED` ("unregistered
//!   callers"), a wrong one 400 `INVALID_ARGUMENT` with an `ErrorInfo` detail
//!   of reason `API_KEY_INVALID`, as Google answers them.
//! * The body is checked like Google's front end checks a
//!   `GenerateContentRequest` (unknown field names, values of the wrong type,
//!   missing `contents` or `parts`, empty text parts, roles other than `user`
//!   and `model`) and refused with 400 `INVALID_ARGUMENT` in Google's words.
//!   Only text parts are supported.
//! * A well-formed, authenticated request is a call: it is recorded in
//!   [`FakeGemini::calls`] and answered with the first matching
//!   [`FakeGemini::answer_when_prompt_contains`] setting, else the next queued
//!   [`FakeGemini::answer_next`], else [`GeminiAnswer::Summary`]: a candidate
//!   whose text is [`derived_summary`] of the prompt.
//!
//! Error bodies follow Google's shape
//! `{"error":{"code":…,"message":…,"status":…,"details":[…]}}`. Refused
//! requests are not calls; they are listed in [`FakeGemini::rejected`].
//!
//! The server stops when the [`FakeGemini`] is dropped: the listener closes and
//! open connections (kept-alive or hanging) are closed too.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection};
use axum::extract::{DefaultBodyLimit, Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::fake_server::ShutdownListener;
use crate::google_api::{
    JsonViolation, check_known, field, google_error, google_status, has_media_type, object, string,
};
use tokio_util::sync::CancellationToken;

/// The header that must carry the API key.
pub const API_KEY_HEADER: &str = "x-goog-api-key";
/// The message of the 400 answered to a request with `?key=` in its URL.
pub const KEY_IN_URL_MESSAGE: &str = "API key must be sent in the x-goog-api-key header";
/// Largest accepted request body (Gemini's inline request limit), in bytes.
pub const MAX_REQUEST_BYTES: usize = 20 * 1024 * 1024;
/// Each line quoted by [`derived_summary`] is cut to this many characters.
pub const SUMMARY_LINE_CHARS: usize = 60;
/// How long [`GeminiAnswer::Hang`] keeps a request waiting.
const HANG_FOR: Duration = Duration::from_secs(3600);

const SERVICE: &str = "generativelanguage.googleapis.com";
const ERROR_INFO_TYPE: &str = "type.googleapis.com/google.rpc.ErrorInfo";
const LOCALIZED_MESSAGE_TYPE: &str = "type.googleapis.com/google.rpc.LocalizedMessage";
const BAD_REQUEST_TYPE: &str = "type.googleapis.com/google.rpc.BadRequest";
const HELP_TYPE: &str = "type.googleapis.com/google.rpc.Help";
const QUOTA_FAILURE_TYPE: &str = "type.googleapis.com/google.rpc.QuotaFailure";
const RETRY_INFO_TYPE: &str = "type.googleapis.com/google.rpc.RetryInfo";
const CONTENT_TYPE_NAME: &str = "type.googleapis.com/google.ai.generativelanguage.v1beta.Content";
const PART_TYPE_NAME: &str = "type.googleapis.com/google.ai.generativelanguage.v1beta.Part";

const UNREGISTERED_MESSAGE: &str = "Method doesn't allow unregistered callers (callers without \
     established identity). Please use API Key or other form of API consumer identity to call \
     this API.";
const API_KEY_INVALID_MESSAGE: &str = "API key not valid. Please pass a valid API key.";
const QUOTA_MESSAGE: &str = "You exceeded your current quota, please check your plan and billing \
     details. For more information on this error, head to: \
     https://ai.google.dev/gemini-api/docs/rate-limits.";
const CONTENTS_NOT_SPECIFIED: &str =
    "* GenerateContentRequest.contents: contents is not specified\n";

const REQUEST_FIELDS: &[&str] = &[
    "contents",
    "model",
    "systemInstruction",
    "system_instruction",
    "generationConfig",
    "generation_config",
    "safetySettings",
    "safety_settings",
    "tools",
    "toolConfig",
    "tool_config",
    "cachedContent",
    "cached_content",
];
const CONTENT_FIELDS: &[&str] = &["role", "parts"];
const PART_FIELDS: &[&str] = &[
    "text",
    "thought",
    "thoughtSignature",
    "thought_signature",
    "inlineData",
    "inline_data",
    "fileData",
    "file_data",
    "functionCall",
    "function_call",
    "functionResponse",
    "function_response",
    "executableCode",
    "executable_code",
    "codeExecutionResult",
    "code_execution_result",
    "videoMetadata",
    "video_metadata",
];
/// Part fields the fake knows but does not support (only text parts are).
const UNSUPPORTED_PART_FIELDS: &[&str] = &[
    "inlineData",
    "inline_data",
    "fileData",
    "file_data",
    "functionCall",
    "function_call",
    "functionResponse",
    "function_response",
    "executableCode",
    "executable_code",
    "codeExecutionResult",
    "code_execution_result",
    "videoMetadata",
    "video_metadata",
];
const GENERATION_CONFIG_FIELDS: &[&str] = &[
    "stopSequences",
    "stop_sequences",
    "responseMimeType",
    "response_mime_type",
    "responseSchema",
    "response_schema",
    "responseJsonSchema",
    "response_json_schema",
    "responseModalities",
    "response_modalities",
    "candidateCount",
    "candidate_count",
    "maxOutputTokens",
    "max_output_tokens",
    "temperature",
    "topP",
    "top_p",
    "topK",
    "top_k",
    "seed",
    "presencePenalty",
    "presence_penalty",
    "frequencyPenalty",
    "frequency_penalty",
    "responseLogprobs",
    "response_logprobs",
    "logprobs",
    "enableEnhancedCivicAnswers",
    "enable_enhanced_civic_answers",
    "speechConfig",
    "speech_config",
    "thinkingConfig",
    "thinking_config",
    "imageConfig",
    "image_config",
    "mediaResolution",
    "media_resolution",
];
const SAFETY_SETTING_FIELDS: &[&str] = &["category", "threshold", "method"];
/// Finish reasons whose candidate has no `content` at all; other non-STOP
/// reasons get a `content` without parts.
const NO_CONTENT_FINISH: &[&str] = &["SAFETY", "PROHIBITED_CONTENT", "SPII", "BLOCKLIST"];

/// A well-formed, authenticated `generateContent` request.
#[derive(Clone, Debug)]
pub struct GeminiCall {
    /// The model from the path, without `models/`.
    pub model: String,
    /// The `systemInstruction` parts' text joined with `\n`; empty without one.
    pub system: String,
    /// The text of every part of every `contents` entry, joined with `\n`.
    pub prompt: String,
    /// The whole request body, as received.
    pub body: Value,
    /// When it arrived.
    pub at: Instant,
}

/// A canned answer to a call, set with [`FakeGemini::answer_next`] or
/// [`FakeGemini::answer_when_prompt_contains`].
#[derive(Clone, Debug)]
pub enum GeminiAnswer {
    /// 200, one candidate with [`derived_summary`] of the prompt,
    /// finishReason `STOP`.
    Summary,
    /// 200, one candidate whose text is a strict prefix (the first half) of
    /// [`derived_summary`], finishReason `MAX_TOKENS`.
    MaxTokens,
    /// 200, one candidate with this finishReason and no text: without
    /// `content` for `SAFETY`, `PROHIBITED_CONTENT`, `SPII` and `BLOCKLIST`,
    /// with a `content` without parts otherwise (`RECITATION`, `OTHER`, …).
    /// `SAFETY` carries `safetyRatings`, one of them `blocked`.
    Finish(&'static str),
    /// 200, no `candidates`, `promptFeedback.blockReason` set (with
    /// `safetyRatings` for `SAFETY`).
    PromptBlocked(&'static str),
    /// 429 `RESOURCE_EXHAUSTED` with `Help` and `QuotaFailure` details, and a
    /// `google.rpc.RetryInfo` detail `{"retryDelay": …}` when `Some` (Gemini
    /// sends no `Retry-After` header).
    ResourceExhausted { retry_delay: Option<&'static str> },
    /// This HTTP status with Google's error body: 400 `INVALID_ARGUMENT`,
    /// 401 `UNAUTHENTICATED`, 403 `PERMISSION_DENIED`, 404 `NOT_FOUND`,
    /// 429 `RESOURCE_EXHAUSTED` (as `ResourceExhausted { retry_delay: None }`),
    /// 500 `INTERNAL`, 503 `UNAVAILABLE`, 504 `DEADLINE_EXCEEDED`, other
    /// 4xx/5xx `UNKNOWN`. A code that is not 400..=599 is answered as 500.
    Status(u16),
    /// Never answers (waits an hour, or until the fake is dropped).
    Hang,
}

/// The running fake. The server stops when this is dropped.
pub struct FakeGemini {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

struct Shared {
    api_key: String,
    shutdown: CancellationToken,
    state: Mutex<FakeState>,
}

struct FakeState {
    calls: Vec<GeminiCall>,
    /// Remaining count and answer, in order.
    answer_next: VecDeque<(usize, GeminiAnswer)>,
    /// Needle and answer, in the order first set.
    when_prompt_contains: Vec<(String, GeminiAnswer)>,
    delay: Duration,
    in_flight: usize,
    max_concurrent: usize,
    key_in_url_seen: bool,
    rejected: Vec<String>,
}

impl FakeGemini {
    /// Starts the fake on `127.0.0.1:0`; calls must carry `api_key` in the
    /// `x-goog-api-key` header.
    pub async fn start(api_key: &str) -> FakeGemini {
        assert!(
            !api_key.is_empty(),
            "FakeGemini::start: the API key must not be empty"
        );
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("FakeGemini::start: bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("FakeGemini::start: local address of the listener");
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            api_key: api_key.to_owned(),
            shutdown: shutdown.clone(),
            state: Mutex::new(FakeState {
                calls: Vec::new(),
                answer_next: VecDeque::new(),
                when_prompt_contains: Vec::new(),
                delay: Duration::ZERO,
                in_flight: 0,
                max_concurrent: 0,
                key_in_url_seen: false,
                rejected: Vec::new(),
            }),
        });
        let app = Router::new()
            .route(
                "/v1beta/models/{call}",
                post(generate_handler).fallback(not_found_handler),
            )
            .fallback(not_found_handler)
            .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
            .with_state(Arc::clone(&shared));
        let listener = ShutdownListener { listener, shutdown };
        let task = tokio::spawn(async move {
            // `serve` only returns on a listener error; the fake then stops.
            let _ = axum::serve(listener, app).await;
        });
        FakeGemini { shared, addr, task }
    }

    /// `http://127.0.0.1:PORT`; calls go to
    /// `POST {endpoint}/v1beta/models/{model}:generateContent`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every call (well-formed, authenticated request), in order of arrival,
    /// whatever it was answered.
    pub fn calls(&self) -> Vec<GeminiCall> {
        self.shared.state().calls.clone()
    }

    pub fn call_count(&self) -> usize {
        self.shared.state().calls.len()
    }

    /// The next `n` calls get `a`. Settings queue up: after
    /// `answer_next(2, a); answer_next(1, b)` the answers are a, a, b, then
    /// `Summary`. A call answered by [`Self::answer_when_prompt_contains`]
    /// does not use one up, nor does a refused request.
    pub fn answer_next(&self, n: usize, a: GeminiAnswer) {
        if n > 0 {
            self.shared.state().answer_next.push_back((n, a));
        }
    }

    /// Every call whose prompt contains `needle` gets `a`, before any
    /// [`Self::answer_next`], until [`Self::clear`]. Setting the same needle
    /// again replaces its answer; when several needles match, the one set
    /// first wins.
    pub fn answer_when_prompt_contains(&self, needle: &str, a: GeminiAnswer) {
        let mut state = self.shared.state();
        match state
            .when_prompt_contains
            .iter_mut()
            .find(|(n, _)| n == needle)
        {
            Some(entry) => entry.1 = a,
            None => state.when_prompt_contains.push((needle.to_owned(), a)),
        }
    }

    /// Forgets every [`Self::answer_next`] and
    /// [`Self::answer_when_prompt_contains`] setting: calls get `Summary`
    /// again. Recorded calls, [`Self::max_concurrent`],
    /// [`Self::key_in_url_seen`], [`Self::rejected`] and the delay are kept.
    pub fn clear(&self) {
        let mut state = self.shared.state();
        state.answer_next.clear();
        state.when_prompt_contains.clear();
    }

    /// The most calls in progress at once so far (from arrival until answered,
    /// or until the client went away; hanging calls count).
    pub fn max_concurrent(&self) -> usize {
        self.shared.state().max_concurrent
    }

    /// Whether any request so far had a `key` parameter in its URL (such
    /// requests are refused with 400, and are not calls).
    pub fn key_in_url_seen(&self) -> bool {
        self.shared.state().key_in_url_seen
    }

    /// Every call waits `d` before it is answered, whatever the answer
    /// (not [`GeminiAnswer::Hang`], which never is). Default zero; applies to
    /// calls arriving from now on.
    pub fn set_delay(&self, d: Duration) {
        self.shared.state().delay = d;
    }

    /// Refused requests, in order: `"<http status> <STATUS>: <message>"`.
    /// Empty when the product only sent well-formed, authenticated requests.
    pub fn rejected(&self) -> Vec<String> {
        self.shared.state().rejected.clone()
    }
}

impl Drop for FakeGemini {
    fn drop(&mut self) {
        // Closes open connections and ends hanging requests, then the listener.
        self.shared.shutdown.cancel();
        self.task.abort();
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

/// The text of a [`GeminiAnswer::MaxTokens`]: the first half of
/// [`derived_summary`], never all of it.
fn cut_short(prompt: &str) -> String {
    let full = derived_summary(prompt);
    let half = (full.chars().count() / 2).max(1);
    full.chars().take(half).collect()
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a call and picks its answer; the guard counts it in progress.
    fn record(&self, call: GeminiCall) -> (GeminiAnswer, Duration, usize, InFlight<'_>) {
        let mut state = self.state();
        let answer = match state
            .when_prompt_contains
            .iter()
            .find(|(needle, _)| call.prompt.contains(needle.as_str()))
        {
            Some((_, a)) => a.clone(),
            None => take_next(&mut state.answer_next).unwrap_or(GeminiAnswer::Summary),
        };
        state.calls.push(call);
        let seq = state.calls.len();
        state.in_flight += 1;
        state.max_concurrent = state.max_concurrent.max(state.in_flight);
        (answer, state.delay, seq, InFlight(self))
    }

    /// Whether the request is authenticated; `Err` is the refusal.
    fn authenticate(&self, headers: &HeaderMap) -> Result<(), Refusal> {
        let key = headers
            .get(API_KEY_HEADER)
            .map(|v| v.to_str().unwrap_or("\u{fffd}"))
            .unwrap_or("");
        if key.trim().is_empty() {
            return Err(Refusal::new(
                StatusCode::FORBIDDEN,
                UNREGISTERED_MESSAGE,
                vec![],
            ));
        }
        if key != self.api_key {
            return Err(Refusal::new(
                StatusCode::BAD_REQUEST,
                API_KEY_INVALID_MESSAGE,
                vec![
                    json!({
                        "@type": ERROR_INFO_TYPE,
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                        "metadata": {"service": SERVICE},
                    }),
                    json!({
                        "@type": LOCALIZED_MESSAGE_TYPE,
                        "locale": "en-US",
                        "message": API_KEY_INVALID_MESSAGE,
                    }),
                ],
            ));
        }
        Ok(())
    }
}

fn take_next(queue: &mut VecDeque<(usize, GeminiAnswer)>) -> Option<GeminiAnswer> {
    let (answer, used_up) = {
        let front = queue.front_mut()?;
        front.0 = front.0.saturating_sub(1);
        (front.1.clone(), front.0 == 0)
    };
    if used_up {
        queue.pop_front();
    }
    Some(answer)
}

/// A call in progress; counted out when dropped (answered or abandoned).
struct InFlight<'a>(&'a Shared);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        let mut state = self.0.state();
        state.in_flight = state.in_flight.saturating_sub(1);
    }
}

// ---------------------------------------------------------------------------
// Handlers

async fn generate_handler(
    State(shared): State<Arc<Shared>>,
    call: Result<Path<String>, PathRejection>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let admitted = admit(&shared, call, query.as_deref(), &headers, body);
    let (model, request) = match admitted {
        Ok(admitted) => admitted,
        Err(refusal) => {
            shared.state().rejected.push(refusal.describe());
            return refusal.into_response();
        }
    };
    let call = GeminiCall {
        model: model.clone(),
        system: request.system,
        prompt: request.prompt,
        body: request.body,
        at: Instant::now(),
    };
    let prompt = call.prompt.clone();
    let (answer, delay, seq, _in_flight) = shared.record(call);
    if let GeminiAnswer::Hang = answer {
        tokio::select! {
            () = tokio::time::sleep(HANG_FOR) => {}
            () = shared.shutdown.cancelled() => {}
        }
        return status_response(503, &model);
    }
    if !delay.is_zero() {
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = shared.shutdown.cancelled() => return status_response(503, &model),
        }
    }
    answer_response(&answer, &model, &prompt, seq, request.max_output_tokens)
}

/// Any other path or method: 404, or 400 for a key in the URL (flagged).
async fn not_found_handler(
    State(shared): State<Arc<Shared>>,
    RawQuery(query): RawQuery,
) -> Response {
    let refusal = if has_key_param(query.as_deref()) {
        shared.state().key_in_url_seen = true;
        Refusal::new(StatusCode::BAD_REQUEST, KEY_IN_URL_MESSAGE, vec![])
    } else {
        Refusal::new(StatusCode::NOT_FOUND, "Method not found.", vec![])
    };
    shared.state().rejected.push(refusal.describe());
    refusal.into_response()
}

/// Checks a request in Google's order (the key, then the path, then the body).
fn admit(
    shared: &Shared,
    call: Result<Path<String>, PathRejection>,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(String, ParsedRequest), Refusal> {
    if has_key_param(query) {
        shared.state().key_in_url_seen = true;
        return Err(Refusal::new(
            StatusCode::BAD_REQUEST,
            KEY_IN_URL_MESSAGE,
            vec![],
        ));
    }
    shared.authenticate(headers)?;
    let Ok(Path(call)) = call else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "Method not found.",
            vec![],
        ));
    };
    let Some((model, method)) = call.rsplit_once(':') else {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            "Method not found.",
            vec![],
        ));
    };
    if method != "generateContent" {
        return Err(Refusal::new(
            StatusCode::NOT_FOUND,
            &format!(
                "Method not found (the fake Gemini serves only generateContent, not {method})."
            ),
            vec![],
        ));
    }
    if model.trim().is_empty() {
        return Err(Refusal::invalid(
            "* GenerateContentRequest.model: unexpected model name format\n",
        ));
    }
    let body = body.map_err(|_| {
        Refusal::invalid(&format!(
            "Request payload size exceeds the limit: {MAX_REQUEST_BYTES} bytes."
        ))
    })?;
    let request = validate_request(headers, &body)?;
    Ok((model.to_owned(), request))
}

/// Whether the query string has a `key` parameter (any value, even empty).
fn has_key_param(query: Option<&str>) -> bool {
    query.is_some_and(|q| {
        q.split('&').any(|pair| {
            let name = pair.split_once('=').map_or(pair, |(name, _)| name);
            percent_decode(name).is_some_and(|n| n == "key")
        })
    })
}

/// Decodes one URL-query component (`+` is a space, `%XX` a byte).
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b'%' => {
                let hex = bytes.get(i + 1..i + 3)?;
                let hex = std::str::from_utf8(hex).ok()?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

// ---------------------------------------------------------------------------
// Answers

/// A rough token count: a token per 4 characters, at least one.
fn tokens(text: &str) -> usize {
    text.chars().count().div_ceil(4).max(1)
}

fn answer_response(
    answer: &GeminiAnswer,
    model: &str,
    prompt: &str,
    seq: usize,
    max_output_tokens: Option<i64>,
) -> Response {
    let prompt_tokens = tokens(prompt);
    let response_id = format!("fake-gemini-{seq:06}");
    match answer {
        GeminiAnswer::Summary => {
            let text = derived_summary(prompt);
            let candidate_tokens = tokens(&text);
            text_response(
                model,
                &response_id,
                &text,
                "STOP",
                prompt_tokens,
                candidate_tokens,
            )
        }
        GeminiAnswer::MaxTokens => {
            let text = cut_short(prompt);
            let candidate_tokens = max_output_tokens
                .and_then(|n| usize::try_from(n).ok())
                .filter(|n| *n > 0)
                .unwrap_or_else(|| tokens(&text));
            text_response(
                model,
                &response_id,
                &text,
                "MAX_TOKENS",
                prompt_tokens,
                candidate_tokens,
            )
        }
        GeminiAnswer::Finish(reason) => {
            let mut candidate = json!({"finishReason": reason, "index": 0});
            if !NO_CONTENT_FINISH.contains(reason) {
                // Proto JSON leaves out an empty `parts` list.
                candidate["content"] = json!({"role": "model"});
            }
            if *reason == "SAFETY" {
                candidate["safetyRatings"] = safety_ratings();
            }
            Json(json!({
                "candidates": [candidate],
                "usageMetadata": {
                    "promptTokenCount": prompt_tokens,
                    "totalTokenCount": prompt_tokens,
                },
                "modelVersion": model,
                "responseId": response_id,
            }))
            .into_response()
        }
        GeminiAnswer::PromptBlocked(reason) => {
            let mut feedback = json!({ "blockReason": reason });
            if *reason == "SAFETY" {
                feedback["safetyRatings"] = safety_ratings();
            }
            Json(json!({
                "promptFeedback": feedback,
                "usageMetadata": {
                    "promptTokenCount": prompt_tokens,
                    "totalTokenCount": prompt_tokens,
                },
                "modelVersion": model,
                "responseId": response_id,
            }))
            .into_response()
        }
        GeminiAnswer::ResourceExhausted { retry_delay } => resource_exhausted(model, *retry_delay),
        GeminiAnswer::Status(code) => status_response(*code, model),
        // Handled by the caller; answered like a dropped fake if it gets here.
        GeminiAnswer::Hang => status_response(503, model),
    }
}

fn text_response(
    model: &str,
    response_id: &str,
    text: &str,
    finish_reason: &str,
    prompt_tokens: usize,
    candidate_tokens: usize,
) -> Response {
    Json(json!({
        "candidates": [{
            "content": {"role": "model", "parts": [{"text": text}]},
            "finishReason": finish_reason,
            "index": 0,
        }],
        "usageMetadata": {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": candidate_tokens,
            "totalTokenCount": prompt_tokens + candidate_tokens,
        },
        "modelVersion": model,
        "responseId": response_id,
    }))
    .into_response()
}

fn safety_ratings() -> Value {
    json!([
        {"category": "HARM_CATEGORY_SEXUALLY_EXPLICIT", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_HATE_SPEECH", "probability": "NEGLIGIBLE"},
        {"category": "HARM_CATEGORY_HARASSMENT", "probability": "HIGH", "blocked": true},
        {"category": "HARM_CATEGORY_DANGEROUS_CONTENT", "probability": "NEGLIGIBLE"},
    ])
}

fn resource_exhausted(model: &str, retry_delay: Option<&str>) -> Response {
    let mut message = format!(
        "{QUOTA_MESSAGE} \n* Quota exceeded for metric: \
         {SERVICE}/generate_content_free_tier_requests, limit: 10, model: {model}"
    );
    let mut details = vec![
        json!({
            "@type": HELP_TYPE,
            "links": [{
                "description": "Learn more about Gemini API quotas",
                "url": "https://ai.google.dev/gemini-api/docs/rate-limits",
            }],
        }),
        json!({
            "@type": QUOTA_FAILURE_TYPE,
            "violations": [{
                "quotaMetric": format!("{SERVICE}/generate_content_free_tier_requests"),
                "quotaId": "GenerateRequestsPerMinutePerProjectPerModel-FreeTier",
                "quotaDimensions": {"location": "global", "model": model},
                "quotaValue": "10",
            }],
        }),
    ];
    if let Some(delay) = retry_delay {
        message.push_str(&format!("\nPlease retry in {delay}."));
        details.push(json!({"@type": RETRY_INFO_TYPE, "retryDelay": delay}));
    }
    google_error(StatusCode::TOO_MANY_REQUESTS, &message, details)
}

fn status_response(code: u16, model: &str) -> Response {
    let code = match StatusCode::from_u16(code) {
        Ok(c) if c.is_client_error() || c.is_server_error() => c,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    let message = match code.as_u16() {
        400 => "Request contains an invalid argument.".to_owned(),
        401 => "Request had invalid authentication credentials. Expected OAuth 2 access token, \
                login cookie or other valid authentication credential."
            .to_owned(),
        403 => "The caller does not have permission".to_owned(),
        404 => format!(
            "models/{model} is not found for API version v1beta, or is not supported for \
             generateContent. Call ListModels to see the list of available models and their \
             supported methods."
        ),
        429 => return resource_exhausted(model, None),
        500 => "An internal error has occurred. Please retry or report in \
                https://developers.generativeai.google/guide/troubleshooting"
            .to_owned(),
        503 => "The model is overloaded. Please try again later.".to_owned(),
        504 => "Deadline expired before operation could complete.".to_owned(),
        other => format!("Fake Gemini error {other}."),
    };
    google_error(code, &message, vec![])
}

// ---------------------------------------------------------------------------
// Errors

/// Why a request is not a call.
struct Refusal {
    code: StatusCode,
    message: String,
    details: Vec<Value>,
}

impl From<JsonViolation> for Refusal {
    fn from(v: JsonViolation) -> Self {
        let message = if v.invalid_value {
            format!("Invalid JSON payload received. {}", v.message)
        } else {
            v.message
        };
        Refusal::json(v.field.as_deref(), &message)
    }
}

/// A value of the wrong type.
fn type_error(path: &str, type_name: &str, value: &Value) -> Refusal {
    crate::google_api::type_error(path, type_name, value).into()
}

impl Refusal {
    fn new(code: StatusCode, message: &str, details: Vec<Value>) -> Self {
        Refusal {
            code,
            message: message.to_owned(),
            details,
        }
    }

    /// 400 `INVALID_ARGUMENT` found after parsing (no details), e.g.
    /// `* GenerateContentRequest.contents: contents is not specified`.
    fn invalid(message: &str) -> Self {
        Refusal::new(StatusCode::BAD_REQUEST, message, vec![])
    }

    /// 400 `INVALID_ARGUMENT` found while parsing the JSON: a `BadRequest`
    /// detail, naming the field when there is one.
    fn json(field: Option<&str>, message: &str) -> Self {
        let violation = match field {
            Some(field) => json!({"field": field, "description": message}),
            None => json!({ "description": message }),
        };
        Refusal::new(
            StatusCode::BAD_REQUEST,
            message,
            vec![json!({"@type": BAD_REQUEST_TYPE, "fieldViolations": [violation]})],
        )
    }

    fn describe(&self) -> String {
        format!(
            "{} {}: {}",
            self.code.as_u16(),
            google_status(self.code),
            self.message.trim_end()
        )
    }

    fn into_response(self) -> Response {
        google_error(self.code, &self.message, self.details)
    }
}

// ---------------------------------------------------------------------------
// GenerateContentRequest validation

struct ParsedRequest {
    system: String,
    prompt: String,
    body: Value,
    max_output_tokens: Option<i64>,
}

fn validate_request(headers: &HeaderMap, body: &[u8]) -> Result<ParsedRequest, Refusal> {
    if headers.contains_key(header::CONTENT_TYPE) && !has_media_type(headers, "application/json") {
        return Err(Refusal::json(
            None,
            "Invalid JSON payload received. Content-Type must be application/json.",
        ));
    }
    let root: Value = serde_json::from_slice(body)
        .map_err(|e| Refusal::json(None, &format!("Invalid JSON payload received. {e}.")))?;
    let Some(map) = root.as_object() else {
        return Err(Refusal::json(
            None,
            "Invalid JSON payload received. Root element must be a message.",
        ));
    };
    check_known(map, "", REQUEST_FIELDS)?;

    let contents = match field(map, &["contents"]) {
        None => return Err(Refusal::invalid(CONTENTS_NOT_SPECIFIED)),
        Some(Value::Array(contents)) => contents,
        Some(v) => return Err(type_error("contents", CONTENT_TYPE_NAME, v)),
    };
    if contents.is_empty() {
        return Err(Refusal::invalid(CONTENTS_NOT_SPECIFIED));
    }
    let mut texts = Vec::new();
    for (i, content) in contents.iter().enumerate() {
        let path = format!("contents[{i}]");
        let content = object(content, &path, CONTENT_TYPE_NAME)?;
        check_known(content, &path, CONTENT_FIELDS)?;
        match string(content, &["role"], &format!("{path}.role"))? {
            None | Some("" | "user" | "model") => {}
            Some(_) => return Err(Refusal::invalid("Please use a valid role: user, model.")),
        }
        texts.extend(part_texts(content, &path)?);
    }

    let system = match field(map, &["systemInstruction", "system_instruction"]) {
        None => String::new(),
        Some(v) => {
            let path = "system_instruction";
            let instruction = object(v, path, CONTENT_TYPE_NAME)?;
            check_known(instruction, path, CONTENT_FIELDS)?;
            string(instruction, &["role"], "system_instruction.role")?;
            part_texts(instruction, path)?.join("\n")
        }
    };

    let max_output_tokens = match field(map, &["generationConfig", "generation_config"]) {
        None => None,
        Some(v) => validate_generation_config(v)?,
    };
    if let Some(v) = field(map, &["safetySettings", "safety_settings"]) {
        validate_safety_settings(v)?;
    }
    string(map, &["model"], "model")?;
    string(map, &["cachedContent", "cached_content"], "cached_content")?;
    if let Some(v) = field(map, &["tools"])
        && !v.is_array()
    {
        return Err(type_error(
            "tools",
            "type.googleapis.com/google.ai.generativelanguage.v1beta.Tool",
            v,
        ));
    }
    if let Some(v) = field(map, &["toolConfig", "tool_config"]) {
        object(
            v,
            "tool_config",
            "type.googleapis.com/google.ai.generativelanguage.v1beta.ToolConfig",
        )?;
    }

    Ok(ParsedRequest {
        system,
        prompt: texts.join("\n"),
        max_output_tokens,
        body: root,
    })
}

/// The texts of a `Content`'s parts; `path` is `contents[i]` or
/// `system_instruction`.
fn part_texts(content: &Map<String, Value>, path: &str) -> Result<Vec<String>, Refusal> {
    let parts = match field(content, &["parts"]) {
        None => None,
        Some(Value::Array(parts)) => Some(parts),
        Some(v) => return Err(type_error(&format!("{path}.parts"), PART_TYPE_NAME, v)),
    };
    let Some(parts) = parts.filter(|p| !p.is_empty()) else {
        return Err(Refusal::invalid(&format!(
            "* GenerateContentRequest.{path}.parts: contents.parts must not be empty.\n"
        )));
    };
    let mut texts = Vec::with_capacity(parts.len());
    for (j, part) in parts.iter().enumerate() {
        let part_path = format!("{path}.parts[{j}]");
        let part = object(part, &part_path, PART_TYPE_NAME)?;
        check_known(part, &part_path, PART_FIELDS)?;
        if let Some(name) = UNSUPPORTED_PART_FIELDS
            .iter()
            .find(|name| field(part, &[**name]).is_some())
        {
            return Err(Refusal::invalid(&format!(
                "The fake Gemini supports only text parts: {part_path}.{name} is not supported."
            )));
        }
        if let Some(v) = field(part, &["thought"])
            && !v.is_boolean()
        {
            return Err(type_error(&format!("{part_path}.thought"), "TYPE_BOOL", v));
        }
        string(
            part,
            &["thoughtSignature", "thought_signature"],
            &format!("{part_path}.thought_signature"),
        )?;
        match string(part, &["text"], &format!("{part_path}.text"))? {
            Some(text) if !text.is_empty() => texts.push(text.to_owned()),
            // An empty string is an unset field in proto3.
            _ => {
                return Err(Refusal::invalid(&format!(
                    "* GenerateContentRequest.{part_path}.data: required oneof field 'data' \
                     must have one initialized field\n"
                )));
            }
        }
    }
    Ok(texts)
}

/// Checks `generationConfig`; returns `maxOutputTokens` when set.
fn validate_generation_config(v: &Value) -> Result<Option<i64>, Refusal> {
    let path = "generation_config";
    let config = object(
        v,
        path,
        "type.googleapis.com/google.ai.generativelanguage.v1beta.GenerationConfig",
    )?;
    check_known(config, path, GENERATION_CONFIG_FIELDS)?;

    if let Some(t) = float(config, &["temperature"], "generation_config.temperature")?
        && !(0.0..=2.0).contains(&t)
    {
        return Err(Refusal::invalid(
            "* GenerateContentRequest.generation_config.temperature: temperature must be \
             between 0.0 and 2.0\n",
        ));
    }
    if let Some(p) = float(config, &["topP", "top_p"], "generation_config.top_p")?
        && !(0.0..=1.0).contains(&p)
    {
        return Err(Refusal::invalid(
            "* GenerateContentRequest.generation_config.top_p: top_p must be between 0.0 \
             and 1.0\n",
        ));
    }
    float(
        config,
        &["presencePenalty", "presence_penalty"],
        "generation_config.presence_penalty",
    )?;
    float(
        config,
        &["frequencyPenalty", "frequency_penalty"],
        "generation_config.frequency_penalty",
    )?;
    let max_output_tokens = int32(
        config,
        &["maxOutputTokens", "max_output_tokens"],
        "generation_config.max_output_tokens",
    )?;
    if max_output_tokens.is_some_and(|n| n < 0) {
        return Err(Refusal::invalid(
            "* GenerateContentRequest.generation_config.max_output_tokens: max_output_tokens \
             must not be negative\n",
        ));
    }
    if int32(config, &["topK", "top_k"], "generation_config.top_k")?.is_some_and(|k| k < 0) {
        return Err(Refusal::invalid(
            "* GenerateContentRequest.generation_config.top_k: top_k must not be negative\n",
        ));
    }
    int32(config, &["seed"], "generation_config.seed")?;
    int32(config, &["logprobs"], "generation_config.logprobs")?;
    // 0 is proto3's unset, which means 1.
    if int32(
        config,
        &["candidateCount", "candidate_count"],
        "generation_config.candidate_count",
    )?
    .is_some_and(|n| n > 1)
    {
        return Err(Refusal::invalid(
            "The fake Gemini answers one candidate only: generation_config.candidate_count \
             must be 1.",
        ));
    }
    for (names, path) in [
        (
            &["stopSequences", "stop_sequences"][..],
            "generation_config.stop_sequences",
        ),
        (
            &["responseModalities", "response_modalities"][..],
            "generation_config.response_modalities",
        ),
    ] {
        string_list(config, names, path)?;
    }
    string(
        config,
        &["responseMimeType", "response_mime_type"],
        "generation_config.response_mime_type",
    )?;
    string(
        config,
        &["mediaResolution", "media_resolution"],
        "generation_config.media_resolution",
    )?;
    for (names, path) in [
        (
            &["responseLogprobs", "response_logprobs"][..],
            "generation_config.response_logprobs",
        ),
        (
            &[
                "enableEnhancedCivicAnswers",
                "enable_enhanced_civic_answers",
            ][..],
            "generation_config.enable_enhanced_civic_answers",
        ),
    ] {
        if let Some(v) = field(config, names)
            && !v.is_boolean()
        {
            return Err(type_error(path, "TYPE_BOOL", v));
        }
    }
    for (names, path) in [
        (
            &["thinkingConfig", "thinking_config"][..],
            "generation_config.thinking_config",
        ),
        (
            &["speechConfig", "speech_config"][..],
            "generation_config.speech_config",
        ),
        (
            &["imageConfig", "image_config"][..],
            "generation_config.image_config",
        ),
        (
            &["responseSchema", "response_schema"][..],
            "generation_config.response_schema",
        ),
    ] {
        if let Some(v) = field(config, names) {
            object(v, path, "type.googleapis.com/google.protobuf.Struct")?;
        }
    }
    Ok(max_output_tokens)
}

fn validate_safety_settings(v: &Value) -> Result<(), Refusal> {
    let type_name = "type.googleapis.com/google.ai.generativelanguage.v1beta.SafetySetting";
    let Some(settings) = v.as_array() else {
        return Err(type_error("safety_settings", type_name, v));
    };
    for (i, setting) in settings.iter().enumerate() {
        let path = format!("safety_settings[{i}]");
        let setting = object(setting, &path, type_name)?;
        check_known(setting, &path, SAFETY_SETTING_FIELDS)?;
        for name in SAFETY_SETTING_FIELDS {
            string(setting, &[*name], &format!("{path}.{name}"))?;
        }
    }
    Ok(())
}

/// An optional list of strings.
fn string_list(map: &Map<String, Value>, names: &[&str], path: &str) -> Result<(), Refusal> {
    match field(map, names) {
        None => Ok(()),
        Some(Value::Array(items)) => {
            match items.iter().enumerate().find(|(_, item)| !item.is_string()) {
                Some((i, item)) => Err(type_error(&format!("{path}[{i}]"), "TYPE_STRING", item)),
                None => Ok(()),
            }
        }
        Some(v) => Err(type_error(path, "TYPE_STRING", v)),
    }
}

/// An optional float field: a JSON number.
fn float(map: &Map<String, Value>, names: &[&str], path: &str) -> Result<Option<f64>, Refusal> {
    match field(map, names) {
        None => Ok(None),
        Some(v) => match v.as_f64() {
            Some(f) => Ok(Some(f)),
            None => Err(type_error(path, "TYPE_FLOAT", v)),
        },
    }
}

/// An optional int32 field: a JSON integer in range.
fn int32(map: &Map<String, Value>, names: &[&str], path: &str) -> Result<Option<i64>, Refusal> {
    match field(map, names) {
        None => Ok(None),
        Some(v) => match v.as_i64() {
            Some(n) if i32::try_from(n).is_ok() => Ok(Some(n)),
            _ => Err(type_error(path, "TYPE_INT32", v)),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AIza-fake-gemini-key-0123456789";
    const MODEL: &str = "gemini-2.5-flash";

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client")
    }

    fn url(fake: &FakeGemini) -> String {
        format!("{}/v1beta/models/{MODEL}:generateContent", fake.endpoint())
    }

    /// A request like the summarizer's.
    fn request(system: &str, prompt: &str) -> Value {
        json!({
            "systemInstruction": {"parts": [{"text": system}]},
            "contents": [{"role": "user", "parts": [{"text": prompt}]}],
            "generationConfig": {"temperature": 0.2, "maxOutputTokens": 256},
        })
    }

    async fn post(fake: &FakeGemini, key: Option<&str>, body: &Value) -> (u16, Value) {
        post_to(&client(), &url(fake), key, body).await
    }

    async fn post_to(
        client: &reqwest::Client,
        url: &str,
        key: Option<&str>,
        body: &Value,
    ) -> (u16, Value) {
        let mut r = client.post(url).json(body);
        if let Some(key) = key {
            r = r.header(API_KEY_HEADER, key);
        }
        reply(r.send().await.expect("request")).await
    }

    async fn reply(response: reqwest::Response) -> (u16, Value) {
        let status = response.status().as_u16();
        assert!(
            response.headers().get("retry-after").is_none(),
            "Gemini sends no Retry-After"
        );
        (status, response.json().await.expect("JSON answer"))
    }

    async fn summarize(fake: &FakeGemini, prompt: &str) -> (u16, Value) {
        post(fake, Some(KEY), &request("Summarize.", prompt)).await
    }

    fn text_of(body: &Value) -> Option<&str> {
        body["candidates"][0]["content"]["parts"][0]["text"].as_str()
    }

    fn detail<'a>(body: &'a Value, type_name: &str) -> Option<&'a Value> {
        body["error"]["details"]
            .as_array()?
            .iter()
            .find(|d| d["@type"] == type_name)
    }

    fn assert_error(status: u16, body: &Value, code: u16, name: &str) {
        assert_eq!(status, code, "{body}");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert_eq!(body["error"]["status"], name, "{body}");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty()),
            "{body}"
        );
    }

    #[test]
    fn derived_summary_quotes_first_and_last_lines() {
        assert_eq!(derived_summary(""), "Summary of 0 lines.");
        assert_eq!(derived_summary("  \n\n "), "Summary of 0 lines.");
        assert_eq!(derived_summary(" only \n"), "Summary of 1 line: only");
        assert_eq!(
            derived_summary("alice: hi\n\n  bob: hello \ncarol: bye\n"),
            "Summary of 3 lines: alice: hi… carol: bye"
        );
        let long = "é".repeat(100);
        assert_eq!(
            derived_summary(&format!("{long}\nx\n{long}")),
            format!("Summary of 3 lines: {0}… {0}", "é".repeat(60))
        );
        let short = cut_short("alice: hi\nbob: hello");
        assert!(derived_summary("alice: hi\nbob: hello").starts_with(&short));
        assert!(short.chars().count() < derived_summary("alice: hi\nbob: hello").chars().count());
    }

    #[tokio::test]
    async fn summary_answer_is_derived_from_the_prompt() {
        let fake = FakeGemini::start(KEY).await;
        assert!(fake.endpoint().starts_with("http://127.0.0.1:"));
        let prompt = "alice: first line of the chat\nbob: middle\ncarol: the last word";
        let body = request("You summarize chats.", prompt);
        let (status, answer) = post(&fake, Some(KEY), &body).await;
        assert_eq!(status, 200, "{answer}");
        let candidate = &answer["candidates"][0];
        assert_eq!(candidate["content"]["role"], "model");
        assert_eq!(
            text_of(&answer),
            Some("Summary of 3 lines: alice: first line of the chat… carol: the last word")
        );
        assert_eq!(candidate["finishReason"], "STOP");
        assert_eq!(candidate["index"], 0);
        assert_eq!(answer["candidates"].as_array().map(Vec::len), Some(1));
        let usage = &answer["usageMetadata"];
        let (p, c, t) = (
            usage["promptTokenCount"]
                .as_u64()
                .expect("promptTokenCount"),
            usage["candidatesTokenCount"]
                .as_u64()
                .expect("candidatesTokenCount"),
            usage["totalTokenCount"].as_u64().expect("totalTokenCount"),
        );
        assert!(p > 0 && c > 0 && t == p + c, "{usage}");
        assert_eq!(answer["modelVersion"], MODEL);
        assert!(answer.get("promptFeedback").is_none());

        let calls = fake.calls();
        assert_eq!(calls.len(), 1);
        assert_eq!(fake.call_count(), 1);
        assert_eq!(calls[0].model, MODEL);
        assert_eq!(calls[0].system, "You summarize chats.");
        assert_eq!(calls[0].prompt, prompt);
        assert_eq!(calls[0].body, body);
        assert!(calls[0].at.elapsed() < Duration::from_secs(10));
        assert!(fake.rejected().is_empty());

        // Several contents and parts: the prompt joins them with newlines;
        // snake_case names and no systemInstruction are accepted too.
        let body = json!({
            "contents": [
                {"role": "user", "parts": [{"text": "one"}, {"text": "two"}]},
                {"role": "model", "parts": [{"text": "three"}]},
                {"parts": [{"text": "four"}]},
            ],
            "generation_config": {"max_output_tokens": 10, "top_k": 3, "top_p": 0.5},
        });
        let (status, answer) = post(&fake, Some(KEY), &body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(text_of(&answer), Some("Summary of 4 lines: one… four"));
        let call = &fake.calls()[1];
        assert_eq!(call.prompt, "one\ntwo\nthree\nfour");
        assert_eq!(call.system, "");
    }

    #[tokio::test]
    async fn max_tokens_and_blocked_answers() {
        let fake = FakeGemini::start(KEY).await;
        let prompt = "alice: hello there\nbob: general kenobi";

        fake.answer_next(1, GeminiAnswer::MaxTokens);
        let (status, answer) = summarize(&fake, prompt).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["candidates"][0]["finishReason"], "MAX_TOKENS");
        let text = text_of(&answer).expect("MAX_TOKENS text");
        let full = derived_summary(prompt);
        assert!(full.starts_with(text) && text.len() < full.len(), "{text}");
        assert_eq!(answer["usageMetadata"]["candidatesTokenCount"], 256);

        for reason in [
            "SAFETY",
            "RECITATION",
            "BLOCKLIST",
            "PROHIBITED_CONTENT",
            "SPII",
        ] {
            fake.answer_next(1, GeminiAnswer::Finish(reason));
            let (status, answer) = summarize(&fake, prompt).await;
            assert_eq!(status, 200, "{reason}: {answer}");
            let candidate = &answer["candidates"][0];
            assert_eq!(candidate["finishReason"], reason, "{answer}");
            assert!(text_of(&answer).is_none(), "{answer}");
            assert!(
                candidate["content"]["parts"]
                    .as_array()
                    .is_none_or(Vec::is_empty),
                "{answer}"
            );
            let blocked_rating = candidate["safetyRatings"]
                .as_array()
                .is_some_and(|rs| rs.iter().any(|r| r["blocked"] == true));
            assert_eq!(blocked_rating, reason == "SAFETY", "{answer}");
            assert!(answer["usageMetadata"]["promptTokenCount"].is_u64());
        }

        for reason in ["SAFETY", "OTHER", "BLOCKLIST", "PROHIBITED_CONTENT"] {
            fake.answer_next(1, GeminiAnswer::PromptBlocked(reason));
            let (status, answer) = summarize(&fake, prompt).await;
            assert_eq!(status, 200, "{reason}: {answer}");
            assert!(answer.get("candidates").is_none(), "{answer}");
            assert_eq!(answer["promptFeedback"]["blockReason"], reason);
            assert_eq!(
                answer["promptFeedback"]["safetyRatings"].is_array(),
                reason == "SAFETY"
            );
            assert!(answer["usageMetadata"]["promptTokenCount"].is_u64());
        }
        // Every answer was a call.
        assert_eq!(fake.call_count(), 10);
    }

    #[tokio::test]
    async fn error_answers_have_googles_shape() {
        let fake = FakeGemini::start(KEY).await;

        fake.answer_next(
            1,
            GeminiAnswer::ResourceExhausted {
                retry_delay: Some("2s"),
            },
        );
        let (status, body) = summarize(&fake, "hi").await;
        assert_error(status, &body, 429, "RESOURCE_EXHAUSTED");
        assert_eq!(
            detail(&body, RETRY_INFO_TYPE).map(|d| &d["retryDelay"]),
            Some(&json!("2s"))
        );
        assert!(detail(&body, QUOTA_FAILURE_TYPE).is_some(), "{body}");

        for answer in [
            GeminiAnswer::ResourceExhausted { retry_delay: None },
            GeminiAnswer::Status(429),
        ] {
            fake.answer_next(1, answer);
            let (status, body) = summarize(&fake, "hi").await;
            assert_error(status, &body, 429, "RESOURCE_EXHAUSTED");
            assert!(detail(&body, RETRY_INFO_TYPE).is_none(), "{body}");
        }

        for (code, name) in [
            (400, "INVALID_ARGUMENT"),
            (401, "UNAUTHENTICATED"),
            (403, "PERMISSION_DENIED"),
            (404, "NOT_FOUND"),
            (500, "INTERNAL"),
            (503, "UNAVAILABLE"),
            (504, "DEADLINE_EXCEEDED"),
            (502, "UNKNOWN"),
            (42, "INTERNAL"),
        ] {
            fake.answer_next(1, GeminiAnswer::Status(code));
            let (status, body) = summarize(&fake, "hi").await;
            let code = if code == 42 { 500 } else { code };
            assert_error(status, &body, code, name);
            assert!(body.get("candidates").is_none());
        }
        fake.answer_next(1, GeminiAnswer::Status(404));
        let (_, body) = summarize(&fake, "hi").await;
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(&format!("models/{MODEL} is not found"))),
            "{body}"
        );
        assert_eq!(fake.call_count(), 13);
        assert!(fake.rejected().is_empty());
    }

    #[tokio::test]
    async fn key_in_url_is_refused_and_flagged() {
        let fake = FakeGemini::start(KEY).await;
        assert!(!fake.key_in_url_seen());
        // A harmless query is fine.
        let (status, _) = post_to(
            &client(),
            &format!("{}?alt=json", url(&fake)),
            Some(KEY),
            &request("s", "p"),
        )
        .await;
        assert_eq!(status, 200);
        assert!(!fake.key_in_url_seen());

        for query in [
            format!("key={KEY}"),
            format!("alt=json&key={KEY}"),
            "key=".to_owned(),
            format!("%6Bey={KEY}"),
        ] {
            let fresh = FakeGemini::start(KEY).await;
            // Even with the right header too.
            let (status, body) = post_to(
                &client(),
                &format!("{}?{query}", url(&fresh)),
                Some(KEY),
                &request("s", "p"),
            )
            .await;
            assert_error(status, &body, 400, "INVALID_ARGUMENT");
            assert_eq!(body["error"]["message"], KEY_IN_URL_MESSAGE, "{query}");
            assert!(fresh.key_in_url_seen(), "{query}");
            assert_eq!(fresh.call_count(), 0);
            assert_eq!(fresh.rejected().len(), 1);
            assert!(!fresh.rejected()[0].contains(KEY), "the key is not echoed");
        }
        // On an unknown path too.
        let fresh = FakeGemini::start(KEY).await;
        let (status, _) = post_to(
            &client(),
            &format!("{}/v1/models/x:generateContent?key={KEY}", fresh.endpoint()),
            None,
            &request("s", "p"),
        )
        .await;
        assert_eq!(status, 400);
        assert!(fresh.key_in_url_seen());
    }

    #[tokio::test]
    async fn missing_and_wrong_keys_are_refused() {
        let fake = FakeGemini::start(KEY).await;
        fake.answer_next(1, GeminiAnswer::Status(500));

        let (status, body) = post(&fake, None, &request("s", "p")).await;
        assert_error(status, &body, 403, "PERMISSION_DENIED");
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("unregistered callers"))
        );
        let (status, body) = post(&fake, Some(""), &request("s", "p")).await;
        assert_error(status, &body, 403, "PERMISSION_DENIED");
        // A bearer token is not the API key.
        let response = client()
            .post(url(&fake))
            .bearer_auth(KEY)
            .json(&request("s", "p"))
            .send()
            .await
            .expect("request");
        let (status, body) = reply(response).await;
        assert_error(status, &body, 403, "PERMISSION_DENIED");

        for wrong in ["AIza-wrong", &KEY[..KEY.len() - 1], &format!("{KEY}x")] {
            let (status, body) = post(&fake, Some(wrong), &request("s", "p")).await;
            assert_error(status, &body, 400, "INVALID_ARGUMENT");
            assert_eq!(
                body["error"]["message"],
                "API key not valid. Please pass a valid API key."
            );
            let info = detail(&body, ERROR_INFO_TYPE).expect("ErrorInfo");
            assert_eq!(info["reason"], "API_KEY_INVALID");
            assert_eq!(info["metadata"]["service"], SERVICE);
        }
        assert_eq!(fake.call_count(), 0);
        assert_eq!(fake.rejected().len(), 6);
        assert!(!fake.key_in_url_seen());
        // Refused requests did not use up the queued answer.
        let (status, _) = post(&fake, Some(KEY), &request("s", "p")).await;
        assert_eq!(status, 500);
    }

    #[tokio::test]
    async fn malformed_requests_are_refused() {
        let fake = FakeGemini::start(KEY).await;
        fake.answer_next(1, GeminiAnswer::Status(503));
        let text = json!([{"text": "hi"}]);
        // (body, expected message start)
        let cases = [
            (json!([]), "Invalid JSON payload received. Root element"),
            (
                json!({}),
                "* GenerateContentRequest.contents: contents is not specified",
            ),
            (
                json!({"contents": []}),
                "* GenerateContentRequest.contents: contents is not",
            ),
            (
                json!({"contents": null}),
                "* GenerateContentRequest.contents: contents is not",
            ),
            (
                json!({"contents": "hi"}),
                "Invalid JSON payload received. Invalid value at 'contents'",
            ),
            (
                json!({"contents": ["hi"]}),
                "Invalid JSON payload received. Invalid value at 'contents[0]'",
            ),
            (
                json!({"contents": [{"role": "user"}]}),
                "* GenerateContentRequest.contents[0].parts: contents.parts must not be empty",
            ),
            (
                json!({"contents": [{"parts": []}]}),
                "* GenerateContentRequest.contents[0].parts: contents.parts must not be empty",
            ),
            (
                json!({"contents": [{"parts": [{}]}]}),
                "* GenerateContentRequest.contents[0].parts[0].data: required oneof field",
            ),
            (
                json!({"contents": [{"parts": [{"text": ""}]}]}),
                "* GenerateContentRequest.contents[0].parts[0].data",
            ),
            (
                json!({"contents": [{"parts": [{"text": 5}]}]}),
                "Invalid JSON payload received. Invalid value at 'contents[0].parts[0].text' (TYPE_STRING), 5",
            ),
            (
                json!({"contents": [{"parts": [{"txt": "hi"}]}]}),
                "Invalid JSON payload received. Unknown name \"txt\" at 'contents[0].parts[0]'",
            ),
            (
                json!({"contents": [{"parts": [{"inlineData": {"mimeType": "image/png", "data": ""}}]}]}),
                "The fake Gemini supports only text parts",
            ),
            (
                json!({"contents": [{"role": "assistant", "parts": text}]}),
                "Please use a valid role: user, model.",
            ),
            (
                json!({"contents": [{"role": "system", "parts": text}]}),
                "Please use a valid role",
            ),
            (
                json!({"contents": [{"role": 1, "parts": text}]}),
                "Invalid JSON payload received. Invalid value at 'contents[0].role'",
            ),
            (
                json!({"contents": [{"parts": text}], "temperature": 0.2}),
                "Invalid JSON payload received. Unknown name \"temperature\": Cannot find field.",
            ),
            (
                json!({"contents": [{"parts": text}], "systemInstruction": "be brief"}),
                "Invalid JSON payload received. Invalid value at 'system_instruction'",
            ),
            (
                json!({"contents": [{"parts": text}], "systemInstruction": {"parts": []}}),
                "* GenerateContentRequest.system_instruction.parts: contents.parts must not be empty",
            ),
            (
                json!({"contents": [{"parts": text}], "systemInstruction": {"parts": [{"text": ""}]}}),
                "* GenerateContentRequest.system_instruction.parts[0].data",
            ),
            (
                json!({"contents": [{"parts": text}], "generationConfig": 1}),
                "Invalid JSON payload received. Invalid value at 'generation_config'",
            ),
            (
                json!({"contents": [{"parts": text}], "generationConfig": {"temperature": "0.2"}}),
                "Invalid JSON payload received. Invalid value at 'generation_config.temperature' (TYPE_FLOAT), \"0.2\"",
            ),
            (
                json!({"contents": [{"parts": text}], "generationConfig": {"temperature": 3}}),
                "* GenerateContentRequest.generation_config.temperature",
            ),
            (
                json!({"contents": [{"parts": text}], "generationConfig": {"maxOutputTokens": 1.5}}),
                "Invalid JSON payload received. Invalid value at 'generation_config.max_output_tokens' (TYPE_INT32), 1.5",
            ),
            (
                json!({"contents": [{"parts": text}], "generationConfig": {"maxOutputTokens": "256"}}),
                "Invalid JSON payload received. Invalid value at 'generation_config.max_output_tokens' (TYPE_INT32)",
            ),
            (
                json!({"contents": [{"parts": text}], "generationConfig": {"maxOutputTokens": 4_294_967_296_u64}}),
                "Invalid JSON payload received. Invalid value at 'generation_config.max_output_tokens' (TYPE_INT32)",
            ),
            (
                json!({"contents": [{"parts": text}], "generationConfig": {"maxOutputTokens": -1}}),
                "* GenerateContentRequest.generation_config.max_output_tokens",
            ),
            (
                json!({"contents": [{"parts": text}], "generationConfig": {"topP": true}}),
                "Invalid JSON payload received. Invalid value at 'generation_config.top_p' (TYPE_FLOAT)",
            ),
            (
                json!({"contents": [{"parts": text}], "generationConfig": {"topP": 1.5}}),
                "* GenerateContentRequest.generation_config.top_p",
            ),
            (
                json!({"contents": [{"parts": text}], "generationConfig": {"topK": 2.5}}),
                "Invalid JSON payload received. Invalid value at 'generation_config.top_k' (TYPE_INT32)",
            ),
            (
                json!({"contents": [{"parts": text}], "generationConfig": {"max_tokens": 10}}),
                "Invalid JSON payload received. Unknown name \"max_tokens\" at 'generation_config'",
            ),
            (
                json!({"contents": [{"parts": text}], "generationConfig": {"stopSequences": [1]}}),
                "Invalid JSON payload received. Invalid value at 'generation_config.stop_sequences[0]'",
            ),
            (
                json!({"contents": [{"parts": text}], "generationConfig": {"candidateCount": 2}}),
                "The fake Gemini answers one candidate only",
            ),
            (
                json!({"contents": [{"parts": text}], "safetySettings": {"category": "x"}}),
                "Invalid JSON payload received. Invalid value at 'safety_settings'",
            ),
        ];
        for (body, message) in &cases {
            let (status, answer) = post(&fake, Some(KEY), body).await;
            assert_error(status, &answer, 400, "INVALID_ARGUMENT");
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .is_some_and(|m| m.starts_with(message)),
                "{body}: expected {message:?}, got {answer}"
            );
        }
        // Field violations name the field.
        let (_, answer) = post(
            &fake,
            Some(KEY),
            &json!({"contents": [{"parts": text}], "generationConfig": {"temperature": "hot"}}),
        )
        .await;
        assert_eq!(
            detail(&answer, BAD_REQUEST_TYPE).map(|d| &d["fieldViolations"][0]["field"]),
            Some(&json!("generation_config.temperature"))
        );

        // Not JSON, and not declared as JSON.
        for (content_type, raw) in [
            ("application/json", "{\"contents\":"),
            ("application/x-www-form-urlencoded", "{\"contents\":[]}"),
        ] {
            let response = client()
                .post(url(&fake))
                .header(API_KEY_HEADER, KEY)
                .header("content-type", content_type)
                .body(raw)
                .send()
                .await
                .expect("request");
            let (status, answer) = reply(response).await;
            assert_error(status, &answer, 400, "INVALID_ARGUMENT");
            assert!(detail(&answer, BAD_REQUEST_TYPE).is_some(), "{answer}");
        }

        // The path: an empty model, another method, another version or verb.
        let good = request("s", "p");
        let base = format!("{}/v1beta/models", fake.endpoint());
        for (url, code) in [
            (format!("{base}/:generateContent"), 400),
            (format!("{base}/{MODEL}:streamGenerateContent"), 404),
            (format!("{base}/{MODEL}"), 404),
            (
                format!("{}/v1/models/{MODEL}:generateContent", fake.endpoint()),
                404,
            ),
            (format!("{base}/{MODEL}:generateContent/extra"), 404),
        ] {
            let (status, answer) = post_to(&client(), &url, Some(KEY), &good).await;
            assert_eq!(status, code, "{url}: {answer}");
            assert_eq!(answer["error"]["code"], code, "{url}: {answer}");
        }
        let response = client()
            .get(url(&fake))
            .header(API_KEY_HEADER, KEY)
            .send()
            .await
            .expect("GET");
        assert_eq!(response.status().as_u16(), 404);

        // Nothing was a call, nothing used up the queued answer.
        assert_eq!(fake.call_count(), 0);
        assert_eq!(fake.rejected().len(), cases.len() + 1 + 2 + 5 + 1);
        assert!(fake.rejected()[0].starts_with("400 INVALID_ARGUMENT: Invalid JSON payload"));
        let (status, _) = post(&fake, Some(KEY), &good).await;
        assert_eq!(status, 503);
        // Nulls are unset fields; optional fields of the right types pass.
        let body = json!({
            "contents": [{"role": "user", "parts": [{"text": "hi", "thought": null}]}],
            "systemInstruction": {"role": "system", "parts": [{"text": "s"}]},
            "generationConfig": {
                "temperature": 0, "topP": 1, "topK": 40, "maxOutputTokens": 0,
                "candidateCount": 1, "stopSequences": ["\n\n"], "responseMimeType": "text/plain",
                "thinkingConfig": {"thinkingBudget": 0}, "seed": null,
            },
            "safetySettings": [{"category": "HARM_CATEGORY_HARASSMENT", "threshold": "BLOCK_NONE"}],
            "tools": null,
        });
        let (status, answer) = post(&fake, Some(KEY), &body).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(fake.call_count(), 2);
    }

    #[tokio::test]
    async fn answers_queue_in_order_and_prompt_rules_come_first() {
        let fake = FakeGemini::start(KEY).await;
        fake.answer_next(2, GeminiAnswer::Status(500));
        fake.answer_next(0, GeminiAnswer::Status(403));
        fake.answer_next(1, GeminiAnswer::Status(503));
        fake.answer_when_prompt_contains("secret", GeminiAnswer::PromptBlocked("SAFETY"));
        fake.answer_when_prompt_contains("secret", GeminiAnswer::Finish("SAFETY"));
        fake.answer_when_prompt_contains("cret", GeminiAnswer::Status(400));
        let mut statuses = Vec::new();
        for prompt in [
            "a top secret chat",
            "hello",
            "hello",
            "secret again",
            "hello",
            "hello",
        ] {
            let (status, body) = summarize(&fake, prompt).await;
            if prompt.contains("secret") {
                // The first rule set for the needle, with its latest answer.
                assert_eq!(body["candidates"][0]["finishReason"], "SAFETY", "{body}");
            }
            statuses.push(status);
        }
        assert_eq!(statuses, [200, 500, 500, 200, 503, 200]);
        assert_eq!(fake.call_count(), 6);
        let prompts: Vec<String> = fake.calls().into_iter().map(|c| c.prompt).collect();
        assert_eq!(prompts[0], "a top secret chat");
        assert_eq!(prompts[3], "secret again");

        fake.answer_next(3, GeminiAnswer::Status(500));
        fake.answer_when_prompt_contains("hello", GeminiAnswer::Status(400));
        fake.clear();
        let (status, body) = summarize(&fake, "hello\nsecret").await;
        assert_eq!(status, 200);
        assert_eq!(text_of(&body), Some("Summary of 2 lines: hello… secret"));
        // clear keeps the history.
        assert_eq!(fake.call_count(), 7);
    }

    #[tokio::test]
    async fn max_concurrent_counts_overlapping_calls() {
        let fake = FakeGemini::start(KEY).await;
        assert_eq!(fake.max_concurrent(), 0);
        fake.set_delay(Duration::from_millis(300));
        // One after the other: never more than one at a time, each delayed.
        for _ in 0..3 {
            let started = Instant::now();
            let (status, _) = summarize(&fake, "x").await;
            assert_eq!(status, 200);
            assert!(started.elapsed() >= Duration::from_millis(300));
        }
        assert_eq!(fake.max_concurrent(), 1);
        // Errors are delayed too.
        fake.answer_next(1, GeminiAnswer::Status(503));
        let started = Instant::now();
        let (status, _) = summarize(&fake, "x").await;
        assert_eq!(status, 503);
        assert!(started.elapsed() >= Duration::from_millis(300));

        // Four at once.
        let url = url(&fake);
        let tasks: Vec<_> = (0..4)
            .map(|i| {
                let url = url.clone();
                tokio::spawn(async move {
                    post_to(
                        &client(),
                        &url,
                        Some(KEY),
                        &request("s", &format!("chat {i}")),
                    )
                    .await
                })
            })
            .collect();
        for task in tasks {
            let (status, _) = task.await.expect("task");
            assert_eq!(status, 200);
        }
        assert_eq!(fake.max_concurrent(), 4);
        assert_eq!(fake.call_count(), 8);

        // Refused requests are not calls in progress.
        let fresh = FakeGemini::start(KEY).await;
        fresh.set_delay(Duration::from_millis(200));
        let url = self::url(&fresh);
        let tasks: Vec<_> = (0..3)
            .map(|_| {
                let url = url.clone();
                tokio::spawn(async move { post_to(&client(), &url, None, &json!({})).await })
            })
            .collect();
        for task in tasks {
            assert_eq!(task.await.expect("task").0, 403);
        }
        assert_eq!(fresh.max_concurrent(), 0);
    }

    #[tokio::test]
    async fn hang_does_not_answer() {
        let fake = FakeGemini::start(KEY).await;
        fake.answer_next(1, GeminiAnswer::Hang);
        let impatient = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(500))
            .build()
            .expect("reqwest client");
        let started = Instant::now();
        let error = impatient
            .post(url(&fake))
            .header(API_KEY_HEADER, KEY)
            .json(&request("s", "p"))
            .send()
            .await
            .expect_err("a hanging call must time out");
        assert!(error.is_timeout(), "{error}");
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert_eq!(fake.call_count(), 1);
        // The abandoned call is no longer in progress once the client is gone.
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(fake.shared.state().in_flight, 0);
        // The next call is answered.
        let (status, _) = summarize(&fake, "p").await;
        assert_eq!(status, 200);
        assert_eq!(fake.max_concurrent(), 1);
    }

    #[tokio::test]
    async fn dropping_the_fake_stops_the_server() {
        let fake = FakeGemini::start(KEY).await;
        let url = url(&fake);
        let pooled = client();
        let (status, _) = post_to(&pooled, &url, Some(KEY), &request("s", "p")).await;
        assert_eq!(status, 200);
        // A hanging call ends when the fake is dropped.
        fake.answer_next(1, GeminiAnswer::Hang);
        let hanging = tokio::spawn({
            let url = url.clone();
            async move {
                client()
                    .post(&url)
                    .header(API_KEY_HEADER, KEY)
                    .json(&request("s", "p"))
                    .send()
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(fake);
        let hung = tokio::time::timeout(Duration::from_secs(5), hanging)
            .await
            .expect("the hanging call ends")
            .expect("task");
        assert!(hung.map_or(true, |r| r.status().as_u16() != 200));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Neither the kept-alive connection nor a new one is served.
        for c in [pooled, client()] {
            let result = c
                .post(&url)
                .header(API_KEY_HEADER, KEY)
                .json(&request("s", "p"))
                .send()
                .await;
            assert!(result.is_err(), "{result:?}");
        }
    }
}
