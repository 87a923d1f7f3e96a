//! A Google service-account JSON file, checked field by field.

use serde::Deserialize;
use std::path::Path;

#[derive(Clone, Deserialize)]
pub struct ServiceAccount {
    #[serde(rename = "type")]
    pub kind: String,
    pub project_id: String,
    #[serde(default)]
    pub private_key_id: String,
    pub private_key: String,
    pub client_email: String,
    pub token_uri: String,
}

impl std::fmt::Debug for ServiceAccount {
    // The private key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("project_id", &self.project_id)
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

impl ServiceAccount {
    pub fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        Self::parse(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    pub fn parse(text: &str) -> Result<Self, String> {
        let sa: ServiceAccount = serde_json::from_str(text)
            .map_err(|e| format!("not a service-account JSON file: {e}"))?;
        if sa.kind != "service_account" {
            return Err(format!(
                "type is {:?}, expected \"service_account\"",
                sa.kind
            ));
        }
        if sa.project_id.is_empty() || sa.client_email.is_empty() || sa.token_uri.is_empty() {
            return Err("project_id, client_email and token_uri must not be empty".into());
        }
        jsonwebtoken::EncodingKey::from_rsa_pem(sa.private_key.as_bytes())
            .map_err(|e| format!("private_key is not an RSA PEM key: {e}"))?;
        Ok(sa)
    }
}
