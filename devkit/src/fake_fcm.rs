//! A wiremock double of FCM HTTP v1 (`projects.messages.send`) and Google's
//! OAuth2 token endpoint (service-account JWT bearer grant), on real HTTP.
//!
//! `POST /token` with a JWT-bearer grant the service account signed gets an
//! access token. `POST /v1/projects/{project_id}/messages:send` with a live
//! one and a JSON `message` with a `token` gets the configured failures, else
//! is accepted and recorded; otherwise 401, 404 or 400, in Google's shapes
//! (FCM's errors with an `FcmError` `errorCode`). Our message's shape is
//! unit-tested in `notifier_worker::payload`.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::{Value, json};
use wiremock::matchers::{any, body_partial_json, header, method, path};
use wiremock::{Mock, MockBuilder, MockServer, Request, ResponseTemplate};

use crate::google_api::{MockSwitch, bad_request_detail, google_error, json_object, start_server};

pub const FCM_SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
pub const JWT_BEARER_GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";
const MAX_ASSERTION_LIFETIME_SECS: i64 = 3600;
const CLOCK_SKEW_SECS: i64 = 60;
/// How long [`FakeResponse::Hang`] keeps a request waiting.
const HANG_FOR: Duration = Duration::from_secs(3600);

const NOT_FOUND_MESSAGE: &str = "Requested entity was not found.";
const THIRD_PARTY_MESSAGE: &str = "Auth error from APNS or Web Push Service";
const QUOTA_MESSAGE: &str = "Quota exceeded for quota metric 'Send requests' and limit \
     'Send requests per minute' of service 'fcm.googleapis.com'.";
const UNAVAILABLE_MESSAGE: &str = "The service is currently unavailable.";
const UNAUTHENTICATED_MESSAGE: &str = "Request had invalid authentication credentials. \
     Expected OAuth 2 access token, login cookie or other valid authentication credential.";
const INVALID_TOKEN_MESSAGE: &str = "The registration token is not a valid FCM registration token";
const BAD_TIMEFRAME_MESSAGE: &str = "Invalid JWT: Token must be a short-lived token (60 minutes) \
     and in a reasonable timeframe. Check your iat and exp values in the JWT claim.";

/// Mock priorities (lower wins).
const TOKEN_FAILURE: u8 = 1;
const NEXT_FAILURE: u8 = 2;
const ACCEPT: u8 = 5;
const UNMATCHED: u8 = 255;

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

/// A canned answer to a `messages:send` request: FCM's error of that name
/// (status, and `FcmError` `errorCode`), with `Retry-After` when `Some`.
#[derive(Clone, Debug)]
pub enum FakeResponse {
    Unregistered,
    /// 400 naming the registration token.
    InvalidToken,
    /// 400 about the payload (an unknown `message.foo`), not the token.
    InvalidArgument,
    SenderIdMismatch,
    ThirdPartyAuthError,
    QuotaExceeded {
        retry_after: Option<u64>,
    },
    Internal,
    Unavailable {
        retry_after: Option<u64>,
    },
    /// A 503 only after an hour (the client gives up first).
    Hang,
}

/// The running fake. The server stops when this is dropped.
pub struct FakeFcm {
    server: MockServer,
    shared: Arc<Shared>,
}

struct Shared {
    project_id: String,
    send_path: String,
    client_email: String,
    token_uri: String,
    key: DecodingKey,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    sent: Vec<SentMessage>,
    send_attempts: usize,
    token_requests: usize,
    /// Issued access tokens and their expiry (`None`: never, the TTL overflowed).
    access_tokens: HashMap<String, Option<Instant>>,
    ttl_secs: u64,
    /// When the latest access token was issued.
    last_issued: Option<Instant>,
    /// How long an accepted send waits before its 200.
    accept_delay: Duration,
    /// The mounted failures; dropping a switch unmounts its mock.
    fail_tokens: HashMap<String, MockSwitch>,
    fail_next: Vec<MockSwitch>,
}

