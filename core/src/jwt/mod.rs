//! Verification of JWTs issued by the customer's auth server.
//!
//! Supported algorithms: HS256, RS256, ES256 and EdDSA (Ed25519). The
//! allowed set comes from configuration only; the token's `alg` merely has
//! to be a member of it. Keys come from a shared secret (HS256), PEM public
//! keys, and/or a JWKS URL cached by `kid`.

mod header;
mod jwks;
mod keys;
#[doc(hidden)]
/// Public test key pairs: compiled for tests only, never into a service.
#[cfg(any(test, feature = "testkeys"))]
pub mod testkeys;
#[cfg(test)]
mod tests;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, Validation};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

pub use header::MAX_TOKEN_BYTES;
pub use jwks::{JWKS_MAX_BYTES, JWKS_TIMEOUT};

use jwks::JwksSource;
use keys::VerifyKey;

/// Default for [`JwtConfig::jwks_min_refetch`].
pub const DEFAULT_JWKS_MIN_REFETCH: Duration = Duration::from_secs(30);
/// Largest accepted [`JwtConfig::leeway_secs`]; also keeps jsonwebtoken's
/// `now - leeway` arithmetic far from underflow.
pub const MAX_LEEWAY_SECS: u64 = 3600;

/// Algorithms this module can verify (one per key family).
pub const SUPPORTED_ALGORITHMS: [Algorithm; 4] = [
    Algorithm::HS256,
    Algorithm::RS256,
    Algorithm::ES256,
    Algorithm::EdDSA,
];

/// How tokens are verified. See [`Verifier::new`] for the validation rules.
#[derive(Clone)]
pub struct JwtConfig {
    /// Allowed algorithms; from configuration only, never from the token.
    pub algorithms: Vec<Algorithm>,
    /// HS256 shared secret.
    pub hs_secret: Option<Vec<u8>>,
    /// PEM contents of RSA, EC P-256 or Ed25519 public keys (family detected).
    pub public_key_pems: Vec<Vec<u8>>,
    /// JWKS endpoint, fetched with reqwest and cached by `kid`.
    pub jwks_url: Option<String>,
    /// Minimum interval between JWKS fetches triggered by unknown `kid`s.
    pub jwks_min_refetch: Duration,
    /// When set, `iss` is required and must match.
    pub issuer: Option<String>,
    /// When set, `aud` is required and must contain one of these.
    pub audience: Option<Vec<String>>,
    /// Clock skew tolerated for `exp`/`nbf`, in seconds.
    pub leeway_secs: u64,
}

impl Default for JwtConfig {
    fn default() -> Self {
        Self {
            algorithms: vec![Algorithm::HS256],
            hs_secret: None,
            public_key_pems: Vec::new(),
            jwks_url: None,
            jwks_min_refetch: DEFAULT_JWKS_MIN_REFETCH,
            issuer: None,
            audience: None,
            leeway_secs: 0,
        }
    }
}

// Hand-written so the secret never reaches logs.
impl fmt::Debug for JwtConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtConfig")
            .field("algorithms", &self.algorithms)
            .field("hs_secret", &self.hs_secret.as_ref().map(|_| "[redacted]"))
            .field("public_key_pems", &self.public_key_pems.len())
            .field("jwks_url", &self.jwks_url.as_ref().map(|_| "[set]"))
            .field("jwks_min_refetch", &self.jwks_min_refetch)
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("leeway_secs", &self.leeway_secs)
            .finish()
    }
}

/// The claims the chat backend uses. `Serialize` is there so tests can mint
/// tokens from the same type.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rooms: Option<Vec<String>>,
}

