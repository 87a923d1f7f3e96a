//! Tests for `chat_core::jwt`. JWKS tests run a real axum server on loopback.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::jwk::Jwk;
use jsonwebtoken::{EncodingKey, Header};
use serde_json::{Value, json};

use super::testkeys::*;
use super::*;

const SECRET: &[u8] = b"an-hs256-test-secret-of-32-bytes!";

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn claims() -> Value {
    json!({ "sub": "user-1", "exp": now() + 600 })
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE_PEM.as_bytes()).expect("rsa fixture")
}
fn ec_key() -> EncodingKey {
    EncodingKey::from_ec_pem(EC_PRIVATE_PEM.as_bytes()).expect("ec fixture")
}
fn ed_key() -> EncodingKey {
    EncodingKey::from_ed_pem(ED_PRIVATE_PEM.as_bytes()).expect("ed fixture")
}
fn hs_key() -> EncodingKey {
    EncodingKey::from_secret(SECRET)
}

fn mint(alg: Algorithm, key: &EncodingKey, claims: &Value, kid: Option<&str>) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, key).expect("encode")
}

/// A correctly signed token with an arbitrary header JSON.
fn mint_raw(header: &Value, claims: &Value, alg: Algorithm, key: &EncodingKey) -> String {
    let msg = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = jsonwebtoken::crypto::sign(msg.as_bytes(), key, alg).expect("sign");
    format!("{msg}.{sig}")
}

fn hs_config() -> JwtConfig {
    JwtConfig {
        hs_secret: Some(SECRET.to_vec()),
        ..JwtConfig::default()
    }
}

fn all_pem_config() -> JwtConfig {
    JwtConfig {
        algorithms: SUPPORTED_ALGORITHMS.to_vec(),
        hs_secret: Some(SECRET.to_vec()),
        public_key_pems: vec![
            RSA_PUBLIC_PEM.as_bytes().to_vec(),
            EC_PUBLIC_PEM.as_bytes().to_vec(),
            ED_PUBLIC_PEM.as_bytes().to_vec(),
        ],
        ..JwtConfig::default()
    }
}

async fn verifier(cfg: JwtConfig) -> Verifier {
    Verifier::new(cfg).await.expect("valid config")
}

async fn config_error(cfg: JwtConfig) -> String {
    match Verifier::new(cfg).await {
        Err(JwtError::Config(msg)) => msg,
        other => panic!("expected Config error, got {other:?}"),
    }
}

// ---- happy paths ----

#[test]
fn jwt_verifier_is_send_sync() {
    fn assert_send_sync<T: Send + Sync>() {}
    assert_send_sync::<Verifier>();
}

#[tokio::test]
async fn jwt_accepts_all_supported_algorithms() {
    let v = verifier(all_pem_config()).await;
    let body = json!({
        "sub": "user-1", "exp": now() + 600, "sid": "s-9", "rooms": ["a", "b"], "extra": 1
    });
    for (alg, key) in [
        (Algorithm::HS256, hs_key()),
        (Algorithm::RS256, rsa_key()),
        (Algorithm::ES256, ec_key()),
        (Algorithm::EdDSA, ed_key()),
    ] {
        let claims = v
            .verify(&mint(alg, &key, &body, None))
            .await
            .expect("valid token");
        assert_eq!(claims.sub, "user-1", "{alg:?}");
        assert_eq!(claims.sid.as_deref(), Some("s-9"));
        assert_eq!(claims.rooms, Some(vec!["a".to_string(), "b".to_string()]));
        // A kid does not rule out configured PEMs (they have none).
        v.verify(&mint(alg, &key, &body, Some("any-kid")))
            .await
            .expect("kid + static key");
    }
}

#[tokio::test]
async fn jwt_claims_roundtrip_and_optional_fields() {
    let v = verifier(hs_config()).await;
    let exp = now() + 60;
    let c = Claims {
        sub: "u".into(),
        exp,
        sid: None,
        rooms: None,
    };
    let token = jsonwebtoken::encode(&Header::default(), &c, &hs_key()).expect("encode");
    assert_eq!(v.verify(&token).await.expect("valid"), c);
    // Float NumericDate is accepted, like jsonwebtoken does.
    let token = mint(
        Algorithm::HS256,
        &hs_key(),
        &json!({"sub": "u", "exp": exp as f64}),
        None,
    );
    assert_eq!(v.verify(&token).await.expect("valid").exp, exp);
}