/// The claims jsonwebtoken does not check for us.
#[derive(Deserialize)]
struct Assertion {
    scope: String,
    iat: i64,
    exp: i64,
}

impl FakeFcm {
    /// Starts the fake on `127.0.0.1:0`. `service_account_public_pem`: the
    /// RSA public key matching the service account's private key.
    pub async fn start(
        service_account_public_pem: &str,
        client_email: &str,
        project_id: &str,
    ) -> FakeFcm {
        let key = DecodingKey::from_rsa_pem(service_account_public_pem.as_bytes())
            .expect("FakeFcm::start: service_account_public_pem must be an RSA public key PEM");
        let server = start_server().await;
        let shared = Arc::new(Shared {
            project_id: project_id.to_owned(),
            send_path: format!("/v1/projects/{project_id}/messages:send"),
            client_email: client_email.to_owned(),
            token_uri: format!("{}/token", server.uri()),
            key,
            state: Mutex::new(State {
                ttl_secs: 3600,
                ..State::default()
            }),
        });
        let s = Arc::clone(&shared);
        Mock::given(method("POST"))
            .and(path("/token"))
            .and(header("content-type", "application/x-www-form-urlencoded"))
            .respond_with(move |r: &Request| s.grant(r))
            .mount(&server)
            .await;
        let s = Arc::clone(&shared);
        send_request(&shared)
            .respond_with(move |r: &Request| s.accept(r))
            .with_priority(ACCEPT)
            .mount(&server)
            .await;
        let s = Arc::clone(&shared);
        Mock::given(any())
            .respond_with(move |r: &Request| s.refuse(r))
            .with_priority(UNMATCHED)
            .mount(&server)
            .await;
        FakeFcm { server, shared }
    }

    /// `http://127.0.0.1:PORT`; messages:send is
    /// `POST {endpoint}/v1/projects/{project_id}/messages:send`.
    pub fn endpoint(&self) -> String {
        self.server.uri()
    }

    /// `http://127.0.0.1:PORT/token`.
    pub fn token_uri(&self) -> String {
        self.shared.token_uri.clone()
    }

    /// A service-account JSON file's contents for these settings, with
    /// `private_key_pem` as the private key and [`Self::token_uri`].
    pub fn service_account_json(&self, private_key_pem: &str) -> String {
        let file = json!({
            "type": "service_account",
            "project_id": self.shared.project_id,
            "private_key_id": format!("{:040x}", rand::random::<u128>()),
            "private_key": private_key_pem,
            "client_email": self.shared.client_email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": self.shared.token_uri,
            "universe_domain": "googleapis.com",
        });
        serde_json::to_string_pretty(&file).expect("a JSON value serializes")
    }

    /// Accepted (200) sends, in order.
    pub fn sent(&self) -> Vec<SentMessage> {
        self.shared.state().sent.clone()
    }

    /// Accepted sends to `device_token`, in order.
    pub fn sent_to(&self, device_token: &str) -> Vec<SentMessage> {
        let state = self.shared.state();
        let to_device = state.sent.iter().filter(|m| m.device_token == device_token);
        to_device.cloned().collect()
    }

    /// Every messages:send request, whatever the answer.
    pub fn send_attempts(&self) -> usize {
        self.shared.state().send_attempts
    }

    /// Every token request, whatever the answer.
    pub fn token_requests(&self) -> usize {
        self.shared.state().token_requests
    }

    /// The next `n` authenticated, well-formed sends (any device token) get
    /// `r`. Calls queue up: after `fail_next(2, a); fail_next(1, b)` the
    /// answers are a, a, b. A send to a [`Self::fail_token`] token does not
    /// use one up.
    pub async fn fail_next(&self, n: usize, r: FakeResponse) {
        if n == 0 {
            return;
        }
        let (switch, on) = MockSwitch::new();
        let mock = send_request(&self.shared)
            .and(on)
            .respond_with(self.shared.failing(r))
            .up_to_n_times(u64::try_from(n).unwrap_or(u64::MAX))
            .with_priority(NEXT_FAILURE);
        self.server.register(mock).await;
        self.shared.state().fail_next.push(switch);
    }