/// Why a token (or the configuration) was refused. Messages never contain
/// the token, the secret or key material.
#[derive(thiserror::Error, Debug)]
pub enum JwtError {
    #[error("token is larger than {MAX_TOKEN_BYTES} bytes")]
    TooLarge,
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// Carries only a known algorithm name, `none` or `unrecognized`.
    #[error("token algorithm `{0}` is not allowed")]
    AlgorithmNotAllowed(String),
    #[error("token header has a `crit` parameter, which is not supported")]
    CritHeader,
    #[error("no verification key matches the token")]
    UnknownKey,
    #[error("token signature is invalid")]
    BadSignature,
    #[error("token has expired")]
    Expired,
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    #[error("token issuer does not match")]
    BadIssuer,
    #[error("token audience does not match")]
    BadAudience,
    #[error("token is missing required claim `{0}`")]
    MissingClaim(&'static str),
    #[error("token claim `{0}` has an invalid value")]
    InvalidClaim(&'static str),
    #[error("JWKS error: {0}")]
    Jwks(String),
    #[error("invalid JWT configuration: {0}")]
    Config(String),
}

/// Verifies tokens against a [`JwtConfig`]. `Send + Sync`; share it via `Arc`.
pub struct Verifier {
    allowed: Vec<Algorithm>,
    /// One `Validation` per allowed algorithm: jsonwebtoken refuses a
    /// `Validation` whose algorithms span key families.
    validations: Vec<(Algorithm, Validation)>,
    static_keys: Vec<VerifyKey>,
    jwks: Option<Arc<JwksSource>>,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("allowed", &self.allowed)
            .field("static_keys", &self.static_keys.len())
            .field("jwks", &self.jwks.is_some())
            .finish()
    }
}

/// A [`JwtConfig`] field, so that a problem can be reported under the name
/// the caller knows it by (the ingress: its `CHAT_JWT_*` variable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtField {
    Algorithms,
    HsSecret,
    /// The public keys as a whole.
    PublicKeyPems,
    /// One public key, by index.
    PublicKeyPem(usize),
    JwksUrl,
    Issuer,
    Audience,
    LeewaySecs,
}

impl JwtField {
    /// The field's name in [`JwtConfig`], e.g. `public_key_pems[1]`.
    pub fn config_name(self) -> String {
        match self {
            JwtField::Algorithms => "algorithms".into(),
            JwtField::HsSecret => "hs_secret".into(),
            JwtField::PublicKeyPems => "public_key_pems".into(),
            JwtField::PublicKeyPem(i) => format!("public_key_pems[{i}]"),
            JwtField::JwksUrl => "jwks_url".into(),
            JwtField::Issuer => "issuer".into(),
            JwtField::Audience => "audience".into(),
            JwtField::LeewaySecs => "leeway_secs".into(),
        }
    }
}

/// One thing wrong with a [`JwtConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JwtProblem {
    /// The field at fault.
    pub field: JwtField,
    /// The whole message, starting with the field's name. Never contains
    /// the secret or key material.
    pub message: String,
}

/// What the static checks produce: the keys and algorithms to verify with,
/// and what is wrong.
struct Checked {
    allowed: Vec<Algorithm>,
    static_keys: Vec<VerifyKey>,
    problems: Vec<JwtProblem>,
    /// Worth a log line, not a refusal.
    warnings: Vec<String>,
}

impl JwtConfig {
    /// Every problem [`Verifier::new`] would refuse this configuration for,
    /// fields named as in [`JwtConfig`]. Fetches nothing: a JWKS URL is only
    /// checked to be an http(s) URL.
    pub fn validate(&self) -> Result<(), Vec<JwtProblem>> {
        self.validate_named(&JwtField::config_name)
    }

    /// [`Self::validate`] with the fields named by `name` (in the messages
    /// too, where one field's problem mentions another).
    ///
    /// Problems: an empty list of algorithms or an unsupported one; an
    /// allowed algorithm without a key source (HS256 needs `hs_secret`;
    /// RS256/ES256/EdDSA need a PEM of that family or `jwks_url`); an empty
    /// `hs_secret`; a PEM that does not parse (named by index); a JWKS URL
    /// that is not an http(s) URL; an empty issuer or audience; leeway above
    /// [`MAX_LEEWAY_SECS`].
    pub fn validate_named(&self, name: &dyn Fn(JwtField) -> String) -> Result<(), Vec<JwtProblem>> {
        let problems = self.check(name).problems;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }

