//! Authentication on `GET /v1/ws`: bad tokens are refused with close 4001
//! and leave no trace; good ones (HS256 and RS256) get `ready`.

use chat_core::jwt::testkeys::{RSA_PRIVATE_PEM, RSA_PUBLIC_PEM};
use e2e::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::time::Duration;
use tokio::time::Instant;

const RSA_PUBLIC_PEM_PATH: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../core/tests/fixtures/jwt/rsa_public.pem"
);

const B64URL: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
const B64STD: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Base64 with the given alphabet, padded with `=` when `pad`.
fn b64(bytes: &[u8], alphabet: &[u8; 64], pad: bool) -> String {
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk.len();
        let v = (u32::from(chunk[0]) << 16)
            | (u32::from(*chunk.get(1).unwrap_or(&0)) << 8)
            | u32::from(*chunk.get(2).unwrap_or(&0));
        for i in 0..4 {
            if i <= n {
                out.push(char::from(alphabet[((v >> (18 - 6 * i)) & 63) as usize]));
            } else if pad {
                out.push('=');
            }
        }
    }
    out
}

fn b64url(bytes: &[u8]) -> String {
    b64(bytes, B64URL, false)
}

fn claims(user: &str) -> Value {
    json!({"sub": user, "exp": now() + 3600, "rooms": ["*"]})
}

fn sign_with(header: &Header, claims: &Value, key: &EncodingKey) -> String {
    jsonwebtoken::encode(header, claims, key).expect("sign")
}

/// HS256 whose HMAC secret is the RSA public key PEM (key-confusion attack).
fn hs256_with_rsa_public_pem(user: &str) -> String {
    sign_with(
        &Header::new(Algorithm::HS256),
        &claims(user),
        &EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes()),
    )
}

fn rs256(claims: &Value) -> String {
    sign_with(
        &Header::new(Algorithm::RS256),
        claims,
        &EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).expect("RSA private key"),
    )
}

/// `alg: none` with an empty signature segment.
fn alg_none(user: &str) -> String {
    let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64url(claims(user).to_string().as_bytes());
    format!("{header}.{payload}.")
}

fn rs256_stack() -> StackBuilder {
    Stack::builder()
        .workers(0)
        .env("CHAT_JWT_ALGORITHMS", "RS256")
        .env("CHAT_JWT_PUBLIC_KEYS", RSA_PUBLIC_PEM_PATH)
}

/// Every key in the stack's Redis, sorted.
async fn redis_keys(stack: &Stack) -> Vec<String> {
    let mut conn = stack.redis().await;
    let mut keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query_async(&mut conn)
        .await
        .expect("KEYS");
    keys.sort();
    keys
}

async fn refused_by_header(stack: &Stack, token: &str, what: &str) {
    let mut c = Client::connect_with_header(&stack.ws_url(0), Some(token)).await;
    c.refused(&format!("{what} (header)"), None).await;
}

async fn refused_by_frame(stack: &Stack, token: &str, what: &str) {
    let mut c = Client::connect_with_header(&stack.ws_url(0), None).await;
    c.send_json(json!({"type": "auth", "token": token, "ref": "a1"}))
        .await;
    c.refused(&format!("{what} (frame)"), Some(&json!("a1")))
        .await;
}

async fn refused_both_ways(stack: &Stack, token: &str, what: &str) {
    refused_by_header(stack, token, what).await;
    refused_by_frame(stack, token, what).await;
}

async fn accepted_by_header(stack: &Stack, token: &str, user: &str) -> Client {
    let mut c = Client::connect_with_header(&stack.ws_url(0), Some(token)).await;
    let ready = c.recv().await;
    assert_eq!(ready["type"], "ready", "{ready}");
    assert_eq!(ready["user"], user, "{ready}");
    c
}

async fn accepted_by_frame(stack: &Stack, token: &str, user: &str) -> Client {
    let mut c = Client::connect_with_header(&stack.ws_url(0), None).await;
    c.send_json(json!({"type": "auth", "token": token})).await;
    let ready = c.recv().await;
    assert_eq!(ready["type"], "ready", "{ready}");
    assert_eq!(ready["user"], user, "{ready}");
    c
}

#[tokio::test]
async fn alg_none_is_refused() {
    let stack = Stack::builder().workers(0).start().await;
    let before = redis_keys(&stack).await;
    refused_both_ways(&stack, &alg_none("alice"), "alg none").await;
    // Same claims, properly signed: accepted (the refusal was the alg).
    accepted_by_header(&stack, &sign(claims("alice")), "alice").await;
    assert_eq!(redis_keys(&stack).await, before, "refusals wrote to Redis");
}

