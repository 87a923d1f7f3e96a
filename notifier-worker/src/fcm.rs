//! FCM HTTP v1 `messages:send`, with its answers sorted into what to do.

use crate::oauth::TokenSource;
use serde_json::Value;
use std::time::Duration;

/// What FCM's answer means for this device and this item.
#[derive(Debug, PartialEq, Eq)]
pub enum SendResult {
    Sent,
    /// 404 UNREGISTERED, or 400 INVALID_ARGUMENT naming the token: remove it.
    BadToken(String),
    /// Another 400: our payload is wrong. Logged and counted, not retried.
    BadPayload(String),
    /// 403 SENDER_ID_MISMATCH, 401 THIRD_PARTY_AUTH_ERROR: not retried, the
    /// token is kept.
    Rejected(String),
    /// A 404 without UNREGISTERED, or a 403 other than SENDER_ID_MISMATCH: our
    /// endpoint, project or permissions are wrong. Nothing is removed; the
    /// work stays pending (and is dead-lettered if it never gets through).
    Misconfigured(String),
    /// 429, 5xx, timeouts: try again, not before `after` when FCM says.
    Retry {
        after: Option<Duration>,
        why: String,
    },
}

pub struct FcmClient {
    http: reqwest::Client,
    url: String,
    tokens: TokenSource,
}

impl FcmClient {
    pub fn new(
        http: reqwest::Client,
        endpoint: &str,
        project_id: &str,
        tokens: TokenSource,
    ) -> Self {
        Self {
            http,
            url: format!("{endpoint}/v1/projects/{project_id}/messages:send"),
            tokens,
        }
    }

    /// Sends once; a refused access token is replaced and the send tried once more.
    pub async fn send(&self, body: &Value) -> SendResult {
        let mut refreshed = false;
        loop {
            let token = match self.tokens.token().await {
                Ok(t) => t,
                Err(e) => {
                    return SendResult::Retry {
                        after: None,
                        why: format!("no access token: {e}"),
                    };
                }
            };
            let resp = match self
                .http
                .post(&self.url)
                .bearer_auth(&token)
                .json(body)
                .send()
                .await
            {
                Ok(r) => r,
                Err(e) => {
                    return SendResult::Retry {
                        after: None,
                        why: format!("request failed: {e}"),
                    };
                }
            };
            let status = resp.status().as_u16();
            let retry_after = resp
                .headers()
                .get(reqwest::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.trim().parse::<u64>().ok())
                .map(Duration::from_secs);
            let text = resp.text().await.unwrap_or_default();
            match classify(status, &text, retry_after) {
                Classified::Done(r) => return r,
                Classified::AuthExpired => {
                    self.tokens.invalidate(&token);
                    if refreshed {
                        return SendResult::Retry {
                            after: None,
                            why: "access token refused twice".into(),
                        };
                    }
                    refreshed = true;
                }
            }
        }
    }
}

enum Classified {
    Done(SendResult),
    AuthExpired,
}

/// FCM's `errorCode` from an error body's details.
fn error_code(body: &Value) -> Option<&str> {
    body["error"]["details"]
        .as_array()?
        .iter()
        .find_map(|d| d.get("errorCode").and_then(Value::as_str))
}

fn names_the_token(body: &Value) -> bool {
    let message = body["error"]["message"]
        .as_str()
        .unwrap_or("")
        .to_ascii_lowercase();
    let field_is_token = body["error"]["details"].as_array().is_some_and(|ds| {
        ds.iter().any(|d| {
            d["fieldViolations"]
                .as_array()
                .is_some_and(|fs| fs.iter().any(|f| f["field"] == "message.token"))
        })
    });
    field_is_token || message.contains("registration token")
}

fn classify(status: u16, text: &str, retry_after: Option<Duration>) -> Classified {
    let body: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let code = error_code(&body).unwrap_or("");
    let message = chat_core::google::error_message(&body, text);
    let done = Classified::Done;
    match status {
        200..=299 => done(SendResult::Sent),
        404 if code == "UNREGISTERED" => done(SendResult::BadToken(format!("{code} {message}"))),
        404 => done(SendResult::Misconfigured(format!("404 {message}"))),
        400 if code == "UNREGISTERED" || names_the_token(&body) => {
            done(SendResult::BadToken(format!("{code} {message}")))
        }
        400 => done(SendResult::BadPayload(format!("{code} {message}"))),
        401 if code == "THIRD_PARTY_AUTH_ERROR" => {
            done(SendResult::Rejected(format!("{code} {message}")))
        }
        401 => Classified::AuthExpired,
        403 if code == "SENDER_ID_MISMATCH" => {
            done(SendResult::Rejected(format!("{code} {message}")))
        }
        403 => done(SendResult::Misconfigured(format!("403 {code} {message}"))),
        429 | 500..=599 => done(SendResult::Retry {
            after: retry_after,
            why: format!("{status} {code} {message}"),
        }),
        _ => done(SendResult::BadPayload(format!(
            "unexpected {status}: {message}"
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(status: &str, code: Option<&str>, message: &str) -> String {
        let details = code.map_or(serde_json::json!([]), |c| {
            serde_json::json!([{"@type": "type.googleapis.com/google.firebase.fcm.v1.FcmError", "errorCode": c}])
        });
        serde_json::json!({"error": {"code": 0, "message": message, "status": status, "details": details}}).to_string()
    }

    fn result(status: u16, body: &str) -> SendResult {
        match classify(status, body, None) {
            Classified::Done(r) => r,
            Classified::AuthExpired => SendResult::Retry {
                after: None,
                why: "auth".into(),
            },
        }
    }

    #[test]
    fn answers_are_sorted() {
        assert_eq!(result(200, "{}"), SendResult::Sent);
        assert!(matches!(
            result(404, &err("NOT_FOUND", None, "no such project")),
            SendResult::Misconfigured(_)
        ));
        assert!(matches!(
            result(404, "<html>not found</html>"),
            SendResult::Misconfigured(_)
        ));
        assert!(matches!(
            result(403, &err("PERMISSION_DENIED", None, "API disabled")),
            SendResult::Misconfigured(_)
        ));
        assert!(matches!(
            result(404, &err("NOT_FOUND", Some("UNREGISTERED"), "gone")),
            SendResult::BadToken(_)
        ));
        assert!(matches!(
            result(
                400,
                &err(
                    "INVALID_ARGUMENT",
                    Some("INVALID_ARGUMENT"),
                    "The registration token is not a valid FCM registration token"
                )
            ),
            SendResult::BadToken(_)
        ));
        assert!(matches!(
            result(
                400,
                &err(
                    "INVALID_ARGUMENT",
                    Some("INVALID_ARGUMENT"),
                    "Invalid JSON payload received"
                )
            ),
            SendResult::BadPayload(_)
        ));
        assert!(matches!(
            result(
                403,
                &err("PERMISSION_DENIED", Some("SENDER_ID_MISMATCH"), "x")
            ),
            SendResult::Rejected(_)
        ));
        assert!(matches!(
            result(
                401,
                &err("UNAUTHENTICATED", Some("THIRD_PARTY_AUTH_ERROR"), "x")
            ),
            SendResult::Rejected(_)
        ));
        assert!(matches!(
            classify(401, &err("UNAUTHENTICATED", None, "x"), None),
            Classified::AuthExpired
        ));
        for s in [429, 500, 503] {
            assert!(matches!(
                result(s, &err("X", None, "x")),
                SendResult::Retry { .. }
            ));
        }
        assert!(matches!(
            result(502, "<html>bad gateway</html>"),
            SendResult::Retry { .. }
        ));
    }
}