    /// Every authenticated, well-formed send to `device_token` gets `r`,
    /// until [`Self::clear_failures`]. Replaces an earlier setting for it.
    pub async fn fail_token(&self, device_token: &str, r: FakeResponse) {
        let to_device = json!({"message": {"token": device_token}});
        let (switch, on) = MockSwitch::new();
        let mock = send_request(&self.shared)
            .and(body_partial_json(to_device))
            .and(on)
            .respond_with(self.shared.failing(r))
            .with_priority(TOKEN_FAILURE);
        self.server.register(mock).await;
        let mut state = self.shared.state();
        state.fail_tokens.insert(device_token.to_owned(), switch);
    }

    /// Forgets every [`Self::fail_next`] and [`Self::fail_token`] setting.
    pub fn clear_failures(&self) {
        let mut state = self.shared.state();
        state.fail_tokens.clear();
        state.fail_next.clear();
    }

    /// Every access token issued so far becomes invalid: sends with them get
    /// 401 `UNAUTHENTICATED`. Tokens issued later are valid.
    pub fn revoke_access_tokens(&self) {
        self.shared.state().access_tokens.clear();
    }

    /// How long ago the latest access token was issued (`None`: none yet).
    pub fn latest_token_age(&self) -> Option<Duration> {
        self.shared.state().last_issued.map(|t| t.elapsed())
    }

    /// Accepted sends are recorded at once but answered (200) only after
    /// `d`, so that a test can act while a push is in flight.
    pub fn set_accept_delay(&self, d: Duration) {
        self.shared.state().accept_delay = d;
    }

    /// `expires_in` of tokens issued from now on (default 3600). A token past
    /// its expiry is refused like a revoked one.
    pub fn set_access_token_ttl(&self, secs: u64) {
        self.shared.state().ttl_secs = secs;
    }
}

/// An authenticated, well-formed send to this fake's project.
fn send_request(shared: &Arc<Shared>) -> MockBuilder {
    let s = Arc::clone(shared);
    Mock::given(method("POST"))
        .and(path(shared.send_path.as_str()))
        .and(move |r: &Request| s.authorized(r))
        .and(|r: &Request| message(r).is_some())
}