#[tokio::test]
async fn alg_none_is_refused_on_rs256_stack() {
    let stack = rs256_stack().start().await;
    let before = redis_keys(&stack).await;
    refused_both_ways(&stack, &alg_none("alice"), "alg none").await;
    assert_eq!(redis_keys(&stack).await, before, "refusals wrote to Redis");
}

#[tokio::test]
async fn rs256_token_is_accepted_on_rs256_stack() {
    let stack = rs256_stack().start().await;
    let token = rs256(&claims("alice"));
    let mut a = accepted_by_header(&stack, &token, "alice").await;
    a.ping(json!(1)).await;
    let mut b = accepted_by_frame(&stack, &token, "alice").await;
    b.ping(json!(2)).await;
}

#[tokio::test]
async fn hs256_signed_with_rsa_public_key_is_refused_on_rs256_stack() {
    let stack = rs256_stack().start().await;
    let before = redis_keys(&stack).await;
    refused_both_ways(&stack, &hs256_with_rsa_public_pem("alice"), "HS256/PEM").await;
    // An HS256 token with the harness secret (still in the env) is refused
    // too: HS256 is not among the configured algorithms.
    refused_both_ways(&stack, &sign(claims("alice")), "HS256 on RS256 stack").await;
    assert_eq!(redis_keys(&stack).await, before, "refusals wrote to Redis");
    // Positive control on the same stack.
    accepted_by_header(&stack, &rs256(&claims("alice")), "alice").await;
}

#[tokio::test]
async fn hs256_signed_with_rsa_public_key_is_refused_on_hs256_stack() {
    let stack = Stack::builder().workers(0).start().await;
    let before = redis_keys(&stack).await;
    refused_both_ways(&stack, &hs256_with_rsa_public_pem("alice"), "HS256/PEM").await;
    // RS256 is not configured here: a correctly RSA-signed token is refused.
    refused_both_ways(&stack, &rs256(&claims("alice")), "RS256 on HS256 stack").await;
    assert_eq!(redis_keys(&stack).await, before, "refusals wrote to Redis");
}

#[tokio::test]
async fn hs256_signed_with_rsa_public_key_is_refused_when_both_algorithms_allowed() {
    let stack = Stack::builder()
        .workers(0)
        .env("CHAT_JWT_ALGORITHMS", "HS256,RS256")
        .env("CHAT_JWT_PUBLIC_KEYS", RSA_PUBLIC_PEM_PATH)
        .start()
        .await;
    let before = redis_keys(&stack).await;
    refused_both_ways(&stack, &hs256_with_rsa_public_pem("alice"), "HS256/PEM").await;
    assert_eq!(redis_keys(&stack).await, before, "refusals wrote to Redis");
    accepted_by_header(&stack, &rs256(&claims("alice")), "alice").await;
    accepted_by_header(&stack, &sign(claims("alice")), "alice").await;
}

#[tokio::test]
async fn expired_and_not_yet_valid_tokens_are_refused() {
    let stack = Stack::builder().workers(0).start().await;
    let before = redis_keys(&stack).await;
    let expired = sign(json!({"sub": "alice", "exp": now() - 10, "rooms": ["*"]}));
    refused_both_ways(&stack, &expired, "expired").await;
    let nbf = sign(json!({"sub": "alice", "exp": now() + 3600, "nbf": now() + 600}));
    refused_both_ways(&stack, &nbf, "nbf in the future").await;
    // The required claims: no `exp`, no `sub`.
    let no_exp = sign(json!({"sub": "alice"}));
    refused_both_ways(&stack, &no_exp, "no exp").await;
    let no_sub = sign(json!({"exp": now() + 3600}));
    refused_both_ways(&stack, &no_sub, "no sub").await;
    assert_eq!(redis_keys(&stack).await, before, "refusals wrote to Redis");
    // nbf in the past is fine.
    let ok = sign(json!({"sub": "alice", "exp": now() + 3600, "nbf": now() - 10}));
    accepted_by_header(&stack, &ok, "alice").await;
}

#[tokio::test]
async fn wrong_issuer_is_refused() {
    let stack = Stack::builder()
        .workers(0)
        .env("CHAT_JWT_ISSUER", "https://auth.example")
        .start()
        .await;
    let before = redis_keys(&stack).await;
    let wrong = sign(json!({"sub": "alice", "exp": now() + 3600, "iss": "https://evil.example"}));
    refused_both_ways(&stack, &wrong, "wrong iss").await;
    let missing = sign(json!({"sub": "alice", "exp": now() + 3600}));
    refused_both_ways(&stack, &missing, "missing iss").await;
    assert_eq!(redis_keys(&stack).await, before, "refusals wrote to Redis");
    let right = sign(json!({"sub": "alice", "exp": now() + 3600, "iss": "https://auth.example"}));
    accepted_by_header(&stack, &right, "alice").await;
    accepted_by_frame(&stack, &right, "alice").await;
}

