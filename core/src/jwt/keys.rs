//! Turning configured PEMs and fetched JWKs into checked `DecodingKey`s.
//!
//! jsonwebtoken parses key material lazily (a broken key only shows up as
//! `InvalidSignature` at verify time), so keys are checked here, up front,
//! via `Jwk::from_decoding_key`, which makes the crypto backend parse them.

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, AlgorithmFamily, DecodingKey, DecodingKeyKind};

/// RSA keys below this many modulus bytes (2048 bits) are refused; the
/// backend would reject them at verify time anyway.
const MIN_RSA_MODULUS_BYTES: usize = 256;

/// A verification key plus what it may be used with.
#[derive(Clone)]
pub(crate) struct VerifyKey {
    pub family: AlgorithmFamily,
    /// From the JWK `alg` member; `None` means any algorithm of `family`.
    pub alg: Option<Algorithm>,
    pub key: DecodingKey,
}

impl VerifyKey {
    pub fn accepts(&self, alg: Algorithm) -> bool {
        self.family == alg.family() && self.alg.is_none_or(|a| a == alg)
    }
}

/// Which of the supported algorithms a family maps to.
pub(crate) fn supported_alg(family: AlgorithmFamily) -> Option<Algorithm> {
    match family {
        AlgorithmFamily::Hmac => Some(Algorithm::HS256),
        AlgorithmFamily::Rsa => Some(Algorithm::RS256),
        AlgorithmFamily::Ec => Some(Algorithm::ES256),
        AlgorithmFamily::Ed => Some(Algorithm::EdDSA),
    }
}

/// Parses one configured PEM public key, detecting its family.
/// The error string never contains key material.
pub(crate) fn from_pem(pem: &[u8]) -> Result<VerifyKey, String> {
    // A private key would "parse" as the wrong bytes and never verify;
    // it also should not be sitting in this config.
    if contains(pem, b"PRIVATE KEY-----") {
        return Err("is a private key; configure the public key instead".into());
    }
    let (family, key) = if let Ok(k) = DecodingKey::from_rsa_pem(pem) {
        (AlgorithmFamily::Rsa, k)
    } else if let Ok(k) = DecodingKey::from_ec_pem(pem) {
        (AlgorithmFamily::Ec, k)
    } else if let Ok(k) = DecodingKey::from_ed_pem(pem) {
        (AlgorithmFamily::Ed, k)
    } else {
        return Err("is not a PEM RSA, EC or Ed25519 public key".into());
    };
    check_key(&key, family)?;
    Ok(VerifyKey {
        family,
        alg: None,
        key,
    })
}

/// Converts one JWK from a JWKS; `Err` explains why it is skipped.
pub(crate) fn from_jwk(jwk: &Jwk) -> Result<VerifyKey, String> {
    if let Some(usage) = &jwk.common.public_key_use
        && *usage != PublicKeyUse::Signature
    {
        return Err("`use` is not `sig`".into());
    }
    if let Some(ops) = &jwk.common.key_operations
        && !ops.contains(&KeyOperations::Verify)
    {
        return Err("`key_ops` lacks `verify`".into());
    }
    let family = match &jwk.algorithm {
        AlgorithmParameters::RSA(_) => AlgorithmFamily::Rsa,
        AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {
            AlgorithmFamily::Ec
        }
        AlgorithmParameters::OctetKeyPair(p) if p.curve == EllipticCurve::Ed25519 => {
            AlgorithmFamily::Ed
        }
        // Shared secrets have no business being published in a JWKS.
        AlgorithmParameters::OctetKey(_) => return Err("symmetric (`oct`) key".into()),
        _ => return Err("unsupported key type or curve".into()),
    };
    let alg = match jwk.common.key_algorithm {
        None => None,
        Some(ka) => {
            let alg = Algorithm::try_from(ka).map_err(|_| "unsupported `alg`".to_string())?;
            if alg.family() != family || supported_alg(family) != Some(alg) {
                return Err("`alg` does not match the key type or is unsupported".into());
            }
            Some(alg)
        }
    };
    let key = DecodingKey::from_jwk(jwk).map_err(|_| "invalid key parameters".to_string())?;
    check_key(&key, family)?;
    Ok(VerifyKey { family, alg, key })
}

/// Makes the backend parse the key and enforces our size/curve rules.
fn check_key(key: &DecodingKey, family: AlgorithmFamily) -> Result<(), String> {
    match family {
        AlgorithmFamily::Rsa => {
            let modulus_len = match key.kind() {
                DecodingKeyKind::RsaModulusExponent { n, e } => {
                    if e.iter().all(|b| *b == 0) {
                        return Err("RSA exponent is zero".into());
                    }
                    significant_len(n)
                }
                DecodingKeyKind::SecretOrDer(_) => {
                    // Parses the DER with aws-lc and hands back n, e.
                    let jwk = Jwk::from_decoding_key(key, None)
                        .map_err(|_| "RSA public key does not parse".to_string())?;
                    match jwk.algorithm {
                        AlgorithmParameters::RSA(p) => super::header::b64url_decode(&p.n)
                            .map(|n| significant_len(&n))
                            .unwrap_or(0),
                        _ => 0,
                    }
                }
            };
            if modulus_len < MIN_RSA_MODULUS_BYTES {
                return Err("RSA key is shorter than 2048 bits".into());
            }
        }
        AlgorithmFamily::Ec => {
            // Checks the uncompressed-point encoding and tells us the curve.
            let jwk = Jwk::from_decoding_key(key, None)
                .map_err(|_| "EC public key does not parse".to_string())?;
            match jwk.algorithm {
                AlgorithmParameters::EllipticCurve(p) if p.curve == EllipticCurve::P256 => {}
                _ => return Err("EC key is not on curve P-256 (only ES256 is supported)".into()),
            }
        }
        AlgorithmFamily::Ed => {
            let len = key.try_get_as_bytes().map(<[u8]>::len).unwrap_or(0);
            if len != 32 {
                return Err("Ed25519 public key must be 32 bytes".into());
            }
        }
        AlgorithmFamily::Hmac => return Err("not a public key".into()),
    }
    Ok(())
}

fn significant_len(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|b| *b != 0)
        .map_or(0, |i| bytes.len() - i)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}