#[tokio::test]
async fn jwt_aud_ignored_when_not_configured_and_matched_when_configured() {
    let token = mint(
        Algorithm::HS256,
        &hs_key(),
        &json!({"sub": "u", "exp": now() + 60, "aud": ["other", "chat"], "iss": "idp"}),
        None,
    );
    verifier(hs_config())
        .await
        .verify(&token)
        .await
        .expect("aud without config is fine");
    let cfg = JwtConfig {
        audience: Some(vec!["chat".into()]),
        issuer: Some("idp".into()),
        ..hs_config()
    };
    verifier(cfg)
        .await
        .verify(&token)
        .await
        .expect("one audience matches");
}

#[tokio::test]
async fn jwt_leeway_applies_to_exp_and_nbf() {
    let cfg = JwtConfig {
        leeway_secs: 120,
        ..hs_config()
    };
    let v = verifier(cfg).await;
    let body = json!({"sub": "u", "exp": now() - 30, "nbf": now() + 30});
    v.verify(&mint(Algorithm::HS256, &hs_key(), &body, None))
        .await
        .expect("within leeway");
}

// ---- algorithm confusion ----

#[tokio::test]
async fn jwt_alg_none_refused() {
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
    let v = verifier(hs_config()).await;
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}.c2ln"),
    ] {
        match v.verify(&token).await {
            Err(JwtError::AlgorithmNotAllowed(a)) => assert_eq!(a, "none"),
            other => panic!("expected AlgorithmNotAllowed, got {other:?}"),
        }
    }
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"NONE"}"#);
    assert!(matches!(
        v.verify(&format!("{header}.{payload}.")).await,
        Err(JwtError::AlgorithmNotAllowed(_))
    ));
}

#[tokio::test]
async fn jwt_hs256_signed_with_rsa_public_key_refused() {
    let forged = mint(
        Algorithm::HS256,
        &EncodingKey::from_secret(RSA_PUBLIC_PEM.as_bytes()),
        &claims(),
        None,
    );
    let rsa_only = JwtConfig {
        algorithms: vec![Algorithm::RS256],
        public_key_pems: vec![RSA_PUBLIC_PEM.as_bytes().to_vec()],
        ..JwtConfig::default()
    };
    assert!(matches!(
        verifier(rsa_only.clone()).await.verify(&forged).await,
        Err(JwtError::AlgorithmNotAllowed(a)) if a == "HS256"
    ));
    let both = JwtConfig {
        algorithms: vec![Algorithm::RS256, Algorithm::HS256],
        hs_secret: Some(b"a-different-secret-entirely-0123456".to_vec()),
        ..rsa_only
    };
    assert!(matches!(
        verifier(both).await.verify(&forged).await,
        Err(JwtError::BadSignature)
    ));
}

#[tokio::test]
async fn jwt_algorithm_outside_allowed_set_refused() {
    let v = verifier(hs_config()).await;
    for (alg, key) in [
        (Algorithm::RS256, rsa_key()),
        (Algorithm::ES256, ec_key()),
        (Algorithm::EdDSA, ed_key()),
    ] {
        let res = v.verify(&mint(alg, &key, &claims(), None)).await;
        assert!(
            matches!(res, Err(JwtError::AlgorithmNotAllowed(_))),
            "{alg:?}: {res:?}"
        );
    }
    // Known to jsonwebtoken but not supported here.
    let token = mint(Algorithm::HS512, &hs_key(), &claims(), None);
    assert!(
        matches!(v.verify(&token).await, Err(JwtError::AlgorithmNotAllowed(a)) if a == "HS512")
    );
    let header = URL_SAFE_NO_PAD.encode(r#"{"alg":"XX999"}"#);
    let token = format!(
        "{header}.{}.c2ln",
        URL_SAFE_NO_PAD.encode(claims().to_string())
    );
    assert!(
        matches!(v.verify(&token).await, Err(JwtError::AlgorithmNotAllowed(a)) if a == "unrecognized")
    );
}

#[tokio::test]
async fn jwt_wrong_key_of_right_family_is_bad_signature() {
    let v = verifier(hs_config()).await;
    let token = mint(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"nope"),
        &claims(),
        None,
    );
    assert!(matches!(
        v.verify(&token).await,
        Err(JwtError::BadSignature)
    ));
    // Tampered payload on a valid token.
    let good = mint(Algorithm::HS256, &hs_key(), &claims(), None);
    let mut parts: Vec<&str> = good.split('.').collect();
    let evil = URL_SAFE_NO_PAD.encode(json!({"sub": "admin", "exp": now() + 600}).to_string());
    parts[1] = &evil;
    assert!(matches!(
        v.verify(&parts.join(".")).await,
        Err(JwtError::BadSignature)
    ));
}

