//! OAuth2 access tokens for FCM, minted from the service account: an RS256
//! JWT assertion exchanged at the token URI (the JWT-bearer grant), cached
//! until shortly before it expires, and fetched again after FCM refuses it.

use crate::service_account::ServiceAccount;
use serde::Deserialize;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub const SCOPE: &str = "https://www.googleapis.com/auth/firebase.messaging";
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:jwt-bearer";

#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("signing the assertion: {0}")]
    Sign(String),
    #[error("token endpoint unreachable: {0}")]
    Http(String),
    #[error("token endpoint refused: {status} {body}")]
    Refused { status: u16, body: String },
}

#[derive(Clone)]
struct Cached {
    token: String,
    refresh_at: Instant,
}

pub struct TokenSource {
    account: ServiceAccount,
    token_uri: String,
    key: jsonwebtoken::EncodingKey,
    http: reqwest::Client,
    cached: Mutex<Option<Cached>>,
    /// One fetch at a time; waiters take its result from the cache.
    fetching: tokio::sync::Mutex<()>,
}

#[derive(Deserialize)]
struct TokenResponse {
    access_token: String,
    expires_in: u64,
}

impl TokenSource {
    pub fn new(
        account: ServiceAccount,
        token_uri: String,
        http: reqwest::Client,
    ) -> Result<Self, TokenError> {
        let key = jsonwebtoken::EncodingKey::from_rsa_pem(account.private_key.as_bytes())
            .map_err(|e| TokenError::Sign(e.to_string()))?;
        Ok(Self {
            account,
            token_uri,
            key,
            http,
            cached: Mutex::new(None),
            fetching: tokio::sync::Mutex::new(()),
        })
    }

    fn cached(&self) -> Option<String> {
        let c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        c.as_ref()
            .filter(|c| Instant::now() < c.refresh_at)
            .map(|c| c.token.clone())
    }

    /// A valid access token, from the cache when it has one.
    pub async fn token(&self) -> Result<String, TokenError> {
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        // Single flight: the fetch lock is held across the request on purpose,
        // so a burst of sends costs one token request.
        let _guard = self.fetching.lock().await;
        if let Some(t) = self.cached() {
            return Ok(t);
        }
        let fresh = self.fetch().await?;
        let token = fresh.token.clone();
        *self.cached.lock().unwrap_or_else(|p| p.into_inner()) = Some(fresh);
        Ok(token)
    }

    /// FCM refused `token`: drop it unless another fetch already replaced it.
    pub fn invalidate(&self, token: &str) {
        let mut c = self.cached.lock().unwrap_or_else(|p| p.into_inner());
        if c.as_ref().is_some_and(|c| c.token == token) {
            *c = None;
        }
    }

    fn assertion(&self) -> Result<String, TokenError> {
        let now = chat_core::clock::now_secs();
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
        if !self.account.private_key_id.is_empty() {
            header.kid = Some(self.account.private_key_id.clone());
        }
        let claims = serde_json::json!({
            "iss": self.account.client_email,
            "scope": SCOPE,
            "aud": self.token_uri,
            "iat": now,
            "exp": now + 3600,
        });
        jsonwebtoken::encode(&header, &claims, &self.key)
            .map_err(|e| TokenError::Sign(e.to_string()))
    }

    async fn fetch(&self) -> Result<Cached, TokenError> {
        let assertion = self.assertion()?;
        let started = Instant::now();
        let resp = self
            .http
            .post(&self.token_uri)
            .form(&[
                ("grant_type", GRANT_TYPE),
                ("assertion", assertion.as_str()),
            ])
            .send()
            .await
            .map_err(|e| TokenError::Http(e.to_string()))?;
        let status = resp.status();
        let body = resp
            .text()
            .await
            .map_err(|e| TokenError::Http(e.to_string()))?;
        if !status.is_success() {
            return Err(TokenError::Refused {
                status: status.as_u16(),
                body: body.chars().take(300).collect(),
            });
        }
        let t: TokenResponse = serde_json::from_str(&body).map_err(|e| TokenError::Refused {
            status: status.as_u16(),
            body: format!("unreadable token response: {e}"),
        })?;
        // Refresh a minute early (or halfway, for short-lived tokens).
        let life = Duration::from_secs(t.expires_in.min(86_400));
        let margin = Duration::from_secs(60).min(life / 2);
        tracing::info!(expires_in = t.expires_in, "fetched an FCM access token");
        Ok(Cached {
            token: t.access_token,
            refresh_at: started + life - margin,
        })
    }
}