    fn check(&self, name: &dyn Fn(JwtField) -> String) -> Checked {
        install_crypto_provider();
        let mut problems = Vec::new();
        let mut warnings = Vec::new();
        let mut problem = |field: JwtField, message: String| {
            problems.push(JwtProblem { field, message });
        };

        let mut allowed: Vec<Algorithm> = Vec::new();
        for alg in &self.algorithms {
            if !SUPPORTED_ALGORITHMS.contains(alg) {
                problem(
                    JwtField::Algorithms,
                    format!(
                        "{}: algorithm {alg:?} is not supported (supported: HS256, RS256, ES256, EdDSA)",
                        name(JwtField::Algorithms)
                    ),
                );
            } else if !allowed.contains(alg) {
                allowed.push(*alg);
            }
        }
        if self.algorithms.is_empty() {
            problem(
                JwtField::Algorithms,
                format!("{}: no algorithms allowed", name(JwtField::Algorithms)),
            );
        }
        if self.leeway_secs > MAX_LEEWAY_SECS {
            problem(
                JwtField::LeewaySecs,
                format!(
                    "{}: {} exceeds the maximum of {MAX_LEEWAY_SECS}",
                    name(JwtField::LeewaySecs),
                    self.leeway_secs
                ),
            );
        }
        if self.issuer.as_deref().is_some_and(str::is_empty) {
            problem(
                JwtField::Issuer,
                format!("{}: is set but empty", name(JwtField::Issuer)),
            );
        }
        if let Some(aud) = &self.audience
            && (aud.is_empty() || aud.iter().any(String::is_empty))
        {
            problem(
                JwtField::Audience,
                format!(
                    "{}: is set but empty or contains an empty value",
                    name(JwtField::Audience)
                ),
            );
        }

        let mut static_keys = Vec::new();
        let mut hs_given = false;
        match &self.hs_secret {
            Some(secret) if allowed.contains(&Algorithm::HS256) => {
                hs_given = true;
                if secret.is_empty() {
                    problem(
                        JwtField::HsSecret,
                        format!("{}: is empty", name(JwtField::HsSecret)),
                    );
                } else {
                    if secret.len() < 32 {
                        warnings.push(format!(
                            "{} is shorter than 32 bytes; use a longer secret",
                            name(JwtField::HsSecret)
                        ));
                    }
                    static_keys.push(VerifyKey {
                        family: AlgorithmFamily::Hmac,
                        alg: Some(Algorithm::HS256),
                        key: DecodingKey::from_secret(secret),
                    });
                }
            }
            Some(_) => warnings.push(format!(
                "{} is set but HS256 is not allowed; ignoring it",
                name(JwtField::HsSecret)
            )),
            None => {}
        }
        let mut bad_pem = false;
        for (i, pem) in self.public_key_pems.iter().enumerate() {
            match keys::from_pem(pem) {
                Ok(key) if allowed.iter().any(|a| key.accepts(*a)) => static_keys.push(key),
                Ok(key) => warnings.push(format!(
                    "{}: the {:?} key's algorithm is not allowed; ignoring it",
                    name(JwtField::PublicKeyPem(i)),
                    key.family
                )),
                Err(why) => {
                    bad_pem = true;
                    problem(
                        JwtField::PublicKeyPem(i),
                        format!("{} {why}", name(JwtField::PublicKeyPem(i))),
                    );
                }
            }
        }

        if let Some(url) = &self.jwks_url {
            match reqwest::Url::parse(url) {
                Err(e) => problem(
                    JwtField::JwksUrl,
                    format!("{}: not a valid URL: {e}", name(JwtField::JwksUrl)),
                ),
                Ok(parsed) if !matches!(parsed.scheme(), "http" | "https") => problem(
                    JwtField::JwksUrl,
                    format!(
                        "{}: must be an http or https URL, not {}",
                        name(JwtField::JwksUrl),
                        parsed.scheme()
                    ),
                ),
                Ok(_) => {}
            }
        }

        for alg in &allowed {
            if static_keys.iter().any(|k| k.accepts(*alg)) {
                continue;
            }
            if *alg == Algorithm::HS256 {
                // JWKS never supplies shared secrets, so HS256 needs hs_secret.
                if !hs_given {
                    problem(
                        JwtField::HsSecret,
                        format!(
                            "{}: not set, but HS256 is allowed ({}) and has no other key",
                            name(JwtField::HsSecret),
                            name(JwtField::Algorithms)
                        ),
                    );
                }
            } else if self.jwks_url.is_none() && !bad_pem {
                // (A bad PEM or URL is reported already; it may be the key meant.)
                let family = match alg {
                    Algorithm::RS256 => "an RSA",
                    Algorithm::ES256 => "an EC P-256",
                    _ => "an Ed25519",
                };
                problem(
                    JwtField::Algorithms,
                    format!(
                        "{}: {alg:?} is allowed but has no key: set {} to {family} public key, or {}",
                        name(JwtField::Algorithms),
                        name(JwtField::PublicKeyPems),
                        name(JwtField::JwksUrl)
                    ),
                );
            }
        }

        Checked {
            allowed,
            static_keys,
            problems,
            warnings,
        }
    }
}