// ---- claims ----

async fn hs_verify(cfg: JwtConfig, body: Value) -> Result<Claims, JwtError> {
    verifier(cfg)
        .await
        .verify(&mint(Algorithm::HS256, &hs_key(), &body, None))
        .await
}

#[tokio::test]
async fn jwt_expired_refused() {
    let res = hs_verify(hs_config(), json!({"sub": "u", "exp": now() - 5})).await;
    assert!(matches!(res, Err(JwtError::Expired)), "{res:?}");
}

#[tokio::test]
async fn jwt_nbf_in_future_refused() {
    let res = hs_verify(
        hs_config(),
        json!({"sub": "u", "exp": now() + 600, "nbf": now() + 300}),
    )
    .await;
    assert!(matches!(res, Err(JwtError::NotYetValid)), "{res:?}");
}

#[tokio::test]
async fn jwt_issuer_checked() {
    let cfg = JwtConfig {
        issuer: Some("https://idp.example".into()),
        ..hs_config()
    };
    let ok = json!({"sub": "u", "exp": now() + 60, "iss": "https://idp.example"});
    hs_verify(cfg.clone(), ok).await.expect("right issuer");
    let wrong = json!({"sub": "u", "exp": now() + 60, "iss": "https://evil.example"});
    assert!(matches!(
        hs_verify(cfg.clone(), wrong).await,
        Err(JwtError::BadIssuer)
    ));
    let missing = json!({"sub": "u", "exp": now() + 60});
    assert!(matches!(
        hs_verify(cfg, missing).await,
        Err(JwtError::MissingClaim("iss"))
    ));
}

#[tokio::test]
async fn jwt_audience_checked() {
    let cfg = JwtConfig {
        audience: Some(vec!["chat".into(), "chat2".into()]),
        ..hs_config()
    };
    hs_verify(
        cfg.clone(),
        json!({"sub": "u", "exp": now() + 60, "aud": "chat2"}),
    )
    .await
    .expect("right audience");
    let wrong = json!({"sub": "u", "exp": now() + 60, "aud": ["billing"]});
    assert!(matches!(
        hs_verify(cfg.clone(), wrong).await,
        Err(JwtError::BadAudience)
    ));
    let missing = json!({"sub": "u", "exp": now() + 60});
    assert!(matches!(
        hs_verify(cfg, missing).await,
        Err(JwtError::MissingClaim("aud"))
    ));
}

#[tokio::test]
async fn jwt_missing_or_invalid_claims() {
    let cases = [
        (json!({"exp": now() + 60}), "missing sub"),
        (json!({"sub": 42, "exp": now() + 60}), "numeric sub"),
        (json!({"sub": "u"}), "missing exp"),
        (json!({"sub": "u", "exp": "tomorrow"}), "string exp"),
        (json!({"sub": "", "exp": now() + 60}), "empty sub"),
        (
            json!({"sub": "u", "exp": now() + 60, "sid": 7}),
            "numeric sid",
        ),
        (
            json!({"sub": "u", "exp": now() + 60, "rooms": "r"}),
            "rooms not array",
        ),
        (
            json!({"sub": "u", "exp": now() + 60, "rooms": [1]}),
            "rooms not strings",
        ),
        (json!(["not", "an", "object"]), "array payload"),
    ];
    for (body, what) in cases {
        let res = hs_verify(hs_config(), body).await;
        assert!(res.is_err(), "{what}: {res:?}");
    }
    assert!(matches!(
        hs_verify(hs_config(), json!({"exp": now() + 60})).await,
        Err(JwtError::MissingClaim("sub"))
    ));
    assert!(matches!(
        hs_verify(hs_config(), json!({"sub": "u"})).await,
        Err(JwtError::MissingClaim("exp"))
    ));
    assert!(matches!(
        hs_verify(
            hs_config(),
            json!({"sub": "u", "exp": now() + 60, "rooms": [1]})
        )
        .await,
        Err(JwtError::InvalidClaim("rooms"))
    ));
}

// ---- header / shape ----

