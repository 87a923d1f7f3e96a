//! Ingress settings from `CHAT_*` (see README "Configuration").

use crate::config::{Common, ConfigError, Settings, Strings};
use crate::jwt::{JwtConfig, JwtField};
use std::net::SocketAddr;
use std::time::Duration;

/// Per-connection limits.
#[derive(Clone, Debug)]
pub struct Limits {
    /// Largest WebSocket message accepted; larger ones close the socket 1009.
    pub max_frame_bytes: usize,
    pub max_text_bytes: usize,
    /// Time for an unauthenticated socket to send `auth`.
    pub auth_timeout: Duration,
    /// Time for a client to send a whole HTTP request head (the WebSocket
    /// handshake included); a connection that takes longer is closed.
    pub head_timeout: Duration,
    /// Time for a caller, once authenticated, to send a whole request body.
    pub body_timeout: Duration,
    /// Sustained client frames per second, and the burst allowed above it.
    pub rate_per_sec: f64,
    pub rate_burst: f64,
    /// Frames queued to a socket before it counts as too slow and is closed 4008.
    pub outbound_queue: usize,
    /// Bytes queued to a socket (until written) before it counts as too
    /// slow and is closed 4008; `history` is refused past a quarter of it.
    pub outbound_queue_bytes: usize,
    /// `expiring` is sent this long before the token's `exp`.
    pub expiring_notice: Duration,
    /// WebSocket ping interval; a socket silent for two intervals is closed.
    pub ping_interval: Duration,
    /// Most messages a `join` with `since` replays; more means `recovered: false`.
    pub max_recover: u64,
    /// New messages are refused (`unavailable`) while deliveries run this far
    /// behind their append; zero turns it off.
    pub max_delivery_lag: Duration,
    pub max_rooms_per_connection: usize,
    /// Connections of every kind on the public listener (HTTP, WebSocket
    /// before and after authentication); lowered to fit the descriptor limit.
    pub max_connections: usize,
}

#[derive(Clone, Debug)]
pub struct IngressSettings {
    pub listen: SocketAddr,
    pub common: Common,
    /// Names this node's presence entries.
    pub node_id: String,
    pub jwt: JwtConfig,
    /// Server-to-server keys for the admin API.
    /// Redacted in Debug (`secrecy`).
    pub api_keys: Vec<secrecy::SecretString>,
    pub require_session: bool,
    /// Origins allowed to open a socket from a browser; empty = same host only; `*` = any.
    pub allowed_origins: Vec<String>,
    pub limits: Limits,
    /// How often sessions are checked for expiry and slid on activity.
    pub session_sweep: Duration,
    /// How long a drain waits for sockets to flush before giving up.
    pub shutdown_grace: Duration,
    /// The summary job queue's Redis (standalone even under a Redis Cluster).
    pub jobs_redis_url: String,
    /// Serve `POST /dev/token` (the local stack, or `CHAT_DEV_TOKENS=1`;
    /// never in production: it signs a token for any name).
    pub dev_token_secret: Option<Vec<u8>>,
    /// Serve dev tokens to any peer, not only loopback (`CHAT_DEV_TOKENS_PUBLIC`).
    pub dev_tokens_public: bool,
    /// The archive (MongoDB) history reads continue in; `None`: Redis only.
    pub mongodb: Option<crate::config::MongoSettings>,
    /// A second listener for `/metrics`, `/healthz` and `/readyz`, for
    /// scrapers and probes on a private network.
    pub metrics_listen: Option<SocketAddr>,
    /// Whether the public listener serves `/metrics` too (the contract's
    /// default); production turns it off and scrapes `metrics_listen`.
    pub public_metrics: bool,
    /// How long a deleted session's tokens stay refused; a token seen later
    /// with a longer `exp` extends it.
    pub revoked_session_ttl: Duration,
}

