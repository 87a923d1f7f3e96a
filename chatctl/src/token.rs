//! `chatctl token`: an HS256 JWT for development, with the claims the
//! contract reads (`sub`, `exp`, optional `rooms` and `sid`).

/// The longest lifetime minted: 100 years (of 365.25 days, as `--ttl`
/// reads `years`), well past any use and far from overflowing `exp`.
pub const MAX_TTL_SECS: u64 = 100 * 31_557_600;

pub fn mint(
    secret: &str,
    sub: &str,
    rooms: &[String],
    sid: Option<&str>,
    ttl: u64,
) -> anyhow::Result<String> {
    let exp = chat_core::clock::now_secs()
        .checked_add(ttl)
        .filter(|_| ttl <= MAX_TTL_SECS)
        .ok_or_else(|| anyhow::anyhow!("--ttl is too long: at most 100 years"))?;
    let mut claims = serde_json::json!({"sub": sub, "exp": exp});
    if !rooms.is_empty() {
        claims["rooms"] = serde_json::json!(rooms);
    }
    if let Some(sid) = sid {
        claims["sid"] = serde_json::json!(sid);
    }
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}
