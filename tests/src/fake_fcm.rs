//! A local fake of Firebase Cloud Messaging HTTP v1 (`projects.messages.send`)
//! and of Google's OAuth2 token endpoint (service-account JWT bearer grant),
//! served over real HTTP on `127.0.0.1` with an ephemeral port.
//!
//! * `POST /token` takes `grant_type=urn:ietf:params:oauth:grant-type:jwt-bearer`
//!   and an RS256 `assertion` signed with the service account's key, and
//!   answers `{"access_token":"ya29.fake-…","expires_in":…,"token_type":"Bearer"}`
//!   or a 400 `{"error":…,"error_description":…}`.
//! * `POST /v1/projects/{project_id}/messages:send` checks the bearer token,
//!   the project and the `message`, then applies the configured failures
//!   ([`FakeFcm::fail_token`] first, then [`FakeFcm::fail_next`]) and
//!   otherwise answers `{"name":"projects/…/messages/…"}` and records the
//!   message in [`FakeFcm::sent`].
//!
//! Error bodies follow Google's shapes. Errors found while parsing the JSON
//! (unknown field names, a value of the wrong type) carry only a
//! `google.rpc.BadRequest` detail, as Google's front end answers them; errors
//! of FCM itself carry an `FcmError` detail with an `errorCode`.
//!
//! The server stops when the [`FakeFcm`] is dropped: the listener closes and
//! open connections (kept-alive or hanging) are closed too.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Bytes;
use axum::extract::rejection::PathRejection;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use rand::Rng;
use rand::distr::Alphanumeric;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::fake_server::ShutdownListener;
use crate::google_api::{
    JsonViolation, check_known, field, google_error, has_media_type, object, shown, string,
};
use tokio_util::sync::CancellationToken;

/// The OAuth2 scope an assertion must ask for.
pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
/// The only `grant_type` the token endpoint accepts.
pub const JWT_BEARER_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
/// Largest accepted serialized `message` object, in bytes.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// Default `expires_in` of issued access tokens.
pub const DEFAULT_ACCESS_TOKEN_TTL_SECS: u64 = 3600;
/// Largest accepted `exp - iat` of an assertion.
const MAX_ASSERTION_LIFETIME_SECS: i128 = 3600;
/// How far in the future an assertion's `iat` may be.
const CLOCK_SKEW_SECS: i128 = 60;
/// How long [`FakeResponse::Hang`] keeps a request waiting.
const HANG_FOR: Duration = Duration::from_secs(3600);

const FCM_ERROR_TYPE: &str = "type.googleapis.com/google.firebase.fcm.v1.FcmError";
const BAD_REQUEST_TYPE: &str = "type.googleapis.com/google.rpc.BadRequest";
const UNAUTHENTICATED_MESSAGE: &str = "Request had invalid authentication credentials. \
     Expected OAuth 2 access token, login cookie or other valid authentication credential.";
const INVALID_TOKEN_MESSAGE: &str = "The registration token is not a valid FCM registration token";
const BAD_TIMEFRAME_MESSAGE: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) \
     and in a reasonable timeframe. Check your iat and exp values in the JWT claim.";

const MESSAGE_FIELDS: &[&str] = &[
    "name",
    "data",
    "notification",
    "android",
    "webpush",
    "apns",
    "fcm_options",
    "fcmOptions",
    "token",
    "topic",
    "condition",
];
const NOTIFICATION_FIELDS: &[&str] = &["title", "body", "image"];
const ANDROID_FIELDS: &[&str] = &[
    "collapse_key",
    "collapseKey",
    "priority",
    "ttl",
    "restricted_package_name",
    "restrictedPackageName",
    "data",
    "notification",
    "fcm_options",
    "fcmOptions",
    "direct_boot_ok",
    "directBootOk",
    "bandwidth_constrained_ok",
    "bandwidthConstrainedOk",
    "restricted_satellite_ok",
    "restrictedSatelliteOk",
];
const APNS_FIELDS: &[&str] = &[
    "headers",
    "payload",
    "fcm_options",
    "fcmOptions",
    "live_activity_token",
    "liveActivityToken",
];
/// `data` keys FCM reserves.
const RESERVED_DATA_KEYS: &[&str] = &["from", "notification", "message_type"];
const RESERVED_DATA_KEY_PREFIXES: &[&str] = &["google", "gcm"];

/// A message FCM accepted (answered 200).
#[derive(Clone, Debug)]
pub struct SentMessage {
    /// `message.token`.
    pub device_token: String,
    /// The whole `message` object, as received.
    pub body: Value,
    /// When it was accepted.
    pub at: Instant,
}

/// A canned answer to a `messages:send` request, set with
/// [`FakeFcm::fail_next`] or [`FakeFcm::fail_token`].
#[derive(Clone, Debug)]
pub enum FakeResponse {
    /// 404 `NOT_FOUND`, errorCode `UNREGISTERED`.
    Unregistered,
    /// 400 `INVALID_ARGUMENT`, errorCode `INVALID_ARGUMENT`, message
    /// "The registration token is not a valid FCM registration token".
    InvalidToken,
    /// 400 `INVALID_ARGUMENT` about the payload (an unknown field
    /// `message.foo`), with errorCode `INVALID_ARGUMENT` and a `BadRequest`
    /// fieldViolations detail; does not name the registration token.
    InvalidArgument,
    /// 403 `PERMISSION_DENIED`, errorCode `SENDER_ID_MISMATCH`.
    SenderIdMismatch,
    /// 401 `UNAUTHENTICATED`, errorCode `THIRD_PARTY_AUTH_ERROR`.
    ThirdPartyAuthError,
    /// 429 `RESOURCE_EXHAUSTED`, errorCode `QUOTA_EXCEEDED`, with
    /// `Retry-After: <secs>` when `Some`.
    QuotaExceeded { retry_after: Option<u64> },
    /// 500 `INTERNAL`, errorCode `INTERNAL`.
    Internal,
    /// 503 `UNAVAILABLE`, errorCode `UNAVAILABLE`, with `Retry-After: <secs>`
    /// when `Some`.
    Unavailable { retry_after: Option<u64> },
    /// Never answers (waits an hour, or until the fake is dropped).
    Hang,
}

/// The running fake. The server stops when this is dropped.
pub struct FakeFcm {
    shared: Arc<Shared>,
    addr: SocketAddr,
    task: JoinHandle<()>,
}

struct Shared {
    project_id: String,
    client_email: String,
    token_uri: String,
    private_key_id: String,
    key: DecodingKey,
    shutdown: CancellationToken,
    state: Mutex<FakeState>,
}

struct FakeState {
    sent: Vec<SentMessage>,
    send_attempts: usize,
    token_requests: usize,
    /// Remaining count and answer, in order.
    fail_next: VecDeque<(usize, FakeResponse)>,
    fail_tokens: HashMap<String, FakeResponse>,
    /// Issued access tokens and their expiry (`None`: never, the TTL overflowed).
    access_tokens: HashMap<String, Option<Instant>>,
    ttl_secs: u64,
}