/// `message` and its non-empty `message.token`.
fn message(r: &Request) -> Option<(String, Value)> {
    let mut body = json_object(r)?;
    let message = body.get_mut("message")?.take();
    let token = message.get("token")?.as_str().filter(|t| !t.is_empty())?;
    Some((token.to_owned(), message))
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the request carries a live access token this fake issued.
    fn authorized(&self, r: &Request) -> bool {
        let value = r.headers.get("authorization").and_then(|v| v.to_str().ok());
        let token = value.and_then(|v| v.strip_prefix("Bearer ")).unwrap_or("");
        let expiry = self.state().access_tokens.get(token).copied();
        expiry.is_some_and(|e| e.is_none_or(|e| Instant::now() < e))
    }

    /// Records the send and answers it as FCM does.
    fn accept(&self, r: &Request) -> ResponseTemplate {
        let Some((device_token, body)) = message(r) else {
            return self.refuse(r);
        };
        let mut state = self.state();
        state.send_attempts += 1;
        let at = Instant::now();
        state.sent.push(SentMessage {
            device_token,
            body,
            at,
        });
        let id: u64 = rand::random();
        let name = format!("projects/{}/messages/0:{id:016x}", self.project_id);
        let delay = state.accept_delay;
        ResponseTemplate::new(200)
            .set_body_json(json!({ "name": name }))
            .set_delay(delay)
    }

    /// A responder that counts the send and answers `r`.
    fn failing(self: &Arc<Self>, r: FakeResponse) -> impl wiremock::Respond + 'static {
        let shared = Arc::clone(self);
        move |_: &Request| {
            shared.state().send_attempts += 1;
            r.template()
        }
    }

    /// A request no other mock took: why, in Google's order.
    fn refuse(&self, r: &Request) -> ResponseTemplate {
        let path = r.url.path();
        let is_send = path.starts_with("/v1/projects/") && path.ends_with("/messages:send");
        if r.method != "POST" || !is_send {
            return google_error(404, NOT_FOUND_MESSAGE, vec![]);
        }
        self.state().send_attempts += 1;
        if !self.authorized(r) {
            return google_error(401, UNAUTHENTICATED_MESSAGE, vec![]);
        }
        if path != self.send_path {
            return google_error(404, NOT_FOUND_MESSAGE, vec![]);
        }
        let message = "Invalid JSON payload received. Expected a message with a token.";
        google_error(400, message, vec![bad_request_detail(None, message)])
    }

    /// The token endpoint.
    fn grant(&self, r: &Request) -> ResponseTemplate {
        self.state().token_requests += 1;
        if let Err((error, description)) = self.check_grant(r) {
            let body = json!({"error": error, "error_description": description});
            return ResponseTemplate::new(400).set_body_json(body);
        }
        let token = format!("ya29.fake-{:032x}", rand::random::<u128>());
        let mut state = self.state();
        let ttl = state.ttl_secs;
        let expiry = Instant::now().checked_add(Duration::from_secs(ttl));
        state.access_tokens.insert(token.clone(), expiry);
        state.last_issued = Some(Instant::now());
        ResponseTemplate::new(200).set_body_json(json!({
            "access_token": token,
            "expires_in": ttl,
            "token_type": "Bearer",
        }))
    }

    /// `Err` is the OAuth2 `error` and `error_description`.
    fn check_grant(&self, r: &Request) -> Result<(), (&'static str, String)> {
        let form: HashMap<_, _> = url::form_urlencoded::parse(&r.body).collect();
        let grant_type = form.get("grant_type").map_or("", |g| g);
        if grant_type != JWT_BEARER_GRANT_TYPE {
            let why = format!("Invalid grant_type: {grant_type}");
            return Err(("unsupported_grant_type", why));
        }
        let assertion = form.get("assertion").map_or("", |a| a);
        self.check_assertion(assertion)
            .map_err(|why| ("invalid_grant", why))
    }

    /// RS256 with the service account's key, `iss`, `aud` = the token URI,
    /// the FCM scope, and a short life around now.
    fn check_assertion(&self, assertion: &str) -> Result<(), String> {
        let mut validation = Validation::new(Algorithm::RS256);
        validation.set_issuer(&[&self.client_email]);
        validation.set_audience(&[&self.token_uri]);
        validation.set_required_spec_claims(&["iss", "aud", "exp"]);
        validation.leeway = CLOCK_SKEW_SECS.unsigned_abs();
        let claims = jsonwebtoken::decode::<Assertion>(assertion, &self.key, &validation)
            .map_err(|e| format!("Invalid JWT: {e}"))?
            .claims;
        if !claims.scope.split_whitespace().any(|s| s == FCM_SCOPE) {
            return Err(format!("Invalid OAuth scope: it must include {FCM_SCOPE}."));
        }
        let now = i64::try_from(chat_core::clock::now_secs()).unwrap_or(i64::MAX);
        let lifetime = claims.exp.saturating_sub(claims.iat);
        if claims.iat > now + CLOCK_SKEW_SECS || lifetime > MAX_ASSERTION_LIFETIME_SECS {
            return Err(BAD_TIMEFRAME_MESSAGE.to_owned());
        }
        Ok(())
    }
}

