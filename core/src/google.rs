//! Google API error bodies (FCM, Gemini): `{"error": {"code", "message", "status", "details"}}`.

use serde_json::Value;

/// The `error.message` of a Google error body, or the raw text when the body
/// is not one, cut to 200 characters for logs and job records.
pub fn error_message(body: &Value, raw: &str) -> String {
    body["error"]["message"]
        .as_str()
        .unwrap_or(raw)
        .chars()
        .take(200)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_or_raw_text_cut_short() {
        let body = serde_json::json!({"error": {"message": "quota"}});
        assert_eq!(error_message(&body, "x"), "quota");
        assert_eq!(error_message(&Value::Null, "<html>"), "<html>");
        assert_eq!(error_message(&Value::Null, &"y".repeat(500)).len(), 200);
    }
}