impl FakeFcm {
    /// Starts the fake on `127.0.0.1:0`.
    ///
    /// `service_account_public_pem`: the RSA public key matching the service
    /// account's private key.
    pub async fn start(
        service_account_public_pem: &str,
        client_email: &str,
        project_id: &str,
    ) -> FakeFcm {
        let key = DecodingKey::from_rsa_pem(service_account_public_pem.as_bytes())
            .expect("FakeFcm::start: service_account_public_pem must be an RSA public key PEM");
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("FakeFcm::start: bind 127.0.0.1:0");
        let addr = listener
            .local_addr()
            .expect("FakeFcm::start: local address of the listener");
        let shutdown = CancellationToken::new();
        let shared = Arc::new(Shared {
            project_id: project_id.to_owned(),
            client_email: client_email.to_owned(),
            token_uri: format!("http://{addr}/token"),
            private_key_id: random_hex(40),
            key,
            shutdown: shutdown.clone(),
            state: Mutex::new(FakeState {
                sent: Vec::new(),
                send_attempts: 0,
                token_requests: 0,
                fail_next: VecDeque::new(),
                fail_tokens: HashMap::new(),
                access_tokens: HashMap::new(),
                ttl_secs: DEFAULT_ACCESS_TOKEN_TTL_SECS,
            }),
        });
        let app = Router::new()
            .route("/token", post(token_handler))
            .route(
                "/v1/projects/{project_id}/messages:send",
                post(send_handler),
            )
            .fallback(not_found_handler)
            .with_state(Arc::clone(&shared));
        let listener = ShutdownListener { listener, shutdown };
        let task = tokio::spawn(async move {
            // `serve` only returns on a listener error; the fake then stops.
            let _ = axum::serve(listener, app).await;
        });
        FakeFcm { shared, addr, task }
    }

    /// `http://127.0.0.1:PORT`; messages:send is
    /// `POST {endpoint}/v1/projects/{project_id}/messages:send`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn token_uri(&self) -> String {
        self.shared.token_uri.clone()
    }

    /// A service-account JSON file's contents for these settings, with
    /// `private_key_pem` as the private key and [`Self::token_uri`] as the
    /// token URI.
    pub fn service_account_json(&self, private_key_pem: &str) -> String {
        let email = &self.shared.client_email;
        let file = json!({
            "type": "service_account",
            "project_id": self.shared.project_id,
            "private_key_id": self.shared.private_key_id,
            "private_key": private_key_pem,
            "client_email": email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.shared.token_uri,
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": format!(
                "https://www.googleapis.com/robot/v1/metadata/x509/{}",
                email.replace('@', "%40")
            ),
            "universe_domain": "googleapis.com",
        });
        serde_json::to_string_pretty(&file).expect("a JSON value serializes")
    }

    /// Accepted (200) sends, in order. `validate_only` sends are not recorded.
    pub fn sent(&self) -> Vec<SentMessage> {
        self.shared.state().sent.clone()
    }

    /// Accepted sends to `device_token`, in order.
    pub fn sent_to(&self, device_token: &str) -> Vec<SentMessage> {
        self.shared
            .state()
            .sent
            .iter()
            .filter(|m| m.device_token == device_token)
            .cloned()
            .collect()
    }

    /// Every messages:send request, whatever the answer.
    pub fn send_attempts(&self) -> usize {
        self.shared.state().send_attempts
    }

    /// Every token request, whatever the answer.
    pub fn token_requests(&self) -> usize {
        self.shared.state().token_requests
    }

    /// The next `n` messages:send requests (any device token) that pass
    /// authentication and validation get `r`. Calls queue up: after
    /// `fail_next(2, a); fail_next(1, b)` the answers are a, a, b. A send to a
    /// token set with [`Self::fail_token`] does not use up one of the `n`.
    pub fn fail_next(&self, n: usize, r: FakeResponse) {
        if n > 0 {
            self.shared.state().fail_next.push_back((n, r));
        }
    }

    /// Every send to `device_token` that passes authentication and validation
    /// gets `r`, until [`Self::clear_failures`]. Replaces an earlier setting
    /// for the same token.
    pub fn fail_token(&self, device_token: &str, r: FakeResponse) {
        self.shared
            .state()
            .fail_tokens
            .insert(device_token.to_owned(), r);
    }

    /// Forgets every [`Self::fail_next`] and [`Self::fail_token`] setting.
    pub fn clear_failures(&self) {
        let mut state = self.shared.state();
        state.fail_next.clear();
        state.fail_tokens.clear();
    }

    /// Every access token issued so far becomes invalid: sends with them get
    /// 401 `UNAUTHENTICATED`. Tokens issued later are valid.
    pub fn revoke_access_tokens(&self) {
        self.shared.state().access_tokens.clear();
    }

    /// `expires_in` of tokens issued from now on (default 3600). A token past
    /// its expiry is refused like a revoked one; 0 issues tokens that are
    /// already expired.
    pub fn set_access_token_ttl(&self, secs: u64) {
        self.shared.state().ttl_secs = secs;
    }
}