impl IngressSettings {
    pub fn from_strings(src: &dyn Strings) -> Result<Self, ConfigError> {
        let mut s = Settings::new(src);
        let common = Common::read(&mut s);
        let listen = s.parse("CHAT_LISTEN", SocketAddr::from(([127, 0, 0, 1], 8080)));
        let node_id = s
            .opt("CHAT_NODE_ID")
            .unwrap_or_else(|| format!("node-{:08x}", rand::random::<u32>()));
        let jwt = read_jwt(&mut s);
        let api_keys = s.list("CHAT_API_KEYS");
        if api_keys.iter().any(|k| k.len() < 16) {
            s.error("CHAT_API_KEYS: every key must be at least 16 characters");
        }
        let limits = Limits {
            max_frame_bytes: s.parse("CHAT_MAX_FRAME_BYTES", 64 * 1024),
            max_text_bytes: s.parse("CHAT_MAX_TEXT_BYTES", 4096),
            auth_timeout: s.duration("CHAT_AUTH_TIMEOUT", Duration::from_secs(5)),
            head_timeout: s.duration("CHAT_HEAD_TIMEOUT", Duration::from_secs(10)),
            body_timeout: s.duration("CHAT_BODY_TIMEOUT", Duration::from_secs(10)),
            rate_per_sec: s.parse("CHAT_RATE_PER_SEC", 50.0),
            rate_burst: s.parse("CHAT_RATE_BURST", 100.0),
            outbound_queue: s.parse("CHAT_OUTBOUND_QUEUE", 1024),
            outbound_queue_bytes: s.parse("CHAT_OUTBOUND_QUEUE_BYTES", 4 << 20),
            expiring_notice: s.duration("CHAT_EXPIRING_NOTICE", Duration::from_secs(60)),
            ping_interval: s.duration("CHAT_PING_INTERVAL", Duration::from_secs(30)),
            max_recover: s.parse("CHAT_MAX_RECOVER", 10_000),
            max_delivery_lag: s.duration("CHAT_MAX_DELIVERY_LAG", Duration::from_secs(2)),
            max_rooms_per_connection: s.parse("CHAT_MAX_ROOMS_PER_CONNECTION", 100),
            max_connections: s.parse("CHAT_MAX_CONNECTIONS", 100_000),
        };
        if limits.max_text_bytes == 0 || limits.max_text_bytes > limits.max_frame_bytes {
            s.error("CHAT_MAX_TEXT_BYTES: must be 1 to CHAT_MAX_FRAME_BYTES");
        }
        if limits.rate_per_sec <= 0.0 || limits.rate_burst < 1.0 {
            s.error("CHAT_RATE_PER_SEC / CHAT_RATE_BURST: must be positive");
        }
        if limits.outbound_queue < 16 {
            s.error("CHAT_OUTBOUND_QUEUE: must be at least 16");
        }
        // A history page of 100 messages of the largest text must fit.
        if limits.outbound_queue_bytes < 64 * 1024 {
            s.error("CHAT_OUTBOUND_QUEUE_BYTES: must be at least 65536");
        }
        if limits.max_connections == 0 {
            s.error("CHAT_MAX_CONNECTIONS: must be at least 1");
        }
        if limits.ping_interval.is_zero()
            || limits.auth_timeout.is_zero()
            || limits.head_timeout.is_zero()
            || limits.body_timeout.is_zero()
        {
            s.error("CHAT_PING_INTERVAL / CHAT_AUTH_TIMEOUT / CHAT_HEAD_TIMEOUT / CHAT_BODY_TIMEOUT: must be more than zero");
        }
        let jobs_redis_url = common.read_jobs_url(&mut s, false);
        let mongodb = common.read_mongodb(&mut s, false);
        let shutdown_grace = common.shutdown_grace;
        let session_sweep = s.duration("CHAT_SESSION_SWEEP", Duration::from_millis(500));
        if session_sweep.is_zero() {
            s.error("CHAT_SESSION_SWEEP: must be more than zero");
        }
        // Dev tokens sign with the HS256 secret; refusing them without one
        // keeps a misconfigured node from minting tokens nobody can verify.
        let dev_tokens = s.bool("CHAT_DEV_TOKENS", false);
        let dev_token_secret = match (&jwt.hs_secret, dev_tokens) {
            (Some(secret), true) => Some(secret.clone()),
            (None, true) => {
                s.error("CHAT_DEV_TOKENS: needs CHAT_JWT_SECRET");
                None
            }
            _ => None,
        };
        let metrics_listen = s
            .opt("CHAT_METRICS_LISTEN")
            .filter(|v| !v.trim().is_empty())
            .and_then(|v| match v.trim().parse::<SocketAddr>() {
                Ok(a) => Some(a),
                Err(_) => {
                    s.error(format!(
                        "CHAT_METRICS_LISTEN={v:?}: expected host:port, e.g. 10.0.0.5:9100"
                    ));
                    None
                }
            });
        let revoked_session_ttl = crate::sessions::revoked_session_ttl(&mut s);
        let settings = Self {
            listen,
            common,
            node_id,
            jwt,
            api_keys: api_keys.into_iter().map(Into::into).collect(),
            require_session: s.bool("CHAT_REQUIRE_SESSION", false),
            allowed_origins: s.list("CHAT_ALLOWED_ORIGINS"),
            limits,
            session_sweep,
            jobs_redis_url,
            shutdown_grace,
            dev_token_secret,
            dev_tokens_public: s.bool("CHAT_DEV_TOKENS_PUBLIC", false),
            mongodb,
            metrics_listen,
            public_metrics: s.bool("CHAT_PUBLIC_METRICS", true),
            revoked_session_ttl,
        };
        s.finish()?;
        Ok(settings)
    }
}