#[tokio::test]
async fn wrong_audience_is_refused() {
    let stack = Stack::builder()
        .workers(0)
        .env("CHAT_JWT_AUDIENCE", "chat")
        .start()
        .await;
    let before = redis_keys(&stack).await;
    let wrong = sign(json!({"sub": "alice", "exp": now() + 3600, "aud": "billing"}));
    refused_both_ways(&stack, &wrong, "wrong aud").await;
    let wrong_list = sign(json!({"sub": "alice", "exp": now() + 3600, "aud": ["billing", "x"]}));
    refused_both_ways(&stack, &wrong_list, "wrong aud list").await;
    let missing = sign(json!({"sub": "alice", "exp": now() + 3600}));
    refused_both_ways(&stack, &missing, "missing aud").await;
    assert_eq!(redis_keys(&stack).await, before, "refusals wrote to Redis");
    let right = sign(json!({"sub": "alice", "exp": now() + 3600, "aud": "chat"}));
    accepted_by_header(&stack, &right, "alice").await;
    let right_list = sign(json!({"sub": "alice", "exp": now() + 3600, "aud": ["x", "chat"]}));
    accepted_by_frame(&stack, &right_list, "alice").await;
}

#[tokio::test]
async fn crit_header_is_refused() {
    let stack = Stack::builder().workers(0).start().await;
    let before = redis_keys(&stack).await;
    let mut header = Header::new(Algorithm::HS256);
    header.extras.insert("crit", ["exp"]);
    let token = sign_with(
        &header,
        &claims("alice"),
        &EncodingKey::from_secret(SECRET.as_bytes()),
    );
    refused_both_ways(&stack, &token, "crit header").await;
    assert_eq!(redis_keys(&stack).await, before, "refusals wrote to Redis");
}

#[tokio::test]
async fn garbage_tokens_are_refused() {
    let stack = Stack::builder().workers(0).start().await;
    let before = redis_keys(&stack).await;
    // An empty token only by frame: `Authorization: Bearer ` with nothing
    // after it is no token at all (the socket then waits for `auth`).
    refused_by_frame(&stack, "", "empty").await;
    let random: [u8; 48] = rand::random();
    let random_std = b64(&random, B64STD, true);
    let random_url = b64url(&random);
    let random_3 = format!(
        "{}.{}.{}",
        b64url(&random[..16]),
        b64url(&random[16..32]),
        b64url(&random[32..])
    );
    let valid = sign(claims("alice"));
    let mut parts = valid.split('.');
    let (h, p) = (
        parts.next().expect("header"),
        parts.next().expect("payload"),
    );
    let bad_sig = format!("{h}.{p}.{}", b64url(&random[..32]));
    let two_parts = format!("{h}.{p}");
    let four_parts = format!("{valid}.{h}");
    for (token, what) in [
        ("abc", "abc"),
        ("a.b.c", "a.b.c"),
        (random_std.as_str(), "random base64"),
        (random_url.as_str(), "random base64url"),
        (random_3.as_str(), "random three segments"),
        (bad_sig.as_str(), "bad signature"),
        (two_parts.as_str(), "two segments"),
        (four_parts.as_str(), "four segments"),
    ] {
        refused_both_ways(&stack, token, what).await;
    }
    // Not even a string.
    let mut c = Client::connect_with_header(&stack.ws_url(0), None).await;
    c.send_json(json!({"type": "auth", "token": 42, "ref": 7}))
        .await;
    c.refused("numeric token", Some(&json!(7))).await;
    assert_eq!(redis_keys(&stack).await, before, "refusals wrote to Redis");
}

#[tokio::test]
async fn oversize_token_is_refused() {
    let stack = Stack::builder().workers(0).start().await;
    let before = redis_keys(&stack).await;
    let token = sign(json!({
        "sub": "alice",
        "exp": now() + 3600,
        "pad": "x".repeat(9 * 1024),
    }));
    assert!(token.len() > 8 * 1024, "token is {} bytes", token.len());
    refused_both_ways(&stack, &token, "oversize").await;
    assert_eq!(redis_keys(&stack).await, before, "refusals wrote to Redis");
}