impl Drop for FakeFcm {
    fn drop(&mut self) {
        // Closes open connections and ends hanging requests, then the listener.
        self.shared.shutdown.cancel();
        self.task.abort();
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, FakeState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the request carries a live access token this fake issued.
    fn authorized(&self, headers: &HeaderMap) -> bool {
        let Some(value) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        else {
            return false;
        };
        let Some((scheme, token)) = value.trim().split_once(' ') else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case("bearer") {
            return false;
        }
        match self.state().access_tokens.get(token.trim()) {
            Some(Some(expiry)) => Instant::now() < *expiry,
            Some(None) => true,
            None => false,
        }
    }

    /// The configured failure for a send to `device_token`, if any.
    fn take_failure(&self, device_token: &str) -> Option<FakeResponse> {
        let mut state = self.state();
        if let Some(r) = state.fail_tokens.get(device_token) {
            return Some(r.clone());
        }
        let (r, used_up) = {
            let front = state.fail_next.front_mut()?;
            front.0 = front.0.saturating_sub(1);
            (front.1.clone(), front.0 == 0)
        };
        if used_up {
            state.fail_next.pop_front();
        }
        Some(r)
    }

    /// Handles a token request body; `Ok` is the new token and its TTL.
    fn grant(&self, headers: &HeaderMap, body: &[u8]) -> Result<(String, u64), OAuthError> {
        if !has_media_type(headers, "application/x-www-form-urlencoded") {
            return Err(OAuthError::invalid_request(
                "Content-Type must be application/x-www-form-urlencoded",
            ));
        }
        let form = parse_form(body).map_err(OAuthError::invalid_request)?;
        match form.get("grant_type") {
            Some(g) if g == JWT_BEARER_GRANT_TYPE => {}
            other => {
                return Err(OAuthError {
                    error: "unsupported_grant_type",
                    description: format!(
                        "Invalid grant_type: {}",
                        other.map(String::as_str).unwrap_or("")
                    ),
                });
            }
        }
        let Some(assertion) = form.get("assertion") else {
            return Err(OAuthError::invalid_request(
                "Missing required parameter: assertion",
            ));
        };
        self.verify_assertion(assertion)
            .map_err(|description| OAuthError {
                error: "invalid_grant",
                description,
            })?;
        let token = format!("ya29.fake-{}", random_alphanumeric(48));
        let mut state = self.state();
        let ttl = state.ttl_secs;
        let expiry = Instant::now().checked_add(Duration::from_secs(ttl));
        state.access_tokens.insert(token.clone(), expiry);
        Ok((token, ttl))
    }

    /// Checks the JWT bearer assertion; `Err` is the `error_description`.
    fn verify_assertion(&self, assertion: &str) -> Result<(), String> {
        let mut validation = Validation::new(Algorithm::RS256);
        // The claims are checked below, with Google's error messages.
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims = HashSet::new();
        let claims = jsonwebtoken::decode::<Map<String, Value>>(assertion, &self.key, &validation)
            .map_err(|e| match e.kind() {
                ErrorKind::InvalidSignature => "Invalid JWT Signature.".to_owned(),
                ErrorKind::InvalidAlgorithm => {
                    "Invalid JWT: the assertion must be signed with RS256.".to_owned()
                }
                _ => format!("Invalid JWT: the assertion cannot be decoded ({e})."),
            })?
            .claims;
        match claims.get("iss") {
            Some(Value::String(iss)) if *iss == self.client_email => {}
            _ => {
                return Err(format!(
                    "Invalid grant: account not found (iss must be {}).",
                    self.client_email
                ));
            }
        }
        match claims.get("scope") {
            Some(Value::String(scope)) if scope.split_whitespace().any(|s| s == FCM_SCOPE) => {}
            _ => {
                return Err(format!(
                    "Invalid OAuth scope or ID token audience provided (scope must include {FCM_SCOPE})."
                ));
            }
        }
        match claims.get("aud") {
            Some(Value::String(aud)) if *aud == self.token_uri => {}
            _ => {
                return Err(format!(
                    "Invalid JWT: Failed audience check. The right audience is {}",
                    self.token_uri
                ));
            }
        }
        let (Some(iat), Some(exp)) = (
            claims.get("iat").and_then(Value::as_i64),
            claims.get("exp").and_then(Value::as_i64),
        ) else {
            return Err(BAD_TIMEFRAME_MESSAGE.to_owned());
        };
        let (iat, exp, now) = (i128::from(iat), i128::from(exp), i128::from(unix_now()));
        if iat > now + CLOCK_SKEW_SECS || exp <= now || exp - iat > MAX_ASSERTION_LIFETIME_SECS {
            return Err(BAD_TIMEFRAME_MESSAGE.to_owned());
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------
// Handlers

async fn token_handler(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.state().token_requests += 1;
    match shared.grant(&headers, &body) {
        Ok((access_token, expires_in)) => Json(json!({
            "access_token": access_token,
            "expires_in": expires_in,
            "token_type": "Bearer",
        }))
        .into_response(),
        Err(e) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": e.error, "error_description": e.description})),
        )
            .into_response(),
    }
}

async fn send_handler(
    State(shared): State<Arc<Shared>>,
    project: Result<Path<String>, PathRejection>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    shared.state().send_attempts += 1;
    if !shared.authorized(&headers) {
        return unauthenticated();
    }
    if !matches!(&project, Ok(Path(p)) if *p == shared.project_id) {
        return not_found();
    }
    let request = match validate_send(&headers, &body) {
        Ok(request) => request,
        Err(rejection) => return rejection.into_response(),
    };
    if let Some(r) = shared.take_failure(&request.token) {
        return fake_response(&shared, r).await;
    }
    let project = &shared.project_id;
    if request.validate_only {
        return Json(json!({"name": format!("projects/{project}/messages/fake_message_id")}))
            .into_response();
    }
    let micros = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_micros();
    let name = format!(
        "projects/{project}/messages/0:{micros}%{:016x}",
        rand::random::<u64>()
    );
    shared.state().sent.push(SentMessage {
        device_token: request.token,
        body: request.message,
        at: Instant::now(),
    });
    Json(json!({ "name": name })).into_response()
}

async fn not_found_handler() -> Response {
    not_found()
}

async fn fake_response(shared: &Shared, r: FakeResponse) -> Response {
    match r {
        FakeResponse::Unregistered => fcm_error(
            StatusCode::NOT_FOUND,
            "Requested entity was not found.",
            "UNREGISTERED",
        ),
        FakeResponse::InvalidToken => fcm_error(
            StatusCode::BAD_REQUEST,
            INVALID_TOKEN_MESSAGE,
            "INVALID_ARGUMENT",
        ),
        FakeResponse::InvalidArgument => {
            let message = "Invalid JSON payload received. Unknown name \"foo\" at 'message': Cannot find field.";
            google_error(
                StatusCode::BAD_REQUEST,
                message,
                vec![
                    fcm_error_detail("INVALID_ARGUMENT"),
                    bad_request_detail(Some("message.foo"), message),
                ],
            )
        }
        FakeResponse::SenderIdMismatch => fcm_error(
            StatusCode::FORBIDDEN,
            "SenderId mismatch",
            "SENDER_ID_MISMATCH",
        ),
        FakeResponse::ThirdPartyAuthError => fcm_error(
            StatusCode::UNAUTHORIZED,
            "Auth error from APNS or Web Push Service",
            "THIRD_PARTY_AUTH_ERROR",
        ),
        FakeResponse::QuotaExceeded { retry_after } => with_retry_after(
            fcm_error(
                StatusCode::TOO_MANY_REQUESTS,
                "Quota exceeded for quota metric 'Send requests' and limit \
                 'Send requests per minute' of service 'fcm.googleapis.com'.",
                "QUOTA_EXCEEDED",
            ),
            retry_after,
        ),
        FakeResponse::Internal => fcm_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "Internal error encountered.",
            "INTERNAL",
        ),
        FakeResponse::Unavailable { retry_after } => with_retry_after(
            fcm_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The service is currently unavailable.",
                "UNAVAILABLE",
            ),
            retry_after,
        ),
        FakeResponse::Hang => {
            tokio::select! {
                () = tokio::time::sleep(HANG_FOR) => {}
                () = shared.shutdown.cancelled() => {}
            }
            fcm_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "The service is currently unavailable.",
                "UNAVAILABLE",
            )
        }
    }
}

// ---------------------------------------------------------------------------
// Responses

struct OAuthError {
    error: &'static str,
    description: String,
}

impl OAuthError {
    fn invalid_request(description: impl Into<String>) -> Self {
        OAuthError {
            error: "invalid_request",
            description: description.into(),
        }
    }
}

fn fcm_error(code: StatusCode, message: &str, error_code: &str) -> Response {
    google_error(code, message, vec![fcm_error_detail(error_code)])
}

fn fcm_error_detail(error_code: &str) -> Value {
    json!({"@type": FCM_ERROR_TYPE, "errorCode": error_code})
}

fn bad_request_detail(field: Option<&str>, description: &str) -> Value {
    let violation = match field {
        Some(field) => json!({"field": field, "description": description}),
        None => json!({ "description": description }),
    };
    json!({"@type": BAD_REQUEST_TYPE, "fieldViolations": [violation]})
}

fn with_retry_after(mut response: Response, retry_after: Option<u64>) -> Response {
    if let Some(secs) = retry_after {
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(secs));
    }
    response
}

fn unauthenticated() -> Response {
    let mut response = google_error(StatusCode::UNAUTHORIZED, UNAUTHENTICATED_MESSAGE, vec![]);
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"https://accounts.google.com/\""),
    );
    response
}

fn not_found() -> Response {
    google_error(
        StatusCode::NOT_FOUND,
        "Requested entity was not found.",
        vec![],
    )
}

// ---------------------------------------------------------------------------
// messages:send validation

struct SendRequest {
    token: String,
    message: Value,
    validate_only: bool,
}

/// Why a send request is refused with 400 `INVALID_ARGUMENT`.
enum Rejection {
    /// Found while parsing the JSON: only a `BadRequest` detail.
    Json {
        field: Option<String>,
        message: String,
    },
    /// Found by FCM: errorCode `INVALID_ARGUMENT`, plus a `BadRequest` detail
    /// when a field is named.
    Fcm {
        field: Option<String>,
        message: String,
    },
    /// The registration token is not valid.
    Token,
}

impl From<JsonViolation> for Rejection {
    fn from(v: JsonViolation) -> Self {
        Rejection::Json {
            field: v.field,
            message: v.message,
        }
    }
}

/// A value of the wrong type.
fn type_error(path: &str, type_name: &str, value: &Value) -> Rejection {
    crate::google_api::type_error(path, type_name, value).into()
}