#[tokio::test]
async fn jwt_crit_header_refused() {
    let v = verifier(hs_config()).await;
    for header in [
        json!({"alg": "HS256", "crit": ["exp"], "exp": 1}),
        json!({"alg": "HS256", "crit": []}),
        json!({"alg": "HS256", "crit": "b64"}),
    ] {
        let token = mint_raw(&header, &claims(), Algorithm::HS256, &hs_key());
        let res = v.verify(&token).await;
        assert!(
            matches!(res, Err(JwtError::CritHeader)),
            "{header}: {res:?}"
        );
    }
    // Same construction without crit verifies, so the refusal is about crit.
    let token = mint_raw(
        &json!({"alg": "HS256"}),
        &claims(),
        Algorithm::HS256,
        &hs_key(),
    );
    v.verify(&token).await.expect("no crit");
}

#[tokio::test]
async fn jwt_garbage_refused_without_panic() {
    let v = verifier(all_pem_config()).await;
    let p = URL_SAFE_NO_PAD.encode(claims().to_string());
    let h = URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256"}"#);
    let inputs: Vec<String> = vec![
        String::new(),
        ".".into(),
        "..".into(),
        "...".into(),
        "a.b".into(),
        "a.b.c".into(),
        "a.b.c.d".into(),
        "!!!.???.***".into(),
        "é.é.é".into(),
        " eyJ.eyJ.sig".into(),
        "eyJhbGciOiJIUzI1NiJ9=.e30.c2ln".into(),
        format!("{}.{p}.c2ln", URL_SAFE_NO_PAD.encode("null")),
        format!("{}.{p}.c2ln", URL_SAFE_NO_PAD.encode("[]")),
        format!("{}.{p}.c2ln", URL_SAFE_NO_PAD.encode(r#"{"alg":5}"#)),
        format!(
            "{}.{p}.c2ln",
            URL_SAFE_NO_PAD.encode(r#"{"alg":"HS256","kid":5}"#)
        ),
        format!("{}.{p}.c2ln", URL_SAFE_NO_PAD.encode("{\"alg\":\"HS256\"")),
        format!("{h}.{p}."),
        format!("{h}..c2ln"),
        format!("{h}.{p}.c2ln!"),
        format!("{h}.{}.c2ln", URL_SAFE_NO_PAD.encode("not json")),
        "a".repeat(MAX_TOKEN_BYTES + 1),
        "a".repeat(1 << 20),
    ];
    for input in &inputs {
        let res = v.verify(input).await;
        assert!(res.is_err(), "accepted garbage {input:.40}");
        // Errors must not echo token content.
        let msg = res.err().map(|e| e.to_string()).unwrap_or_default();
        if input.len() > 8 {
            assert!(!msg.contains(input.as_str()), "error echoes token: {msg}");
        }
    }
    assert!(matches!(v.verify("a.b").await, Err(JwtError::Malformed(_))));
    assert!(matches!(v.verify("").await, Err(JwtError::Malformed(_))));
}

#[tokio::test]
async fn jwt_mutated_tokens_never_panic_or_pass() {
    let v = verifier(all_pem_config()).await;
    let alphabet = b"AZaz09-_.";
    for (alg, key) in [(Algorithm::HS256, hs_key()), (Algorithm::EdDSA, ed_key())] {
        let token = mint(alg, &key, &claims(), None);
        let bytes = token.as_bytes();
        for i in 0..bytes.len() {
            for &c in alphabet {
                if bytes[i] == c {
                    continue;
                }
                let mut m = bytes.to_vec();
                m[i] = c;
                let m = String::from_utf8(m).expect("ascii");
                // Flipping only trailing padding bits could keep the same bytes; our
                // strict base64 rejects those encodings, so every mutation fails.
                assert!(v.verify(&m).await.is_err(), "mutation at {i} accepted");
            }
        }
    }
}

#[tokio::test]
async fn jwt_oversize_token_refused_before_parsing() {
    let v = verifier(hs_config()).await;
    let body = json!({"sub": "u", "exp": now() + 60, "pad": "x".repeat(MAX_TOKEN_BYTES)});
    let token = mint(Algorithm::HS256, &hs_key(), &body, None);
    assert!(token.len() > MAX_TOKEN_BYTES);
    assert!(matches!(v.verify(&token).await, Err(JwtError::TooLarge)));
    // Just under the limit is still verified normally.
    let body = json!({"sub": "u", "exp": now() + 60, "pad": "x".repeat(5000)});
    let token = mint(Algorithm::HS256, &hs_key(), &body, None);
    assert!(token.len() <= MAX_TOKEN_BYTES);
    v.verify(&token).await.expect("under the limit");
}

// ---- configuration ----

#[tokio::test]
async fn jwt_config_validation() {
    let msg = config_error(JwtConfig {
        algorithms: vec![Algorithm::RS256],
        ..JwtConfig::default()
    })
    .await;
    assert!(msg.contains("RS256"), "{msg}");
    let msg = config_error(JwtConfig::default()).await;
    assert!(msg.contains("hs_secret"), "{msg}");
    let msg = config_error(JwtConfig {
        algorithms: vec![Algorithm::ES256],
        public_key_pems: vec![RSA_PUBLIC_PEM.as_bytes().to_vec()],
        ..JwtConfig::default()
    })
    .await;
    assert!(msg.contains("ES256"), "{msg}");
    config_error(JwtConfig {
        algorithms: vec![],
        ..hs_config()
    })
    .await;
    config_error(JwtConfig {
        algorithms: vec![Algorithm::RS384],
        ..hs_config()
    })
    .await;
    config_error(JwtConfig {
        hs_secret: Some(vec![]),
        ..JwtConfig::default()
    })
    .await;
    config_error(JwtConfig {
        leeway_secs: u64::MAX,
        ..hs_config()
    })
    .await;
    config_error(JwtConfig {
        issuer: Some(String::new()),
        ..hs_config()
    })
    .await;
    config_error(JwtConfig {
        audience: Some(vec![]),
        ..hs_config()
    })
    .await;
    config_error(JwtConfig {
        jwks_url: Some("not a url".into()),
        ..hs_config()
    })
    .await;
    config_error(JwtConfig {
        jwks_url: Some("file:///etc/passwd".into()),
        ..hs_config()
    })
    .await;

    // A bad PEM is named by its index.
    for bad in [
        b"garbage".to_vec(),
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_vec(),
        RSA_PRIVATE_PEM.as_bytes().to_vec(),
        EC_PRIVATE_PEM.as_bytes().to_vec(),
    ] {
        let msg = config_error(JwtConfig {
            public_key_pems: vec![RSA_PUBLIC_PEM.as_bytes().to_vec(), bad],
            ..all_pem_config()
        })
        .await;
        assert!(msg.contains("public_key_pems[1]"), "{msg}");
        assert!(!msg.contains("BEGIN"), "no key material in errors: {msg}");
    }

    // RS256 satisfied by a JWKS URL alone (prefetch failure is not fatal).
    let url = format!("http://{}/jwks.json", closed_port_addr().await);
    verifier(JwtConfig {
        algorithms: vec![Algorithm::RS256],
        jwks_url: Some(url),
        ..JwtConfig::default()
    })
    .await;
}

/// `validate` reports every problem at once, each under its field, without
/// building a verifier or fetching anything; `Verifier::new` refuses the
/// same configuration with all of them.
#[tokio::test]
async fn jwt_config_validate_reports_every_problem() {
    let cfg = JwtConfig {
        algorithms: vec![Algorithm::HS256, Algorithm::ES256],
        public_key_pems: vec![b"garbage".to_vec()],
        jwks_url: Some("ftp://auth.example/jwks.json".into()),
        leeway_secs: MAX_LEEWAY_SECS + 1,
        issuer: Some(String::new()),
        ..JwtConfig::default()
    };
    let problems = cfg.validate().expect_err("invalid");
    let fields: Vec<JwtField> = problems.iter().map(|p| p.field).collect();
    assert_eq!(
        fields,
        [
            JwtField::LeewaySecs,
            JwtField::Issuer,
            JwtField::PublicKeyPem(0),
            JwtField::JwksUrl,
            JwtField::HsSecret,
        ],
        "{problems:?}"
    );
    for p in &problems {
        assert!(
            p.message.starts_with(&p.field.config_name()),
            "named by its field: {p:?}"
        );
    }
    let named = cfg
        .validate_named(&|f| format!("<{}>", f.config_name()))
        .expect_err("invalid");
    assert!(named[0].message.starts_with("<leeway_secs>: "), "{named:?}");
    let msg = config_error(cfg).await;
    for p in &problems {
        assert!(msg.contains(&p.message), "{msg}");
    }

    assert_eq!(hs_config().validate(), Ok(()));
    assert_eq!(all_pem_config().validate(), Ok(()));
    // A JWKS URL is a key source for the asymmetric algorithms, unfetched.
    let jwks_only = JwtConfig {
        algorithms: vec![Algorithm::RS256, Algorithm::EdDSA],
        jwks_url: Some("https://auth.example/jwks.json".into()),
        ..JwtConfig::default()
    };
    assert_eq!(jwks_only.validate(), Ok(()));
}

#[test]
fn jwt_debug_and_errors_hide_secrets() {
    let cfg = hs_config();
    let dbg = format!("{cfg:?}");
    assert!(
        !dbg.contains(std::str::from_utf8(SECRET).expect("utf8")),
        "{dbg}"
    );
    assert!(dbg.contains("redacted"));
}

// ---- JWKS ----

struct JwksServer {
    url: String,
    hits: Arc<AtomicUsize>,
    response: Arc<Mutex<(StatusCode, String)>>,
}

impl JwksServer {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
    fn set(&self, status: StatusCode, body: impl Into<String>) {
        *self.response.lock().expect("lock") = (status, body.into());
    }
}

#[derive(Clone)]
struct ServerState {
    hits: Arc<AtomicUsize>,
    response: Arc<Mutex<(StatusCode, String)>>,
    delay: Duration,
}

async fn jwks_handler(State(s): State<ServerState>) -> (StatusCode, String) {
    s.hits.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(s.delay).await;
    s.response.lock().expect("lock").clone()
}

async fn jwks_server(body: impl Into<String>, delay: Duration) -> JwksServer {
    let state = ServerState {
        hits: Arc::new(AtomicUsize::new(0)),
        response: Arc::new(Mutex::new((StatusCode::OK, body.into()))),
        delay,
    };
    let app = axum::Router::new()
        .route("/jwks.json", axum::routing::get(jwks_handler))
        .with_state(state.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    JwksServer {
        url: format!("http://{addr}/jwks.json"),
        hits: state.hits,
        response: state.response,
    }
}

/// An address nothing listens on.
async fn closed_port_addr() -> std::net::SocketAddr {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    l.local_addr().expect("addr")
}

fn jwks_config(url: &str, min_refetch: Duration) -> JwtConfig {
    JwtConfig {
        algorithms: vec![Algorithm::RS256, Algorithm::ES256, Algorithm::EdDSA],
        jwks_url: Some(url.to_string()),
        jwks_min_refetch: min_refetch,
        ..JwtConfig::default()
    }
}

fn rsa_jwks_with_kid(kid: &str) -> String {
    let mut set: Value = serde_json::from_str(RSA_JWKS_JSON).expect("fixture json");
    set["keys"][0]["kid"] = json!(kid);
    set.to_string()
}

#[tokio::test]
async fn jwt_jwks_known_kid_accepted() {
    let server = jwks_server(RSA_JWKS_JSON, Duration::ZERO).await;
    let v = verifier(jwks_config(&server.url, Duration::from_secs(30))).await;
    assert_eq!(server.hits(), 1, "prefetch");
    let token = mint(Algorithm::RS256, &rsa_key(), &claims(), Some(RSA_JWKS_KID));
    assert_eq!(v.verify(&token).await.expect("known kid").sub, "user-1");
    // Without kid every JWKS key of the family is tried.
    v.verify(&mint(Algorithm::RS256, &rsa_key(), &claims(), None))
        .await
        .expect("no kid");
    // Claims are still validated for JWKS keys.
    let expired = json!({"sub": "u", "exp": now() - 10});
    let token = mint(Algorithm::RS256, &rsa_key(), &expired, Some(RSA_JWKS_KID));
    assert!(matches!(v.verify(&token).await, Err(JwtError::Expired)));
    assert_eq!(server.hits(), 1, "no refetch for known keys");
}

#[tokio::test]
async fn jwt_jwks_unknown_kid_refetches_once_per_window() {
    let server = jwks_server(RSA_JWKS_JSON, Duration::ZERO).await;
    let v = verifier(jwks_config(&server.url, Duration::from_secs(30))).await;
    assert_eq!(server.hits(), 1);

    let t1 = mint(Algorithm::RS256, &rsa_key(), &claims(), Some("unknown-1"));
    assert!(matches!(v.verify(&t1).await, Err(JwtError::UnknownKey)));
    assert_eq!(server.hits(), 2, "first unknown kid refetches");

    let t2 = mint(Algorithm::RS256, &rsa_key(), &claims(), Some("unknown-2"));
    assert!(matches!(v.verify(&t2).await, Err(JwtError::UnknownKey)));
    assert!(matches!(v.verify(&t1).await, Err(JwtError::UnknownKey)));
    assert_eq!(server.hits(), 2, "rate limited within the window");
}

#[tokio::test]
async fn jwt_jwks_rotation_picked_up_on_unknown_kid() {
    let server = jwks_server(rsa_jwks_with_kid("old"), Duration::ZERO).await;
    let v = verifier(jwks_config(&server.url, Duration::from_secs(30))).await;
    server.set(StatusCode::OK, rsa_jwks_with_kid("new"));
    let token = mint(Algorithm::RS256, &rsa_key(), &claims(), Some("new"));
    v.verify(&token).await.expect("rotated key fetched");
    assert_eq!(server.hits(), 2);
    // The old kid is gone from the replaced cache.
    let old = mint(Algorithm::RS256, &rsa_key(), &claims(), Some("old"));
    assert!(matches!(v.verify(&old).await, Err(JwtError::UnknownKey)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn jwt_jwks_concurrent_unknown_kid_single_fetch() {
    let server = jwks_server(rsa_jwks_with_kid("old"), Duration::from_millis(200)).await;
    let v = Arc::new(verifier(jwks_config(&server.url, Duration::from_secs(30))).await);
    assert_eq!(server.hits(), 1);
    server.set(StatusCode::OK, RSA_JWKS_JSON);
    let token = mint(Algorithm::RS256, &rsa_key(), &claims(), Some(RSA_JWKS_KID));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let v = Arc::clone(&v);
            let token = token.clone();
            tokio::spawn(async move { v.verify(&token).await })
        })
        .collect();
    for t in tasks {
        t.await
            .expect("join")
            .expect("all verify after the one fetch");
    }
    assert_eq!(server.hits(), 2, "one prefetch + one shared refetch");

    let unknown = mint(Algorithm::RS256, &rsa_key(), &claims(), Some("nope"));
    let tasks: Vec<_> = (0..32)
        .map(|_| {
            let v = Arc::clone(&v);
            let token = unknown.clone();
            tokio::spawn(async move { v.verify(&token).await })
        })
        .collect();
    for t in tasks {
        assert!(matches!(t.await.expect("join"), Err(JwtError::UnknownKey)));
    }
    assert_eq!(server.hits(), 2, "rate limit holds under concurrency");
}

#[tokio::test]
async fn jwt_jwks_bad_responses_are_errors_not_panics() {
    let token = mint(Algorithm::RS256, &rsa_key(), &claims(), Some(RSA_JWKS_KID));
    let huge = format!("{{\"keys\":[],\"pad\":\"{}\"}}", "x".repeat(JWKS_MAX_BYTES));
    let cases: Vec<(StatusCode, String)> = vec![
        (StatusCode::OK, "this is not json{".into()),
        (StatusCode::OK, "[]".into()),
        (StatusCode::OK, r#"{"keys":"nope"}"#.into()),
        (StatusCode::OK, r#"{"keys":[]}"#.into()),
        (
            StatusCode::OK,
            r#"{"keys":[{"kty":"RSA","kid":"x","n":"!!","e":"AQAB"}]}"#.into(),
        ),
        (
            StatusCode::OK,
            r#"{"keys":[{"kty":"oct","kid":"x","k":"c2VjcmV0"}]}"#.into(),
        ),
        (StatusCode::OK, huge),
        (StatusCode::INTERNAL_SERVER_ERROR, RSA_JWKS_JSON.into()),
    ];
    for (status, body) in cases {
        let server = jwks_server(body.clone(), Duration::ZERO).await;
        server.set(status, body.clone());
        let v = verifier(jwks_config(&server.url, Duration::ZERO)).await;
        let res = v.verify(&token).await;
        assert!(
            matches!(res, Err(JwtError::Jwks(_))),
            "{status} {body:.40}: {res:?}"
        );
        assert_eq!(server.hits(), 2, "prefetch + one refetch");
    }
    // Unreachable server.
    let url = format!("http://{}/jwks.json", closed_port_addr().await);
    let v = verifier(jwks_config(&url, Duration::ZERO)).await;
    assert!(matches!(v.verify(&token).await, Err(JwtError::Jwks(_))));
}

#[tokio::test]
async fn jwt_jwks_failed_refetch_keeps_cached_keys() {
    let server = jwks_server(RSA_JWKS_JSON, Duration::ZERO).await;
    let v = verifier(jwks_config(&server.url, Duration::ZERO)).await;
    server.set(StatusCode::OK, "garbage");
    let unknown = mint(Algorithm::RS256, &rsa_key(), &claims(), Some("unknown"));
    // The refetch fails; the error is reported but the cache survives it.
    assert!(v.verify(&unknown).await.is_err());
    let known = mint(Algorithm::RS256, &rsa_key(), &claims(), Some(RSA_JWKS_KID));
    v.verify(&known).await.expect("old cache still in use");
}

#[tokio::test]
async fn jwt_jwks_all_families_and_key_filtering() {
    let mut ec = Jwk::from_encoding_key(&ec_key(), Algorithm::ES256).expect("ec jwk");
    ec.common.key_id = Some("ec-1".into());
    let mut ed = Jwk::from_encoding_key(&ed_key(), Algorithm::EdDSA).expect("ed jwk");
    ed.common.key_id = Some("ed-1".into());
    // Same EC key labelled RS256: must be skipped, not used.
    let mut mislabelled = ec.clone();
    mislabelled.common.key_id = Some("mislabelled".into());
    mislabelled.common.key_algorithm = Some(jsonwebtoken::jwk::KeyAlgorithm::RS256);
    // An HMAC secret in the JWKS must never verify HS256 tokens.
    let oct = json!({"kty": "oct", "kid": "oct-1", "k": URL_SAFE_NO_PAD.encode(b"jwks-secret")});
    let mut set: Value = serde_json::from_str(RSA_JWKS_JSON).expect("fixture json");
    let keys = set["keys"].as_array_mut().expect("keys");
    keys.push(serde_json::to_value(&ec).expect("ser"));
    keys.push(serde_json::to_value(&ed).expect("ser"));
    keys.push(serde_json::to_value(&mislabelled).expect("ser"));
    keys.push(oct);
    keys.push(json!({"kty": "weird", "kid": "w"}));
    let server = jwks_server(set.to_string(), Duration::ZERO).await;

    let cfg = JwtConfig {
        algorithms: SUPPORTED_ALGORITHMS.to_vec(),
        hs_secret: Some(SECRET.to_vec()),
        ..jwks_config(&server.url, Duration::from_secs(30))
    };
    let v = verifier(cfg).await;
    v.verify(&mint(Algorithm::ES256, &ec_key(), &claims(), Some("ec-1")))
        .await
        .expect("ec");
    v.verify(&mint(Algorithm::EdDSA, &ed_key(), &claims(), Some("ed-1")))
        .await
        .expect("ed");
    v.verify(&mint(Algorithm::ES256, &ec_key(), &claims(), None))
        .await
        .expect("ec no kid");
    // kid selects the key: the EC key under the RSA kid is not consulted.
    let res = v
        .verify(&mint(
            Algorithm::ES256,
            &ec_key(),
            &claims(),
            Some(RSA_JWKS_KID),
        ))
        .await;
    assert!(matches!(res, Err(JwtError::UnknownKey)), "{res:?}");
    let res = v
        .verify(&mint(
            Algorithm::ES256,
            &ec_key(),
            &claims(),
            Some("mislabelled"),
        ))
        .await;
    assert!(res.is_err(), "{res:?}");
    let forged = mint(
        Algorithm::HS256,
        &EncodingKey::from_secret(b"jwks-secret"),
        &claims(),
        Some("oct-1"),
    );
    assert!(matches!(
        v.verify(&forged).await,
        Err(JwtError::BadSignature)
    ));
}

/// Content-Length is absent with chunked encoding: the cap must hold while streaming.
#[tokio::test]
async fn jwt_jwks_chunked_oversize_body_refused() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let hits = Arc::new(AtomicUsize::new(0));
    let server_hits = Arc::clone(&hits);
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            server_hits.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = sock.read(&mut buf).await;
                let head = "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n\
                            transfer-encoding: chunked\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, " ".repeat(64 * 1024));
                // 2 MiB total; the client should hang up after 1 MiB.
                for _ in 0..32 {
                    if sock.write_all(chunk.as_bytes()).await.is_err() {
                        return;
                    }
                }
                let _ = sock.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    let url = format!("http://{addr}/jwks.json");
    let v = verifier(jwks_config(&url, Duration::ZERO)).await;
    let token = mint(Algorithm::RS256, &rsa_key(), &claims(), Some(RSA_JWKS_KID));
    match v.verify(&token).await {
        Err(JwtError::Jwks(msg)) => assert!(msg.contains("exceeds"), "{msg}"),
        other => panic!("expected Jwks error, got {other:?}"),
    }
    assert_eq!(hits.load(Ordering::SeqCst), 2);
}