impl Verifier {
    /// Validates `cfg` (every problem of [`JwtConfig::validate`], joined
    /// into one [`JwtError::Config`]) and prepares keys. A failed JWKS
    /// prefetch is only logged.
    pub async fn new(cfg: JwtConfig) -> Result<Verifier, JwtError> {
        let Checked {
            allowed,
            static_keys,
            problems,
            warnings,
        } = cfg.check(&JwtField::config_name);
        if !problems.is_empty() {
            let all: Vec<String> = problems.into_iter().map(|p| p.message).collect();
            return Err(JwtError::Config(all.join("; ")));
        }
        for w in warnings {
            tracing::warn!("{w}");
        }
        let jwks = match &cfg.jwks_url {
            None => None,
            Some(url) => Some(Arc::new(JwksSource::new(
                url.clone(),
                cfg.jwks_min_refetch,
            )?)),
        };

        let validations = allowed
            .iter()
            .map(|alg| (*alg, validation_for(*alg, &cfg)))
            .collect();

        if let Some(source) = &jwks
            && let Err(e) = source.prefetch().await
        {
            tracing::warn!(error = %e, "JWKS prefetch failed; will retry on demand");
        }

        Ok(Verifier {
            allowed,
            validations,
            static_keys,
            jwks,
        })
    }

    /// Verifies `token` and returns its claims.
    pub async fn verify(&self, token: &str) -> Result<Claims, JwtError> {
        let header = header::parse(token, &self.allowed)?;
        let alg = header.alg;
        let kid = header.kid.as_deref();
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == alg) else {
            return Err(JwtError::AlgorithmNotAllowed(format!("{alg:?}")));
        };
        let mut any_key = false;

        // 1. Cached JWKS keys (by kid, or all of the family without kid).
        let snapshot = self.jwks.as_ref().map(|j| j.snapshot());
        if let Some(cache) = &snapshot {
            let candidates = cache.candidates(kid, alg);
            any_key |= !candidates.is_empty();
            if let Some(claims) = try_keys(token, candidates, validation)? {
                return Ok(claims);
            }
        }

        // 2. Configured keys; they have no kid, so a token's kid does not
        //    rule them out (issuers often set kid even for a single key).
        let statics: Vec<&VerifyKey> = self.static_keys.iter().filter(|k| k.accepts(alg)).collect();
        any_key |= !statics.is_empty();
        if let Some(claims) = try_keys(token, statics, validation)? {
            return Ok(claims);
        }

        // 3. A kid the JWKS does not know (or an empty cache) may mean the
        //    issuer rotated keys: re-fetch, rate limited.
        if let (Some(source), Some(cache)) = (&self.jwks, &snapshot) {
            let missing = match kid {
                Some(kid) => !cache.has_kid(kid),
                None => cache.is_empty(),
            };
            if missing && alg != Algorithm::HS256 {
                match source.refresh_after_miss(cache).await {
                    Ok(Some(fresh)) => {
                        let candidates = fresh.candidates(kid, alg);
                        any_key |= !candidates.is_empty();
                        if let Some(claims) = try_keys(token, candidates, validation)? {
                            return Ok(claims);
                        }
                    }
                    Ok(None) => {}
                    Err(e) if !any_key => return Err(e),
                    Err(_) => {}
                }
            }
        }

        Err(if any_key {
            JwtError::BadSignature
        } else {
            JwtError::UnknownKey
        })
    }
}

/// Selects the aws-lc-rs backend for jsonwebtoken. jsonwebtoken picks it on
/// its own when it is the only backend feature, but panics on first use if
/// another crate in the graph also enables `rust_crypto`; installing
/// explicitly avoids that. Idempotent: later calls (or an earlier
/// automatic pick) just leave the process default in place.
fn install_crypto_provider() {
    let _ = jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER.install_default();
}