#[tokio::test]
async fn first_frame_other_than_auth_is_refused() {
    let stack = Stack::builder().workers(0).start().await;
    let before = redis_keys(&stack).await;
    let mut c = Client::connect_with_header(&stack.ws_url(0), None).await;
    c.send_json(json!({"type": "ping", "ref": 1})).await;
    c.refused("ping before auth", Some(&json!(1))).await;

    // A `join` before auth: same, no room created.
    let mut c = Client::connect_with_header(&stack.ws_url(0), None).await;
    c.send_json(json!({"type": "join", "room": "lobby", "ref": "j"}))
        .await;
    c.refused("join first", Some(&json!("j"))).await;
    assert_eq!(redis_keys(&stack).await, before, "refusals wrote to Redis");
}

#[tokio::test]
async fn no_auth_frame_within_timeout_closes_4001() {
    let stack = Stack::builder()
        .workers(0)
        .env("CHAT_AUTH_TIMEOUT", "300ms")
        .start()
        .await;
    let started = Instant::now();
    let mut c = Client::connect_with_header(&stack.ws_url(0), None).await;
    c.refused("silent socket", None).await;
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(300) && took < Duration::from_secs(5),
        "closed after {took:?}, auth timeout is 300ms"
    );

    // A token in the query string is not accepted: the socket is still
    // unauthenticated and times out the same way.
    let url = format!("{}?token={}", stack.ws_url(0), sign(claims("alice")));
    let mut c = Client::connect_with_header(&url, None).await;
    c.refused("query-string token", None).await;
}

#[tokio::test]
async fn refused_socket_does_not_disturb_an_authenticated_one() {
    let stack = Stack::builder().workers(0).start().await;
    let mut alice = stack.connect(0, "alice").await;
    alice.ping(json!("p1")).await;
    refused_both_ways(&stack, &alg_none("alice"), "alg none").await;
    refused_both_ways(&stack, "abc", "abc").await;
    let mut c = Client::connect_with_header(&stack.ws_url(0), None).await;
    c.send_json(json!({"type": "ping", "ref": 1})).await;
    c.refused("ping first", Some(&json!(1))).await;
    alice.ping(json!("p2")).await;
}

#[tokio::test]
async fn ready_echoes_the_ref_of_the_auth_frame() {
    let stack = Stack::builder().workers(0).start().await;
    let mut c = Client::connect_with_header(&stack.ws_url(0), None).await;
    c.send_json(json!({"type": "auth", "token": sign(claims("alice")), "ref": "a1"}))
        .await;
    let ready = c.recv().await;
    assert_eq!(ready["type"], "ready", "{ready}");
    assert_eq!(ready["ref"], "a1", "{ready}");
}

#[tokio::test]
async fn huge_exp_neither_panics_nor_hangs_the_socket() {
    let stack = Stack::builder().workers(0).start().await;
    let token = sign(json!({"sub": "alice", "exp": u64::MAX}));
    let mut c = Client::connect_with_header(&stack.ws_url(0), Some(&token)).await;
    // Either outcome is acceptable: refused (4001), or served. (An `exp`
    // past i64::MAX once overflowed an Instant and hung the socket.)
    match c.event().await {
        Event::Closed(code) => assert_eq!(code, Some(4001)),
        Event::Frame(f) if f["type"] == "error" => {
            assert_eq!(f["code"], "unauthorized", "{f}");
            c.refused("huge exp", None).await;
        }
        Event::Frame(ready) => {
            assert_eq!(ready["type"], "ready", "{ready}");
            let pong = tokio::time::timeout(Duration::from_secs(2), c.ping(json!(1))).await;
            assert!(
                pong.is_ok(),
                "no pong within 2 s after ready (exp {})",
                u64::MAX
            );
        }
    }
}

#[tokio::test]
async fn a_sub_that_could_display_as_another_user_is_refused() {
    let stack = Stack::builder().workers(0).start().await;
    let before = redis_keys(&stack).await;
    // A bidi override, a zero-width space, a soft hyphen, an empty id.
    for (sub, what) in [
        ("adm\u{202E}nimda", "U+202E"),
        ("ali\u{200B}ce", "U+200B"),
        ("al\u{00AD}ice", "U+00AD"),
        ("", "empty"),
    ] {
        refused_both_ways(&stack, &sign(claims(sub)), what).await;
    }
    assert_eq!(redis_keys(&stack).await, before, "refusals wrote to Redis");
    // Letters of any script and emoji are fine.
    accepted_by_header(&stack, &sign(claims("Zoë 李 🙂")), "Zoë 李 🙂").await;
}
