//! JWKS fetching and the kid-indexed key cache.
//!
//! Readers take a cheap `Arc` snapshot under a std `RwLock` (never held
//! across an await). Re-fetches are single-flight through a tokio mutex and
//! rate limited to one attempt per `min_refetch`.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::Algorithm;
use jsonwebtoken::jwk::Jwk;
use serde::Deserialize;

use super::JwtError;
use super::keys::{self, VerifyKey};

/// Whole-request timeout for the JWKS endpoint.
pub const JWKS_TIMEOUT: Duration = Duration::from_secs(5);
/// Largest JWKS response body we read.
pub const JWKS_MAX_BYTES: usize = 1024 * 1024;
/// Keys kept from one JWKS; bounds the work for tokens without `kid`.
const JWKS_MAX_KEYS: usize = 64;

/// One immutable view of the JWKS.
#[derive(Default)]
pub(crate) struct JwksCache {
    by_kid: HashMap<String, Vec<VerifyKey>>,
    no_kid: Vec<VerifyKey>,
}

impl JwksCache {
    pub fn is_empty(&self) -> bool {
        self.by_kid.is_empty() && self.no_kid.is_empty()
    }

    pub fn has_kid(&self, kid: &str) -> bool {
        self.by_kid.contains_key(kid)
    }

    /// Keys usable for `alg`: those with `kid` when given, else all of them.
    pub fn candidates(&self, kid: Option<&str>, alg: Algorithm) -> Vec<&VerifyKey> {
        match kid {
            Some(kid) => self
                .by_kid
                .get(kid)
                .map(|keys| keys.iter().filter(|k| k.accepts(alg)).collect())
                .unwrap_or_default(),
            None => self
                .by_kid
                .values()
                .flatten()
                .chain(&self.no_kid)
                .filter(|k| k.accepts(alg))
                .collect(),
        }
    }

    pub fn len(&self) -> usize {
        self.by_kid.values().map(Vec::len).sum::<usize>() + self.no_kid.len()
    }
}

/// Parses a JWKS document. Individual keys we cannot use are skipped
/// (RFC 7517 5: ignore unknown members), but a document with no usable key
/// is an error so that a broken response never wipes a good cache.
pub(crate) fn parse_jwks(body: &[u8]) -> Result<JwksCache, JwtError> {
    // Keys are kept as raw JSON first: with `JwkSet`, one odd key would make
    // the whole set fail to deserialize.
    #[derive(Deserialize)]
    struct RawSet {
        keys: Vec<serde_json::Value>,
    }
    let raw: RawSet = serde_json::from_slice(body)
        .map_err(|e| JwtError::Jwks(format!("response is not a JWK Set: {e}")))?;

    let mut cache = JwksCache::default();
    let mut kept = 0usize;
    for (i, value) in raw.keys.into_iter().enumerate() {
        if kept == JWKS_MAX_KEYS {
            tracing::warn!(
                max = JWKS_MAX_KEYS,
                "JWKS has too many keys; ignoring the rest"
            );
            break;
        }
        let jwk: Jwk = match serde_json::from_value(value) {
            Ok(jwk) => jwk,
            Err(e) => {
                tracing::debug!(index = i, error = %e, "skipping unparsable JWK");
                continue;
            }
        };
        let key = match keys::from_jwk(&jwk) {
            Ok(key) => key,
            Err(why) => {
                tracing::debug!(index = i, kid = ?jwk.common.key_id, why, "skipping JWK");
                continue;
            }
        };
        kept += 1;
        match jwk.common.key_id {
            Some(kid) => cache.by_kid.entry(kid).or_default().push(key),
            None => cache.no_kid.push(key),
        }
    }
    if cache.is_empty() {
        return Err(JwtError::Jwks(
            "JWK Set contains no usable signing key".into(),
        ));
    }
    Ok(cache)
}

pub(crate) struct JwksSource {
    url: String,
    client: reqwest::Client,
    min_refetch: Duration,
    cache: RwLock<Arc<JwksCache>>,
    /// When the last fetch started; the mutex also makes fetches single-flight.
    last_fetch: tokio::sync::Mutex<Option<Instant>>,
}