impl FakeResponse {
    fn template(&self) -> ResponseTemplate {
        let (code, message, error_code, retry_after) = match *self {
            Self::Unregistered => (404, NOT_FOUND_MESSAGE, "UNREGISTERED", None),
            Self::InvalidToken => (400, INVALID_TOKEN_MESSAGE, "INVALID_ARGUMENT", None),
            Self::InvalidArgument => {
                let message = "Invalid JSON payload received. \
                               Unknown name \"foo\" at 'message': Cannot find field.";
                let field = bad_request_detail(Some("message.foo"), message);
                return google_error(400, message, vec![fcm_detail("INVALID_ARGUMENT"), field]);
            }
            Self::SenderIdMismatch => (403, "SenderId mismatch", "SENDER_ID_MISMATCH", None),
            Self::ThirdPartyAuthError => (401, THIRD_PARTY_MESSAGE, "THIRD_PARTY_AUTH_ERROR", None),
            Self::QuotaExceeded { retry_after } => {
                (429, QUOTA_MESSAGE, "QUOTA_EXCEEDED", retry_after)
            }
            Self::Internal => (500, "Internal error encountered.", "INTERNAL", None),
            Self::Unavailable { retry_after } => {
                (503, UNAVAILABLE_MESSAGE, "UNAVAILABLE", retry_after)
            }
            Self::Hang => (503, UNAVAILABLE_MESSAGE, "UNAVAILABLE", None),
        };
        let mut template = google_error(code, message, vec![fcm_detail(error_code)]);
        if let Some(secs) = retry_after {
            template = template.insert_header("retry-after", secs.to_string().as_str());
        }
        match self {
            Self::Hang => template.set_delay(HANG_FOR),
            _ => template,
        }
    }
}

fn fcm_detail(error_code: &str) -> Value {
    json!({"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": error_code})
}

#[cfg(test)]
mod tests {
    use super::*;
    use chat_core::jwt::testkeys::{RSA_PRIVATE_PEM, RSA_PUBLIC_PEM};
    use jsonwebtoken::{EncodingKey, Header};

    fn sign(claims: &Value, algorithm: Algorithm, key: &EncodingKey) -> String {
        jsonwebtoken::encode(&Header::new(algorithm), claims, key).expect("sign")
    }

    async fn status(request: reqwest::RequestBuilder) -> u16 {
        request.send().await.expect("request").status().as_u16()
    }

    #[tokio::test]
    async fn only_a_good_assertion_gets_a_token_and_only_a_live_token_sends() {
        let fake = FakeFcm::start(RSA_PUBLIC_PEM, "sa@p.iam", "p").await;
        let http = reqwest::Client::new();
        let grant = |assertion: String| {
            let form = [
                ("grant_type", JWT_BEARER_GRANT_TYPE.to_owned()),
                ("assertion", assertion),
            ];
            status(http.post(fake.token_uri()).form(&form))
        };
        let now = chat_core::clock::now_secs();
        let rsa = EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).expect("test key");
        let sign_rs256 = |claims: &Value| sign(claims, Algorithm::RS256, &rsa);
        let good = json!({"iss": "sa@p.iam", "scope": FCM_SCOPE, "aud": fake.token_uri(),
            "iat": now, "exp": now + 3600});
        let bad = [
            ("iss", json!("other@p.iam")),
            ("aud", json!("https://oauth2.googleapis.com/token")),
            ("scope", json!("openid")),
            ("iat", json!(now + 600)),
            ("exp", json!(now - 600)),
            ("exp", json!(now + 7200)),
        ];
        for (claim, value) in bad {
            let mut claims = good.clone();
            claims[claim] = value;
            assert_eq!(grant(sign_rs256(&claims)).await, 400, "{claim}");
        }
        // HS256 keyed with the public key: the classic algorithm confusion.
        let confused = EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes());
        assert_eq!(grant(sign(&good, Algorithm::HS256, &confused)).await, 400);
        assert_eq!(grant(sign_rs256(&good)).await, 200);
        assert_eq!(fake.token_requests(), 8);
        let send = format!("{}/v1/projects/p/messages:send", fake.endpoint());
        let message = json!({"message": {"token": "device"}});
        assert_eq!(status(http.post(&send).json(&message)).await, 401);
        let forged = http.post(&send).bearer_auth("ya29.forged").json(&message);
        assert_eq!(status(forged).await, 401);
        assert_eq!((fake.send_attempts(), fake.sent().len()), (2, 0));
    }
}
