//! Pre-verification parsing of the compact JWS: size, shape and JOSE header.
//!
//! We read the header ourselves (instead of `jsonwebtoken::decode_header`)
//! so that `alg: none`, unknown algorithms and `crit` get typed errors:
//! jsonwebtoken's `Header` cannot even represent `none`.

use jsonwebtoken::Algorithm;
use serde_json::Value;

use super::JwtError;

/// Tokens larger than this are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The parts of the JOSE header the verifier acts on.
#[derive(Debug)]
pub(crate) struct ParsedHeader {
    pub alg: Algorithm,
    pub kid: Option<String>,
}

/// Checks size and shape, then parses the header segment.
///
/// `allowed` is the configured algorithm set; anything else (including
/// `none` and algorithms jsonwebtoken does not know) is refused here.
pub(crate) fn parse(token: &str, allowed: &[Algorithm]) -> Result<ParsedHeader, JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLarge);
    }
    if token.is_empty() {
        return Err(JwtError::Malformed("empty token"));
    }
    if !token
        .bytes()
        .all(|b| b == b'.' || b64url_value(b).is_some())
    {
        return Err(JwtError::Malformed(
            "token contains characters outside base64url",
        ));
    }
    let mut parts = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed(
            "token must have exactly three segments",
        ));
    };
    if header.is_empty() || payload.is_empty() {
        return Err(JwtError::Malformed("empty header or payload segment"));
    }

    let raw = b64url_decode(header).ok_or(JwtError::Malformed("header is not valid base64url"))?;
    let Ok(Value::Object(map)) = serde_json::from_slice::<Value>(&raw) else {
        return Err(JwtError::Malformed("header is not a JSON object"));
    };

    // RFC 7515 4.1.11: we understand no extensions, so any `crit` means "refuse".
    if map.contains_key("crit") {
        return Err(JwtError::CritHeader);
    }

    let Some(Value::String(alg_name)) = map.get("alg") else {
        return Err(JwtError::Malformed("header has no string `alg`"));
    };
    // Never echo an attacker-chosen string into errors/logs: only known names.
    let alg = match alg_name.parse::<Algorithm>() {
        Ok(alg) => alg,
        Err(_) if alg_name.eq_ignore_ascii_case("none") => {
            return Err(JwtError::AlgorithmNotAllowed("none".into()));
        }
        Err(_) => return Err(JwtError::AlgorithmNotAllowed("unrecognized".into())),
    };
    if !allowed.contains(&alg) {
        return Err(JwtError::AlgorithmNotAllowed(format!("{alg:?}")));
    }

    let kid = match map.get("kid") {
        None | Some(Value::Null) => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(JwtError::Malformed("header `kid` is not a string")),
    };

    if signature.is_empty() {
        return Err(JwtError::Malformed("empty signature segment"));
    }

    Ok(ParsedHeader { alg, kid })
}

fn b64url_value(b: u8) -> Option<u8> {
    match b {
        b'A'..=b'Z' => Some(b - b'A'),
        b'a'..=b'z' => Some(b - b'a' + 26),
        b'0'..=b'9' => Some(b - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// Strict unpadded base64url (RFC 7515 2), matching what jsonwebtoken
/// accepts: no padding, no whitespace, zero trailing bits.
/// (`base64` is only a dev-dependency of this crate, hence this helper.)
pub(crate) fn b64url_decode(input: &str) -> Option<Vec<u8>> {
    let bytes = input.as_bytes();
    if bytes.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    for &b in bytes {
        acc = (acc << 6) | u32::from(b64url_value(b)?);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero, otherwise two encodings decode alike.
    if acc != 0 {
        return None;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::b64url_decode;

    #[test]
    fn jwt_b64url_roundtrip_known_vectors() {
        assert_eq!(b64url_decode("").as_deref(), Some(&b""[..]));
        assert_eq!(b64url_decode("Zg").as_deref(), Some(&b"f"[..]));
        assert_eq!(b64url_decode("Zm8").as_deref(), Some(&b"fo"[..]));
        assert_eq!(b64url_decode("Zm9v").as_deref(), Some(&b"foo"[..]));
        assert_eq!(b64url_decode("-_8").as_deref(), Some(&[0xfb, 0xff][..]));
        assert_eq!(b64url_decode("Zm9v="), None);
        assert_eq!(b64url_decode("Z"), None);
        assert_eq!(b64url_decode("Zh"), None, "non-zero trailing bits");
        assert_eq!(b64url_decode("Zm+v"), None);
    }
}