impl Rejection {
    fn into_response(self) -> Response {
        match self {
            Rejection::Json { field, message } => google_error(
                StatusCode::BAD_REQUEST,
                &message,
                vec![bad_request_detail(field.as_deref(), &message)],
            ),
            Rejection::Fcm { field, message } => {
                let mut details = vec![fcm_error_detail("INVALID_ARGUMENT")];
                if let Some(field) = field.as_deref() {
                    details.push(bad_request_detail(Some(field), &message));
                }
                google_error(StatusCode::BAD_REQUEST, &message, details)
            }
            Rejection::Token => fcm_error(
                StatusCode::BAD_REQUEST,
                INVALID_TOKEN_MESSAGE,
                "INVALID_ARGUMENT",
            ),
        }
    }
}

fn validate_send(headers: &HeaderMap, body: &[u8]) -> Result<SendRequest, Rejection> {
    if headers.contains_key(header::CONTENT_TYPE) && !has_media_type(headers, "application/json") {
        return Err(Rejection::Json {
            field: None,
            message: "Invalid JSON payload received. Content-Type must be application/json."
                .to_owned(),
        });
    }
    let root: Value = serde_json::from_slice(body).map_err(|e| Rejection::Json {
        field: None,
        message: format!("Invalid JSON payload received. {e}"),
    })?;
    let Some(root_map) = root.as_object() else {
        return Err(Rejection::Json {
            field: None,
            message: format!(
                "Invalid JSON payload received. Expected an object, got {}.",
                shown(&root)
            ),
        });
    };
    check_known(root_map, "", &["message", "validate_only", "validateOnly"])?;
    let validate_only = match field(root_map, &["validate_only", "validateOnly"]) {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(v) => return Err(type_error("validate_only", "TYPE_BOOL", v)),
    };
    let Some(message_value) = field(root_map, &["message"]) else {
        return Err(Rejection::Fcm {
            field: Some("message".to_owned()),
            message: "Request contains an invalid argument: message is not set.".to_owned(),
        });
    };
    let message = object(
        message_value,
        "message",
        "type.googleapis.com/google.firebase.fcm.v1.Message",
    )?;
    check_known(message, "message", MESSAGE_FIELDS)?;

    // Exactly one target, and the fake supports only `token`.
    let mut targets = Vec::new();
    for target in ["token", "topic", "condition"] {
        if let Some(v) = string(message, &[target], &format!("message.{target}"))? {
            targets.push((target, v));
        }
    }
    let token = match targets.as_slice() {
        [] => {
            return Err(Rejection::Fcm {
                field: Some("message".to_owned()),
                message: "Recipient of the message is not set.".to_owned(),
            });
        }
        [("token", token)] => *token,
        [(target, _)] => {
            return Err(Rejection::Fcm {
                field: Some(format!("message.{target}")),
                message: format!(
                    "The fake FCM supports only registration-token targets (message.token), \
                     not message.{target}."
                ),
            });
        }
        [_, (second, _), ..] => {
            return Err(Rejection::Json {
                field: Some("message".to_owned()),
                message: format!(
                    "Invalid value at 'message' (oneof), oneof field 'target' is already set. \
                     Cannot set '{second}'"
                ),
            });
        }
    };
    if token.is_empty() {
        return Err(Rejection::Token);
    }

    string(message, &["name"], "message.name")?;
    if let Some(v) = field(message, &["notification"]) {
        let notification = object(
            v,
            "message.notification",
            "type.googleapis.com/google.firebase.fcm.v1.Notification",
        )?;
        check_known(notification, "message.notification", NOTIFICATION_FIELDS)?;
        for name in NOTIFICATION_FIELDS {
            string(
                notification,
                &[name],
                &format!("message.notification.{name}"),
            )?;
        }
    }
    if let Some(v) = field(message, &["data"]) {
        let data = string_map(v, "message.data")?;
        if let Some(key) = data.keys().find(|k| is_reserved_data_key(k)) {
            return Err(Rejection::Fcm {
                field: Some("message.data".to_owned()),
                message: format!("Invalid data payload key: {key}"),
            });
        }
    }
    if let Some(v) = field(message, &["android"]) {
        validate_android(v)?;
    }
    if let Some(v) = field(message, &["apns"]) {
        validate_apns(v)?;
    }
    if let Some(v) = field(message, &["webpush"]) {
        object(
            v,
            "message.webpush",
            "type.googleapis.com/google.firebase.fcm.v1.WebpushConfig",
        )?;
    }
    if let Some(v) = field(message, &["fcm_options", "fcmOptions"]) {
        object(
            v,
            "message.fcm_options",
            "type.googleapis.com/google.firebase.fcm.v1.FcmOptions",
        )?;
    }

    let size = serde_json::to_vec(message_value).map_or(usize::MAX, |b| b.len());
    if size > MAX_MESSAGE_BYTES {
        return Err(Rejection::Fcm {
            field: Some("message".to_owned()),
            message: format!(
                "Message is too big: {size} bytes, the limit is {MAX_MESSAGE_BYTES} bytes."
            ),
        });
    }

    Ok(SendRequest {
        token: token.to_owned(),
        message: message_value.clone(),
        validate_only,
    })
}

fn validate_android(v: &Value) -> Result<(), Rejection> {
    let android = object(
        v,
        "message.android",
        "type.googleapis.com/google.firebase.fcm.v1.AndroidConfig",
    )?;
    check_known(android, "message.android", ANDROID_FIELDS)?;
    string(
        android,
        &["collapse_key", "collapseKey"],
        "message.android.collapse_key",
    )?;
    string(
        android,
        &["restricted_package_name", "restrictedPackageName"],
        "message.android.restricted_package_name",
    )?;
    match field(android, &["priority"]) {
        None => {}
        Some(Value::String(p))
            if p.eq_ignore_ascii_case("normal") || p.eq_ignore_ascii_case("high") => {}
        Some(Value::Number(n)) if n.as_u64().is_some_and(|n| n <= 2) => {}
        Some(p) => {
            return Err(type_error(
                "message.android.priority",
                "type.googleapis.com/google.firebase.fcm.v1.AndroidMessagePriority",
                p,
            ));
        }
    }
    match field(android, &["ttl"]) {
        None => {}
        Some(Value::String(ttl)) if is_duration(ttl) => {}
        Some(ttl) => {
            return Err(type_error(
                "message.android.ttl",
                "type.googleapis.com/google.protobuf.Duration",
                ttl,
            ));
        }
    }
    if let Some(v) = field(android, &["data"]) {
        string_map(v, "message.android.data")?;
    }
    if let Some(v) = field(android, &["notification"]) {
        object(
            v,
            "message.android.notification",
            "type.googleapis.com/google.firebase.fcm.v1.AndroidNotification",
        )?;
    }
    Ok(())
}

fn validate_apns(v: &Value) -> Result<(), Rejection> {
    let apns = object(
        v,
        "message.apns",
        "type.googleapis.com/google.firebase.fcm.v1.ApnsConfig",
    )?;
    check_known(apns, "message.apns", APNS_FIELDS)?;
    if let Some(v) = field(apns, &["headers"]) {
        string_map(v, "message.apns.headers")?;
    }
    if let Some(v) = field(apns, &["payload"]) {
        object(
            v,
            "message.apns.payload",
            "type.googleapis.com/google.protobuf.Struct",
        )?;
    }
    Ok(())
}

/// A `map<string, string>` field; `message.data[i].value` names a bad value.
fn string_map<'a>(v: &'a Value, path: &str) -> Result<&'a Map<String, Value>, Rejection> {
    let Some(map) = v.as_object() else {
        return Err(type_error(
            path,
            "type.googleapis.com/google.protobuf.Map",
            v,
        ));
    };
    for (i, value) in map.values().enumerate() {
        if !value.is_string() {
            return Err(type_error(
                &format!("{path}[{i}].value"),
                "TYPE_STRING",
                value,
            ));
        }
    }
    Ok(map)
}

fn is_reserved_data_key(key: &str) -> bool {
    RESERVED_DATA_KEYS.contains(&key)
        || RESERVED_DATA_KEY_PREFIXES
            .iter()
            .any(|p| key.starts_with(p))
}

