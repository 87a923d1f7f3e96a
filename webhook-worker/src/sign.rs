//! Webhook signatures, as Stripe and GitHub sign theirs: HMAC-SHA256 over
//! `<unix seconds>.<body>` with the endpoint's secret, sent as
//! `Chat-Signature: t=<unix seconds>,v1=<hex digest>`. The receiver checks
//! the digest and refuses a timestamp too far from its clock (replays).

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// The hex HMAC-SHA256 of `<t>.<body>` under `secret`.
pub fn digest(secret: &[u8], t: u64, body: &[u8]) -> String {
    // HMAC takes a key of any length.
    let mut mac = HmacSha256::new_from_slice(secret).unwrap_or_else(|_| {
        HmacSha256::new_from_slice(&[0]).unwrap_or_else(|_| unreachable!("HMAC takes any key"))
    });
    mac.update(t.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The `Chat-Signature` header value.
pub fn header(secret: &[u8], t: u64, body: &[u8]) -> String {
    format!("t={t},v1={}", digest(secret, t, body))
}

/// Checks a `Chat-Signature` header as a receiver would: the digest
/// matches, in constant time, and `t` is within `tolerance_secs` of `now`.
pub fn verify(secret: &[u8], header: &str, body: &[u8], now: u64, tolerance_secs: u64) -> bool {
    let mut t = None;
    let mut v1 = None;
    for part in header.split(',') {
        match part.split_once('=') {
            Some(("t", v)) => t = v.parse::<u64>().ok(),
            Some(("v1", v)) => v1 = Some(v),
            _ => {}
        }
    }
    let (Some(t), Some(v1)) = (t, v1) else {
        return false;
    };
    if t.abs_diff(now) > tolerance_secs {
        return false;
    }
    let want = digest(secret, t, body);
    want.len() == v1.len()
        && want
            .bytes()
            .zip(v1.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_a_known_hmac_and_verifies_only_the_right_body_time_and_secret() {
        // RFC 4231 test case 2: key "Jefe", data "what do ya want for nothing?".
        let mut mac = HmacSha256::new_from_slice(b"Jefe").expect("key");
        mac.update(b"what do ya want for nothing?");
        let hex: String = mac
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(
            hex,
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );

        let h = header(b"secret-0123456789", 1_700_000_000, b"{\"a\":1}");
        assert!(h.starts_with("t=1700000000,v1="));
        assert!(verify(
            b"secret-0123456789",
            &h,
            b"{\"a\":1}",
            1_700_000_100,
            300
        ));
        assert!(!verify(
            b"secret-0123456789",
            &h,
            b"{\"a\":2}",
            1_700_000_100,
            300
        ));
        assert!(!verify(
            b"another-secret-00",
            &h,
            b"{\"a\":1}",
            1_700_000_100,
            300
        ));
        assert!(!verify(
            b"secret-0123456789",
            &h,
            b"{\"a\":1}",
            1_700_001_000,
            300
        ));
        assert!(!verify(b"secret-0123456789", "t=x,v1=00", b"", 0, 300));
    }
}