impl JwksSource {
    pub fn new(url: String, min_refetch: Duration) -> Result<Self, JwtError> {
        let client = reqwest::Client::builder()
            .timeout(JWKS_TIMEOUT)
            .connect_timeout(JWKS_TIMEOUT)
            .redirect(reqwest::redirect::Policy::limited(3))
            .build()
            .map_err(|e| JwtError::Config(format!("cannot build JWKS HTTP client: {e}")))?;
        Ok(Self {
            url,
            client,
            min_refetch,
            cache: RwLock::new(Arc::new(JwksCache::default())),
            last_fetch: tokio::sync::Mutex::new(None),
        })
    }

    pub fn snapshot(&self) -> Arc<JwksCache> {
        // A poisoned lock still holds a consistent Arc; keep serving it.
        match self.cache.read() {
            Ok(guard) => Arc::clone(&guard),
            Err(poisoned) => Arc::clone(&poisoned.into_inner()),
        }
    }

    fn store(&self, cache: JwksCache) -> Arc<JwksCache> {
        let cache = Arc::new(cache);
        match self.cache.write() {
            Ok(mut guard) => *guard = Arc::clone(&cache),
            Err(poisoned) => *poisoned.into_inner() = Arc::clone(&cache),
        }
        cache
    }

    /// Initial fetch from `Verifier::new`. Not rate limited and does not
    /// start the refetch window: the limit is on refetches for unknown kids.
    pub async fn prefetch(self: &Arc<Self>) -> Result<(), JwtError> {
        self.fetch_and_store().await.map(|_| ())
    }

    /// Called after `seen` turned out not to know a key. Returns a newer
    /// snapshot if one exists or could be fetched, `Ok(None)` if rate limited,
    /// or the fetch error.
    pub async fn refresh_after_miss(
        self: &Arc<Self>,
        seen: &Arc<JwksCache>,
    ) -> Result<Option<Arc<JwksCache>>, JwtError> {
        let mut last = self.last_fetch.lock().await;
        // Another task refreshed while we queued on the mutex: use its result.
        let current = self.snapshot();
        if !Arc::ptr_eq(&current, seen) {
            return Ok(Some(current));
        }
        if last.is_some_and(|t| t.elapsed() < self.min_refetch) {
            return Ok(None);
        }
        *last = Some(Instant::now());
        match self.fetch_and_store().await {
            Ok(fresh) => Ok(Some(fresh)),
            Err(e) => {
                tracing::warn!(error = %e, "JWKS refetch failed; keeping cached keys");
                Err(e)
            }
        }
    }

    /// Runs the fetch in its own task so that a cancelled verification
    /// cannot abort a half-done refresh that others are waiting for.
    async fn fetch_and_store(self: &Arc<Self>) -> Result<Arc<JwksCache>, JwtError> {
        let this = Arc::clone(self);
        let task = tokio::spawn(async move {
            let cache = this.fetch().await?;
            tracing::info!(keys = cache.len(), "JWKS fetched");
            Ok(this.store(cache))
        });
        task.await
            .map_err(|e| JwtError::Jwks(format!("JWKS fetch task failed: {e}")))?
    }

    async fn fetch(&self) -> Result<JwksCache, JwtError> {
        // `without_url`: the URL may carry credentials in its query string.
        let http_err =
            |e: reqwest::Error| JwtError::Jwks(format!("request failed: {}", e.without_url()));
        let mut resp = self
            .client
            .get(&self.url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(http_err)?;
        let status = resp.status();
        if !status.is_success() {
            return Err(JwtError::Jwks(format!("unexpected HTTP status {status}")));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > JWKS_MAX_BYTES as u64)
        {
            return Err(JwtError::Jwks(format!(
                "response exceeds {JWKS_MAX_BYTES} bytes"
            )));
        }
        // Content-Length can be absent or wrong: cap while streaming.
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http_err)? {
            if body.len() + chunk.len() > JWKS_MAX_BYTES {
                return Err(JwtError::Jwks(format!(
                    "response exceeds {JWKS_MAX_BYTES} bytes"
                )));
            }
            body.extend_from_slice(&chunk);
        }
        parse_jwks(&body)
    }
}