/// A protobuf JSON duration: `"3.5s"`, `"60s"`.
fn is_duration(s: &str) -> bool {
    let Some(number) = s.strip_suffix('s') else {
        return false;
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, "0"));
    !whole.is_empty()
        && whole.bytes().all(|b| b.is_ascii_digit())
        && (1..=9).contains(&fraction.len())
        && fraction.bytes().all(|b| b.is_ascii_digit())
}

// ---------------------------------------------------------------------------
// Helpers

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn random_alphanumeric(len: usize) -> String {
    rand::rng()
        .sample_iter(&Alphanumeric)
        .take(len)
        .map(char::from)
        .collect()
}

fn random_hex(len: usize) -> String {
    let mut rng = rand::rng();
    (0..len)
        .map(|_| char::from(b"0123456789abcdef"[rng.random_range(0..16)]))
        .collect()
}

/// Parses an `application/x-www-form-urlencoded` body; a repeated name is
/// an error.
fn parse_form(body: &[u8]) -> Result<HashMap<String, String>, String> {
    let body = std::str::from_utf8(body).map_err(|_| "The request body is not UTF-8.")?;
    let mut form = HashMap::new();
    for pair in body.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let name = form_decode(name)?;
        let value = form_decode(value)?;
        if form.contains_key(&name) {
            return Err(format!("Duplicate parameter: {name}"));
        }
        form.insert(name, value);
    }
    Ok(form)
}

