//! `chatctl token`: an HS256 JWT for development, with the claims the
//! contract reads (`sub`, `exp`, optional `rooms` and `sid`).

pub fn mint(
    secret: &str,
    sub: &str,
    rooms: &[String],
    sid: Option<&str>,
    ttl: u64,
) -> anyhow::Result<String> {
    let exp = ingress::ws::now_secs() + ttl;
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