/// The JWT settings, and every problem the ingress would refuse them for
/// at start (the verifier's own checks, each naming its variable). Nothing
/// is fetched: `CHAT_JWKS_URL` is only checked to be an http(s) URL.
fn read_jwt(s: &mut Settings<'_>) -> JwtConfig {
    let mut cfg = JwtConfig::default();
    let algs = s.list("CHAT_JWT_ALGORITHMS");
    let mut bad_algs = false;
    if !algs.is_empty() {
        cfg.algorithms.clear();
        for a in algs {
            match a.parse::<jsonwebtoken::Algorithm>() {
                Ok(alg) if crate::jwt::SUPPORTED_ALGORITHMS.contains(&alg) => {
                    cfg.algorithms.push(alg)
                }
                _ => {
                    bad_algs = true;
                    s.error(format!(
                        "CHAT_JWT_ALGORITHMS: {a:?} is not one of HS256, RS256, ES256, EdDSA"
                    ))
                }
            }
        }
    }
    cfg.hs_secret = s.opt("CHAT_JWT_SECRET").map(String::into_bytes);
    // The files read, in the order of `cfg.public_key_pems`.
    let mut pem_paths = Vec::new();
    for path in s.list("CHAT_JWT_PUBLIC_KEYS") {
        match std::fs::read(&path) {
            Ok(pem) => {
                cfg.public_key_pems.push(pem);
                pem_paths.push(path);
            }
            Err(e) => s.error(format!("CHAT_JWT_PUBLIC_KEYS: {path}: {e}")),
        }
    }
    cfg.jwks_url = s.opt("CHAT_JWKS_URL");
    cfg.issuer = s.opt("CHAT_JWT_ISSUER");
    let aud = s.list("CHAT_JWT_AUDIENCE");
    cfg.audience = (!aud.is_empty()).then_some(aud);
    cfg.leeway_secs = s.parse("CHAT_JWT_LEEWAY_SECS", 0);

    let name = |field: JwtField| match field {
        JwtField::Algorithms => "CHAT_JWT_ALGORITHMS".to_owned(),
        JwtField::HsSecret => "CHAT_JWT_SECRET".to_owned(),
        JwtField::PublicKeyPems => "CHAT_JWT_PUBLIC_KEYS".to_owned(),
        JwtField::PublicKeyPem(i) => format!(
            "CHAT_JWT_PUBLIC_KEYS: {}",
            pem_paths.get(i).map_or("?", String::as_str)
        ),
        JwtField::JwksUrl => "CHAT_JWKS_URL".to_owned(),
        JwtField::Issuer => "CHAT_JWT_ISSUER".to_owned(),
        JwtField::Audience => "CHAT_JWT_AUDIENCE".to_owned(),
        JwtField::LeewaySecs => "CHAT_JWT_LEEWAY_SECS".to_owned(),
    };
    if let Err(problems) = cfg.validate_named(&name) {
        for p in problems {
            // "No algorithms" only repeats the bad names reported above.
            if bad_algs && p.field == JwtField::Algorithms && cfg.algorithms.is_empty() {
                continue;
            }
            s.error(p.message);
        }
    }
    cfg
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    const SECRET: &str = "a-secret-of-some-length-0123456789";
    const RSA_PUBLIC_PEM: &str = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../core/tests/fixtures/jwt/rsa_public.pem"
    );
    /// A file that exists but is no PEM key.
    const NOT_A_PEM: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml");

    fn errors(pairs: &[(&str, &str)]) -> Vec<String> {
        let src: HashMap<&str, &str> = pairs.iter().copied().collect();
        match IngressSettings::from_strings(&src) {
            Ok(_) => Vec::new(),
            Err(ConfigError::Invalid(e)) => e,
            Err(e) => vec![e.to_string()],
        }
    }

    #[test]
    fn jwt_settings_the_verifier_would_refuse_are_errors() {
        // Each alone: one error, naming its variable.
        for (pairs, var) in [
            (&[][..], "CHAT_JWT_SECRET: not set"),
            (
                &[
                    ("CHAT_JWT_SECRET", SECRET),
                    ("CHAT_JWT_ALGORITHMS", "RS256"),
                ][..],
                "CHAT_JWT_ALGORITHMS: RS256 is allowed but has no key",
            ),
            (
                &[
                    ("CHAT_JWT_ALGORITHMS", "RS256"),
                    ("CHAT_JWT_PUBLIC_KEYS", NOT_A_PEM),
                ][..],
                "CHAT_JWT_PUBLIC_KEYS: ",
            ),
            (
                &[
                    ("CHAT_JWT_SECRET", SECRET),
                    ("CHAT_JWT_LEEWAY_SECS", "7200"),
                ][..],
                "CHAT_JWT_LEEWAY_SECS: 7200 exceeds the maximum of 3600",
            ),
            (
                &[
                    ("CHAT_JWT_SECRET", SECRET),
                    ("CHAT_JWKS_URL", "ftp://auth.example/jwks.json"),
                ][..],
                "CHAT_JWKS_URL: must be an http or https URL",
            ),
            (
                &[("CHAT_JWT_SECRET", SECRET), ("CHAT_JWKS_URL", "not a url")][..],
                "CHAT_JWKS_URL: not a valid URL",
            ),
        ] {
            let errors = errors(pairs);
            assert_eq!(errors.len(), 1, "{pairs:?}: {errors:?}");
            assert!(errors[0].starts_with(var), "{pairs:?}: {errors:?}");
        }
        let bad_pem = errors(&[
            ("CHAT_JWT_ALGORITHMS", "RS256"),
            ("CHAT_JWT_PUBLIC_KEYS", NOT_A_PEM),
        ]);
        assert!(
            bad_pem[0].contains(&format!("{NOT_A_PEM} is not a PEM")),
            "the file is named: {bad_pem:?}"
        );

        // All together: every one reported, not just the first.
        let all = errors(&[
            ("CHAT_JWT_ALGORITHMS", "HS256,ES256"),
            (
                "CHAT_JWT_PUBLIC_KEYS",
                &format!("{RSA_PUBLIC_PEM},{NOT_A_PEM}"),
            ),
            ("CHAT_JWT_LEEWAY_SECS", "7200"),
            ("CHAT_JWKS_URL", "ftp://auth.example/jwks.json"),
        ]);
        for var in [
            "CHAT_JWT_SECRET:",
            "CHAT_JWT_PUBLIC_KEYS:",
            "CHAT_JWT_LEEWAY_SECS:",
            "CHAT_JWKS_URL:",
        ] {
            assert!(all.iter().any(|e| e.starts_with(var)), "{var}: {all:?}");
        }
        assert_eq!(all.len(), 4, "{all:?}");

        // Bad algorithm names are reported once, not again as "none allowed".
        let algs = errors(&[
            ("CHAT_JWT_SECRET", SECRET),
            ("CHAT_JWT_ALGORITHMS", "HS512"),
        ]);
        assert_eq!(algs.len(), 1, "{algs:?}");
    }

    #[test]
    fn good_jwt_settings_pass() {
        for pairs in [
            &[("CHAT_JWT_SECRET", SECRET)][..],
            &[
                ("CHAT_JWT_ALGORITHMS", "RS256"),
                ("CHAT_JWT_PUBLIC_KEYS", RSA_PUBLIC_PEM),
                ("CHAT_JWT_LEEWAY_SECS", "3600"),
            ][..],
            &[
                ("CHAT_JWT_ALGORITHMS", "RS256,ES256"),
                ("CHAT_JWKS_URL", "https://auth.example/jwks.json"),
            ][..],
        ] {
            let errors = errors(pairs);
            assert!(errors.is_empty(), "{pairs:?}: {errors:?}");
        }
    }

    #[test]
    fn debug_output_shows_no_secret() {
        let key = "an-admin-key-that-must-stay-hidden";
        let src: HashMap<&str, &str> = [("CHAT_JWT_SECRET", SECRET), ("CHAT_API_KEYS", key)]
            .into_iter()
            .collect();
        let s = IngressSettings::from_strings(&src).expect("valid settings");
        let shown = format!("{s:?}");
        assert!(!shown.contains(key) && !shown.contains(SECRET), "{shown}");
        assert_eq!(s.api_keys.len(), 1);
    }
}