fn validation_for(alg: Algorithm, cfg: &JwtConfig) -> Validation {
    let mut v = Validation::new(alg);
    // jsonwebtoken defaults: leeway 60, nbf unchecked, only exp required.
    v.leeway = cfg.leeway_secs;
    v.validate_exp = true;
    v.validate_nbf = true;
    let mut required = vec!["exp", "sub"];
    if let Some(iss) = &cfg.issuer {
        v.set_issuer(&[iss]);
        required.push("iss");
    }
    match &cfg.audience {
        Some(aud) => {
            v.set_audience(aud);
            v.validate_aud = true;
            required.push("aud");
        }
        // jsonwebtoken would otherwise reject every token carrying `aud`.
        None => v.validate_aud = false,
    }
    v.set_required_spec_claims(&required);
    v
}

/// Tries each key; `Ok(None)` when no key produced a valid signature. Any
/// other error is final: it is either about the token's shape (same for all
/// keys) or about claims of a correctly signed token.
fn try_keys(
    token: &str,
    keys: Vec<&VerifyKey>,
    validation: &Validation,
) -> Result<Option<Claims>, JwtError> {
    for key in keys {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, validation) {
            Ok(data) => return extract_claims(data.claims).map(Some),
            Err(e) => match map_error(&e) {
                JwtError::BadSignature => continue,
                other => return Err(other),
            },
        }
    }
    Ok(None)
}

/// Claims are decoded as a JSON map and converted here, after
/// jsonwebtoken's checks, so that a missing `sub`/`exp` comes out as
/// `MissingClaim` rather than as a serde error.
fn extract_claims(mut map: Map<String, Value>) -> Result<Claims, JwtError> {
    let sub = match map.remove("sub") {
        Some(Value::String(s)) if !s.is_empty() => s,
        Some(Value::String(_)) => return Err(JwtError::InvalidClaim("sub")),
        _ => return Err(JwtError::MissingClaim("sub")),
    };
    // jsonwebtoken accepts integer or float NumericDate; mirror that.
    let exp = match map.get("exp") {
        None | Some(Value::Null) => return Err(JwtError::MissingClaim("exp")),
        Some(Value::Number(n)) => match (n.as_u64(), n.as_f64()) {
            (Some(v), _) => v,
            (None, Some(f)) if f.is_finite() && f >= 0.0 && f < u64::MAX as f64 => f.round() as u64,
            _ => return Err(JwtError::InvalidClaim("exp")),
        },
        Some(_) => return Err(JwtError::InvalidClaim("exp")),
    };
    let sid = match map.remove("sid") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => return Err(JwtError::InvalidClaim("sid")),
    };
    let rooms = match map.remove("rooms") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => Some(
            items
                .into_iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s),
                    _ => Err(JwtError::InvalidClaim("rooms")),
                })
                .collect::<Result<Vec<_>, _>>()?,
        ),
        Some(_) => return Err(JwtError::InvalidClaim("rooms")),
    };
    Ok(Claims {
        sub,
        exp,
        sid,
        rooms,
    })
}

fn map_error(e: &jsonwebtoken::errors::Error) -> JwtError {
    match e.kind() {
        ErrorKind::InvalidSignature
        // Key/provider problems mean "this key cannot verify it": try the next.
        | ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat
        | ErrorKind::Signing(_)
        | ErrorKind::Provider(_) => JwtError::BadSignature,
        ErrorKind::ExpiredSignature => JwtError::Expired,
        ErrorKind::ImmatureSignature => JwtError::NotYetValid,
        ErrorKind::InvalidIssuer => JwtError::BadIssuer,
        ErrorKind::InvalidAudience => JwtError::BadAudience,
        ErrorKind::InvalidSubject => JwtError::InvalidClaim("sub"),
        ErrorKind::MissingRequiredClaim(c) => JwtError::MissingClaim(claim_name(c)),
        ErrorKind::InvalidClaimFormat(c) => JwtError::InvalidClaim(claim_name(c)),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm
        | ErrorKind::InvalidAlgorithmName => JwtError::AlgorithmNotAllowed("unrecognized".into()),
        ErrorKind::Base64(_) => JwtError::Malformed("invalid base64url"),
        ErrorKind::Json(_) => JwtError::Malformed("invalid JSON"),
        ErrorKind::Utf8(_) => JwtError::Malformed("invalid UTF-8"),
        _ => JwtError::Malformed("token could not be decoded"),
    }
}

fn claim_name(name: &str) -> &'static str {
    match name {
        "exp" => "exp",
        "nbf" => "nbf",
        "sub" => "sub",
        "iss" => "iss",
        "aud" => "aud",
        _ => "unknown",
    }
}
