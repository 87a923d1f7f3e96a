//! TEST-ONLY key pairs (from `core/tests/fixtures/jwt/`) so tests anywhere in
//! the workspace can mint tokens. These keys are public: never trust them.

pub const RSA_PRIVATE_PEM: &str = include_str!("../../tests/fixtures/jwt/rsa_private.pem");
pub const RSA_PUBLIC_PEM: &str = include_str!("../../tests/fixtures/jwt/rsa_public.pem");
pub const EC_PRIVATE_PEM: &str = include_str!("../../tests/fixtures/jwt/ec_private.pem");
pub const EC_PUBLIC_PEM: &str = include_str!("../../tests/fixtures/jwt/ec_public.pem");
pub const ED_PRIVATE_PEM: &str = include_str!("../../tests/fixtures/jwt/ed_private.pem");
pub const ED_PUBLIC_PEM: &str = include_str!("../../tests/fixtures/jwt/ed_public.pem");
/// JWK Set holding the RSA public key under [`RSA_JWKS_KID`].
pub const RSA_JWKS_JSON: &str = include_str!("../../tests/fixtures/jwt/rsa_jwks.json");
pub const RSA_JWKS_KID: &str = "test-rsa-1";