/// Decodes one form-encoded component (`+` is a space, `%XX` a byte).
fn form_decode(s: &str) -> Result<String, String> {
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
                let byte = bytes
                    .get(i + 1..i + 3)
                    .filter(|h| h.iter().all(u8::is_ascii_hexdigit))
                    .and_then(|h| std::str::from_utf8(h).ok())
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                    .ok_or_else(|| format!("Invalid percent-encoding in {s:?}"))?;
                out.push(byte);
                i += 3;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| format!("Parameter {s:?} does not decode to UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_core::jwt::testkeys::{EC_PRIVATE_PEM, RSA_PRIVATE_PEM, RSA_PUBLIC_PEM};
    use jsonwebtoken::{EncodingKey, Header};

    const EMAIL: &str = "notifier@fake-project.iam.gserviceaccount.com";
    const PROJECT: &str = "fake-project";

    async fn start() -> FakeFcm {
        FakeFcm::start(RSA_PUBLIC_PEM, EMAIL, PROJECT).await
    }

    fn client() -> reqwest::Client {
        reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("reqwest client")
    }

    fn now() -> i64 {
        unix_now()
    }

    fn good_claims(fake: &FakeFcm) -> Value {
        let now = now();
        json!({
            "iss": EMAIL,
            "scope": FCM_SCOPE,
            "aud": fake.token_uri(),
            "iat": now,
            "exp": now + 3600,
        })
    }

    fn sign_rs256(claims: &Value) -> String {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).expect("RSA test key");
        jsonwebtoken::encode(&Header::new(Algorithm::RS256), claims, &key).expect("sign RS256")
    }

    /// Form-encodes everything but unreserved characters.
    fn form_encode(s: &str) -> String {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect()
    }

    fn token_form(grant_type: &str, assertion: &str) -> String {
        format!(
            "grant_type={}&assertion={}",
            form_encode(grant_type),
            form_encode(assertion)
        )
    }

    async fn post_token(fake: &FakeFcm, body: String) -> (u16, Value) {
        let response = client()
            .post(fake.token_uri())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .expect("token request");
        let status = response.status().as_u16();
        (status, response.json().await.expect("token response JSON"))
    }

    async fn access_token(fake: &FakeFcm) -> String {
        let (status, body) = post_token(
            fake,
            token_form(JWT_BEARER_GRANT_TYPE, &sign_rs256(&good_claims(fake))),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        body["access_token"]
            .as_str()
            .expect("access_token is a string")
            .to_owned()
    }

    fn send_url(fake: &FakeFcm, project: &str) -> String {
        format!("{}/v1/projects/{project}/messages:send", fake.endpoint())
    }

    async fn send(fake: &FakeFcm, token: Option<&str>, body: &Value) -> reqwest::Response {
        let mut request = client().post(send_url(fake, PROJECT)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        request.send().await.expect("send request")
    }

    fn message(device_token: &str) -> Value {
        json!({"message": {
            "token": device_token,
            "notification": {"title": "Alice", "body": "hello"},
            "data": {"room": "r1", "seq": "7"},
            "android": {"collapse_key": "r1", "priority": "HIGH", "ttl": "3600s"},
            "apns": {"headers": {"apns-priority": "10"}, "payload": {"aps": {"badge": 1}}},
        }})
    }

    /// Status, `Retry-After` and body of an answer.
    async fn reply(response: reqwest::Response) -> (u16, Option<String>, Value) {
        let status = response.status().as_u16();
        let retry_after = response
            .headers()
            .get("retry-after")
            .map(|v| v.to_str().expect("ASCII Retry-After").to_owned());
        let body = response.json().await.expect("JSON answer");
        (status, retry_after, body)
    }

    fn error_code(body: &Value) -> Option<&str> {
        body["error"]["details"]
            .as_array()?
            .iter()
            .find(|d| d["@type"] == FCM_ERROR_TYPE)?["errorCode"]
            .as_str()
    }

    fn field_violation(body: &Value) -> Option<&str> {
        body["error"]["details"]
            .as_array()?
            .iter()
            .find(|d| d["@type"] == BAD_REQUEST_TYPE)?["fieldViolations"][0]["field"]
            .as_str()
    }

    #[tokio::test]
    async fn correct_assertion_gets_a_token() {
        let fake = start().await;
        let (status, body) = post_token(
            &fake,
            token_form(JWT_BEARER_GRANT_TYPE, &sign_rs256(&good_claims(&fake))),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body["access_token"]
                .as_str()
                .is_some_and(|t| t.starts_with("ya29.fake-") && t.len() > 20),
            "{body}"
        );
        assert_eq!(body["expires_in"], 3600);
        assert_eq!(body["token_type"], "Bearer");
        assert_eq!(fake.token_requests(), 1);

        // Unencoded `:` in the grant type and a scope list also work.
        let mut claims = good_claims(&fake);
        claims["scope"] = json!(format!(
            "https://www.googleapis.com/auth/cloud-platform {FCM_SCOPE}"
        ));
        let body = format!(
            "grant_type={JWT_BEARER_GRANT_TYPE}&assertion={}",
            sign_rs256(&claims)
        );
        let (status, body) = post_token(&fake, body).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(fake.token_requests(), 2);
    }

    #[tokio::test]
    async fn bad_assertions_are_refused() {
        let fake = start().await;
        let now = now();
        let good = good_claims(&fake);
        let with = |name: &str, value: Value| {
            let mut claims = good.clone();
            claims[name] = value;
            sign_rs256(&claims)
        };
        let without = |name: &str| {
            let mut claims = good.clone();
            claims.as_object_mut().expect("claims object").remove(name);
            sign_rs256(&claims)
        };
        // Signed with the EC key as ES256.
        let ec_key = EncodingKey::from_ec_pem(EC_PRIVATE_PEM.as_bytes()).expect("EC test key");
        let es256 =
            jsonwebtoken::encode(&Header::new(Algorithm::ES256), &good, &ec_key).expect("ES256");
        // A valid RS256 signature over other claims.
        let tampered = {
            let token = sign_rs256(&good);
            let other = with("iss", json!("mallory@evil.example"));
            let parts: Vec<&str> = token.split('.').collect();
            let other_parts: Vec<&str> = other.split('.').collect();
            format!("{}.{}.{}", parts[0], other_parts[1], parts[2])
        };
        let timeframe = |iat: i64, exp: i64| {
            let mut claims = good.clone();
            claims["iat"] = json!(iat);
            claims["exp"] = json!(exp);
            sign_rs256(&claims)
        };
        // (what, assertion, part of the error_description)
        let cases = [
            ("ES256 signature", es256, "RS256"),
            ("tampered claims", tampered, "Invalid JWT Signature."),
            ("garbage", "not.a.jwt".to_owned(), "cannot be decoded"),
            (
                "wrong iss",
                with("iss", json!("other@x.iam.gserviceaccount.com")),
                "account not found",
            ),
            (
                "wrong aud",
                with("aud", json!("https://oauth2.googleapis.com/token")),
                "audience",
            ),
            (
                "aud without path",
                with("aud", json!(fake.endpoint())),
                "audience",
            ),
            ("no scope", without("scope"), "scope"),
            (
                "other scope",
                with(
                    "scope",
                    json!("https://www.googleapis.com/auth/cloud-platform"),
                ),
                "scope",
            ),
            ("exp too far", with("exp", json!(now + 3601)), "short-lived"),
            ("expired", timeframe(now - 3000, now - 1), "short-lived"),
            ("exp is now", timeframe(now - 100, now), "short-lived"),
            (
                "iat in the future",
                timeframe(now + 120, now + 1200),
                "short-lived",
            ),
            ("no iat", without("iat"), "short-lived"),
            ("no exp", without("exp"), "short-lived"),
        ];
        let count = cases.len();
        for (what, assertion, why) in cases {
            let (status, body) =
                post_token(&fake, token_form(JWT_BEARER_GRANT_TYPE, &assertion)).await;
            assert_eq!(status, 400, "{what}: {body}");
            assert_eq!(body["error"], "invalid_grant", "{what}: {body}");
            assert!(
                body["error_description"]
                    .as_str()
                    .is_some_and(|d| d.contains(why)),
                "{what}: {body}"
            );
        }
        // Within the allowed clock skew.
        let (status, body) = post_token(
            &fake,
            token_form(JWT_BEARER_GRANT_TYPE, &timeframe(now + 30, now + 3600)),
        )
        .await;
        assert_eq!(status, 200, "{body}");

        let assertion = sign_rs256(&good);
        let (status, body) = post_token(&fake, token_form("client_credentials", &assertion)).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "unsupported_grant_type");
        let (status, body) = post_token(&fake, format!("assertion={assertion}")).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "unsupported_grant_type");
        let (status, body) = post_token(
            &fake,
            token_form(JWT_BEARER_GRANT_TYPE, "").replace("&assertion=", ""),
        )
        .await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_request");
        let (status, body) = post_token(&fake, "grant_type=%ZZ".to_owned()).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "invalid_request");
        // JSON instead of a form.
        let response = client()
            .post(fake.token_uri())
            .json(&json!({"grant_type": JWT_BEARER_GRANT_TYPE, "assertion": assertion}))
            .send()
            .await
            .expect("token request");
        assert_eq!(response.status().as_u16(), 400);

        assert_eq!(fake.token_requests(), count + 6);
    }

    #[tokio::test]
    async fn send_is_accepted_and_recorded() {
        let fake = start().await;
        let token = access_token(&fake).await;
        let body = message("device-a");
        let (status, _, answer) = reply(send(&fake, Some(&token), &body).await).await;
        assert_eq!(status, 200, "{answer}");
        let name = answer["name"].as_str().expect("name");
        assert!(
            name.starts_with("projects/fake-project/messages/"),
            "{name}"
        );

        let (status, _, answer) =
            reply(send(&fake, Some(&token), &message("device-b")).await).await;
        assert_eq!(status, 200, "{answer}");
        // validate_only answers but records nothing.
        let mut dry = message("device-a");
        dry["validate_only"] = json!(true);
        let (status, _, answer) = reply(send(&fake, Some(&token), &dry).await).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(
            answer["name"],
            "projects/fake-project/messages/fake_message_id"
        );

        let sent = fake.sent();
        assert_eq!(sent.len(), 2);
        assert_eq!(sent[0].device_token, "device-a");
        assert_eq!(sent[0].body, body["message"]);
        assert_eq!(sent[1].device_token, "device-b");
        assert!(sent[0].at <= sent[1].at);
        assert_eq!(fake.sent_to("device-a").len(), 1);
        assert_eq!(fake.sent_to("device-c").len(), 0);
        assert_eq!(fake.send_attempts(), 3);
    }

    #[tokio::test]
    async fn send_without_a_valid_token_is_unauthenticated() {
        let fake = start().await;
        let body = message("device-a");
        let expected = json!({"error": {
            "code": 401,
            "message": UNAUTHENTICATED_MESSAGE,
            "status": "UNAUTHENTICATED",
        }});
        for token in [None, Some("ya29.fake-made-up"), Some("")] {
            let (status, _, answer) = reply(send(&fake, token, &body).await).await;
            assert_eq!(status, 401, "{token:?}");
            assert_eq!(answer, expected);
        }
        let response = client()
            .post(send_url(&fake, PROJECT))
            .header("authorization", "Basic Zm9vOmJhcg==")
            .json(&body)
            .send()
            .await
            .expect("send");
        assert_eq!(response.status().as_u16(), 401);
        assert!(fake.sent().is_empty());
        assert_eq!(fake.send_attempts(), 4);
    }

    #[tokio::test]
    async fn wrong_project_is_not_found() {
        let fake = start().await;
        let token = access_token(&fake).await;
        let response = client()
            .post(send_url(&fake, "other-project"))
            .bearer_auth(&token)
            .json(&message("device-a"))
            .send()
            .await
            .expect("send");
        let (status, _, body) = reply(response).await;
        assert_eq!(status, 404);
        assert_eq!(body["error"]["status"], "NOT_FOUND");
        assert_eq!(error_code(&body), None);
        assert!(fake.sent().is_empty());
        assert_eq!(fake.send_attempts(), 1);
    }

    #[tokio::test]
    async fn non_string_data_is_invalid_argument() {
        let fake = start().await;
        let token = access_token(&fake).await;
        let body = json!({"message": {"token": "device-a", "data": {"count": 1}}});
        let (status, _, answer) = reply(send(&fake, Some(&token), &body).await).await;
        assert_eq!(status, 400);
        assert_eq!(answer["error"]["status"], "INVALID_ARGUMENT");
        assert_eq!(
            answer["error"]["message"],
            "Invalid value at 'message.data[0].value' (TYPE_STRING), 1"
        );
        assert_eq!(field_violation(&answer), Some("message.data[0].value"));
        assert!(fake.sent().is_empty());
    }

    #[tokio::test]
    async fn oversize_message_is_invalid_argument() {
        let fake = start().await;
        let token = access_token(&fake).await;
        let body = json!({"message": {"token": "device-a", "data": {"blob": "x".repeat(MAX_MESSAGE_BYTES)}}});
        let (status, _, answer) = reply(send(&fake, Some(&token), &body).await).await;
        assert_eq!(status, 400, "{answer}");
        assert_eq!(answer["error"]["status"], "INVALID_ARGUMENT");
        assert_eq!(error_code(&answer), Some("INVALID_ARGUMENT"));
        assert!(
            answer["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("Message is too big")),
            "{answer}"
        );
        // Just under the limit is fine.
        let mut body = json!({"message": {"token": "device-a", "data": {"blob": ""}}});
        let overhead = serde_json::to_vec(&body["message"]).expect("JSON").len();
        body["message"]["data"]["blob"] = json!("x".repeat(MAX_MESSAGE_BYTES - overhead));
        let (status, _, answer) = reply(send(&fake, Some(&token), &body).await).await;
        assert_eq!(status, 200, "{answer}");
    }

    #[tokio::test]
    async fn malformed_messages_are_refused() {
        let fake = start().await;
        let token = access_token(&fake).await;
        // (body, field named in the BadRequest detail, FCM errorCode)
        let cases = [
            (
                json!({"message": {"topic": "news"}}),
                Some("message.topic"),
                Some("INVALID_ARGUMENT"),
            ),
            (
                json!({"message": {"condition": "'a' in topics"}}),
                Some("message.condition"),
                Some("INVALID_ARGUMENT"),
            ),
            (
                json!({"message": {"token": "d", "topic": "news"}}),
                Some("message"),
                None,
            ),
            (
                json!({"message": {"data": {"a": "b"}}}),
                Some("message"),
                Some("INVALID_ARGUMENT"),
            ),
            (
                json!({"message": {"token": 5}}),
                Some("message.token"),
                None,
            ),
            (
                json!({"message": {"token": "d", "foo": 1}}),
                Some("message.foo"),
                None,
            ),
            (json!({"message": {"token": "d"}, "bar": 1}), None, None),
            (json!({"message": "d"}), Some("message"), None),
            (json!({}), Some("message"), Some("INVALID_ARGUMENT")),
            (
                json!({"message": {"token": "d", "notification": "hi"}}),
                Some("message.notification"),
                None,
            ),
            (
                json!({"message": {"token": "d", "notification": {"title": 1}}}),
                Some("message.notification.title"),
                None,
            ),
            (
                json!({"message": {"token": "d", "notification": {"subtitle": "x"}}}),
                Some("message.notification.subtitle"),
                None,
            ),
            (
                json!({"message": {"token": "d", "data": ["a"]}}),
                Some("message.data"),
                None,
            ),
            (
                json!({"message": {"token": "d", "data": {"a": "b", "c": {"d": "e"}}}}),
                Some("message.data[1].value"),
                None,
            ),
            (
                json!({"message": {"token": "d", "data": {"from": "alice"}}}),
                Some("message.data"),
                Some("INVALID_ARGUMENT"),
            ),
            (
                json!({"message": {"token": "d", "data": {"google.x": "y"}}}),
                Some("message.data"),
                Some("INVALID_ARGUMENT"),
            ),
            (
                json!({"message": {"token": "d", "android": {"collapse_key": 3}}}),
                Some("message.android.collapse_key"),
                None,
            ),
            (
                json!({"message": {"token": "d", "android": {"ttl": 3600}}}),
                Some("message.android.ttl"),
                None,
            ),
            (
                json!({"message": {"token": "d", "android": {"priority": "urgent"}}}),
                Some("message.android.priority"),
                None,
            ),
            (
                json!({"message": {"token": "d", "android": {"data": {"n": 2}}}}),
                Some("message.android.data[0].value"),
                None,
            ),
            (
                json!({"message": {"token": "d", "android": {"colapse_key": "x"}}}),
                Some("message.android.colapse_key"),
                None,
            ),
            (
                json!({"message": {"token": "d", "apns": {"headers": {"apns-priority": 10}}}}),
                Some("message.apns.headers[0].value"),
                None,
            ),
            (
                json!({"message": {"token": "d", "apns": "x"}}),
                Some("message.apns"),
                None,
            ),
            (
                json!({"message": {"token": "d"}, "validate_only": "yes"}),
                Some("validate_only"),
                None,
            ),
        ];
        for (body, field, code) in &cases {
            let (status, _, answer) = reply(send(&fake, Some(&token), body).await).await;
            assert_eq!(status, 400, "{body}: {answer}");
            assert_eq!(
                answer["error"]["status"], "INVALID_ARGUMENT",
                "{body}: {answer}"
            );
            assert_eq!(field_violation(&answer), *field, "{body}: {answer}");
            assert_eq!(error_code(&answer), *code, "{body}: {answer}");
        }

        // An empty token is an invalid registration token.
        let (status, _, answer) =
            reply(send(&fake, Some(&token), &json!({"message": {"token": ""}})).await).await;
        assert_eq!(status, 400);
        assert_eq!(answer["error"]["message"], INVALID_TOKEN_MESSAGE);
        assert_eq!(error_code(&answer), Some("INVALID_ARGUMENT"));

        // Not JSON.
        let response = client()
            .post(send_url(&fake, PROJECT))
            .bearer_auth(&token)
            .header("content-type", "application/json")
            .body("{\"message\":")
            .send()
            .await
            .expect("send");
        let (status, _, answer) = reply(response).await;
        assert_eq!(status, 400);
        assert_eq!(answer["error"]["status"], "INVALID_ARGUMENT");

        // Nulls are unset fields, camelCase names are accepted.
        let body = json!({"message": {
            "token": "d", "topic": null, "notification": {"title": null, "body": "b"},
            "android": {"collapseKey": "k", "directBootOk": true}, "fcmOptions": {"analytics_label": "x"},
        }, "validateOnly": false});
        let (status, _, answer) = reply(send(&fake, Some(&token), &body).await).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(fake.sent().len(), 1);
        assert_eq!(fake.send_attempts(), cases.len() + 3);
    }

    #[tokio::test]
    async fn configured_failures_answer_like_fcm() {
        let fake = start().await;
        let token = access_token(&fake).await;
        // (response, HTTP status, status, errorCode, Retry-After)
        let cases = [
            (
                FakeResponse::Unregistered,
                404,
                "NOT_FOUND",
                Some("UNREGISTERED"),
                None,
            ),
            (
                FakeResponse::InvalidToken,
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                None,
            ),
            (
                FakeResponse::InvalidArgument,
                400,
                "INVALID_ARGUMENT",
                Some("INVALID_ARGUMENT"),
                None,
            ),
            (
                FakeResponse::SenderIdMismatch,
                403,
                "PERMISSION_DENIED",
                Some("SENDER_ID_MISMATCH"),
                None,
            ),
            (
                FakeResponse::ThirdPartyAuthError,
                401,
                "UNAUTHENTICATED",
                Some("THIRD_PARTY_AUTH_ERROR"),
                None,
            ),
            (
                FakeResponse::QuotaExceeded {
                    retry_after: Some(7),
                },
                429,
                "RESOURCE_EXHAUSTED",
                Some("QUOTA_EXCEEDED"),
                Some("7"),
            ),
            (
                FakeResponse::QuotaExceeded { retry_after: None },
                429,
                "RESOURCE_EXHAUSTED",
                Some("QUOTA_EXCEEDED"),
                None,
            ),
            (
                FakeResponse::Internal,
                500,
                "INTERNAL",
                Some("INTERNAL"),
                None,
            ),
            (
                FakeResponse::Unavailable {
                    retry_after: Some(3),
                },
                503,
                "UNAVAILABLE",
                Some("UNAVAILABLE"),
                Some("3"),
            ),
            (
                FakeResponse::Unavailable { retry_after: None },
                503,
                "UNAVAILABLE",
                Some("UNAVAILABLE"),
                None,
            ),
        ];
        let check =
            |what: &str,
             (status, retry_after, body): &(u16, Option<String>, Value),
             expected: &(FakeResponse, u16, &str, Option<&str>, Option<&str>)| {
                let (r, code, status_name, error_code_expected, retry_expected) = expected;
                assert_eq!(*status, *code, "{what} {r:?}: {body}");
                assert_eq!(body["error"]["code"], *code, "{what} {r:?}: {body}");
                assert_eq!(
                    body["error"]["status"], *status_name,
                    "{what} {r:?}: {body}"
                );
                assert_eq!(
                    error_code(body),
                    *error_code_expected,
                    "{what} {r:?}: {body}"
                );
                assert_eq!(retry_after.as_deref(), *retry_expected, "{what} {r:?}");
            };
        for case in &cases {
            let r = &case.0;
            fake.fail_token("device-bad", r.clone());
            let got = reply(send(&fake, Some(&token), &message("device-bad")).await).await;
            check("fail_token", &got, case);
            let got = reply(send(&fake, Some(&token), &message("device-bad")).await).await;
            check("fail_token again", &got, case);
            let (status, _, _) =
                reply(send(&fake, Some(&token), &message("device-ok")).await).await;
            assert_eq!(status, 200, "fail_token {r:?} touches other tokens");
            fake.clear_failures();

            fake.fail_next(1, r.clone());
            let got = reply(send(&fake, Some(&token), &message("device-ok")).await).await;
            check("fail_next", &got, case);
            let (status, _, _) =
                reply(send(&fake, Some(&token), &message("device-ok")).await).await;
            assert_eq!(status, 200, "fail_next(1, {r:?}) lasts one send");
        }
        assert!(fake.sent_to("device-bad").is_empty());
        assert_eq!(fake.sent_to("device-ok").len(), 2 * cases.len());

        // The token/payload distinction.
        fake.fail_next(1, FakeResponse::InvalidToken);
        let (_, _, body) = reply(send(&fake, Some(&token), &message("d")).await).await;
        assert!(
            body["error"]["message"]
                .as_str()
                .is_some_and(|m| m.contains("registration token"))
        );
        fake.fail_next(1, FakeResponse::InvalidArgument);
        let (_, _, body) = reply(send(&fake, Some(&token), &message("d")).await).await;
        assert!(!body.to_string().contains("registration token"), "{body}");
        assert_eq!(field_violation(&body), Some("message.foo"));

        // Queued fail_next; fail_token comes first and does not use them up.
        fake.fail_next(2, FakeResponse::Internal);
        fake.fail_next(1, FakeResponse::Unregistered);
        fake.fail_token("device-bad", FakeResponse::SenderIdMismatch);
        let mut statuses = Vec::new();
        for device in [
            "device-bad",
            "device-ok",
            "device-ok",
            "device-ok",
            "device-ok",
        ] {
            statuses.push(
                reply(send(&fake, Some(&token), &message(device)).await)
                    .await
                    .0,
            );
        }
        assert_eq!(statuses, [403, 500, 500, 404, 200]);
        fake.fail_next(3, FakeResponse::Internal);
        fake.clear_failures();
        let (status, _, _) = reply(send(&fake, Some(&token), &message("device-bad")).await).await;
        assert_eq!(status, 200);
        // Unauthenticated sends do not use up fail_next.
        fake.fail_next(1, FakeResponse::Internal);
        let (status, _, _) = reply(send(&fake, None, &message("device-ok")).await).await;
        assert_eq!(status, 401);
        let (status, _, _) = reply(send(&fake, Some(&token), &message("device-ok")).await).await;
        assert_eq!(status, 500);
    }

    #[tokio::test]
    async fn revoked_and_expired_tokens_are_refused() {
        let fake = start().await;
        let token = access_token(&fake).await;
        let (status, _, _) = reply(send(&fake, Some(&token), &message("d")).await).await;
        assert_eq!(status, 200);
        fake.revoke_access_tokens();
        let (status, _, body) = reply(send(&fake, Some(&token), &message("d")).await).await;
        assert_eq!(status, 401);
        assert_eq!(body["error"]["status"], "UNAUTHENTICATED");
        assert_eq!(error_code(&body), None);
        let fresh = access_token(&fake).await;
        assert_ne!(fresh, token);
        let (status, _, _) = reply(send(&fake, Some(&fresh), &message("d")).await).await;
        assert_eq!(status, 200);

        fake.set_access_token_ttl(0);
        let (status, body) = post_token(
            &fake,
            token_form(JWT_BEARER_GRANT_TYPE, &sign_rs256(&good_claims(&fake))),
        )
        .await;
        assert_eq!(status, 200);
        assert_eq!(body["expires_in"], 0);
        let expired = body["access_token"].as_str().expect("access_token");
        let (status, _, _) = reply(send(&fake, Some(expired), &message("d")).await).await;
        assert_eq!(status, 401);

        fake.set_access_token_ttl(1);
        let short = access_token(&fake).await;
        let (status, _, _) = reply(send(&fake, Some(&short), &message("d")).await).await;
        assert_eq!(status, 200);
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let (status, _, _) = reply(send(&fake, Some(&short), &message("d")).await).await;
        assert_eq!(status, 401);
        // Earlier tokens keep their own expiry.
        let (status, _, _) = reply(send(&fake, Some(&fresh), &message("d")).await).await;
        assert_eq!(status, 200);
        assert_eq!(fake.sent().len(), 4);
    }

    #[tokio::test]
    async fn hang_does_not_answer() {
        let fake = start().await;
        let token = access_token(&fake).await;
        fake.fail_next(1, FakeResponse::Hang);
        let impatient = reqwest::Client::builder()
            .no_proxy()
            .timeout(Duration::from_millis(500))
            .build()
            .expect("reqwest client");
        let started = Instant::now();
        let error = impatient
            .post(send_url(&fake, PROJECT))
            .bearer_auth(&token)
            .json(&message("d"))
            .send()
            .await
            .expect_err("a hanging send must time out");
        assert!(error.is_timeout(), "{error}");
        assert!(started.elapsed() >= Duration::from_millis(500));
        assert_eq!(fake.send_attempts(), 1);
        // The next send is answered.
        let (status, _, _) = reply(send(&fake, Some(&token), &message("d")).await).await;
        assert_eq!(status, 200);
    }

    #[tokio::test]
    async fn dropping_the_fake_stops_the_server() {
        let fake = start().await;
        let token = access_token(&fake).await;
        let url = send_url(&fake, PROJECT);
        let pooled = client();
        let response = pooled
            .post(&url)
            .bearer_auth(&token)
            .json(&message("d"))
            .send()
            .await
            .expect("send");
        assert_eq!(response.status().as_u16(), 200);
        // A request left hanging ends when the fake is dropped.
        fake.fail_next(1, FakeResponse::Hang);
        let hanging = tokio::spawn({
            let (client, url, token) = (client(), url.clone(), token.clone());
            async move {
                client
                    .post(&url)
                    .bearer_auth(&token)
                    .json(&message("d"))
                    .send()
                    .await
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        drop(fake);
        let hung = tokio::time::timeout(Duration::from_secs(5), hanging)
            .await
            .expect("the hanging request ends")
            .expect("task");
        assert!(hung.map_or(true, |r| r.status().as_u16() != 200));
        tokio::time::sleep(Duration::from_millis(100)).await;
        // Neither the kept-alive connection nor a new one is served.
        for c in [pooled, client()] {
            let result = c
                .post(&url)
                .bearer_auth(&token)
                .json(&message("d"))
                .send()
                .await;
            assert!(result.is_err(), "{result:?}");
        }
    }

    #[tokio::test]
    async fn service_account_json_matches_the_settings() {
        let fake = start().await;
        let file: Value =
            serde_json::from_str(&fake.service_account_json(RSA_PRIVATE_PEM)).expect("JSON");
        assert_eq!(file["type"], "service_account");
        assert_eq!(file["project_id"], PROJECT);
        assert_eq!(file["private_key"], RSA_PRIVATE_PEM);
        assert_eq!(file["client_email"], EMAIL);
        assert_eq!(file["token_uri"], fake.token_uri());
        assert!(
            file["private_key_id"]
                .as_str()
                .is_some_and(|id| id.len() == 40)
        );
        assert_eq!(fake.token_uri(), format!("{}/token", fake.endpoint()));
        assert!(fake.endpoint().starts_with("http://127.0.0.1:"));
    }
}
