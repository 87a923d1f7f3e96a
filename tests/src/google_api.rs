//! What the fake Google APIs (FCM, Gemini) share: the error envelope, the
//! canonical status names, and proto-JSON request checks as Google's front
//! end reports them.

use axum::Json;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};

/// The canonical status name of an HTTP code in Google's error envelope.
pub fn google_status(code: StatusCode) -> &'static str {
    match code.as_u16() {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "UNIMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

/// `{"error": {"code", "message", "status", "details"?}}`.
pub fn error_body(code: StatusCode, message: &str, details: Vec<Value>) -> Value {
    let mut error = json!({
        "code": code.as_u16(),
        "message": message,
        "status": google_status(code),
    });
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    json!({ "error": error })
}

pub fn google_error(code: StatusCode, message: &str, details: Vec<Value>) -> Response {
    (code, Json(error_body(code, message, details))).into_response()
}

/// Whether the `Content-Type` header's media type is `media_type`.
pub fn has_media_type(headers: &HeaderMap, media_type: &str) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|m| m.trim().eq_ignore_ascii_case(media_type))
}

/// A request body that does not parse as the API's proto JSON: the field it
/// names, if any, and the message. Each fake turns it into its own refusal.
pub struct JsonViolation {
    pub field: Option<String>,
    pub message: String,
    /// A value of the wrong type (Gemini prefixes those messages with
    /// "Invalid JSON payload received."; FCM does not).
    pub invalid_value: bool,
}

/// The first of `names` present in `map` with a non-null value (proto JSON
/// treats `null` as unset, and accepts both snake and camel case names).
pub fn field<'a>(map: &'a Map<String, Value>, names: &[&str]) -> Option<&'a Value> {
    names
        .iter()
        .filter_map(|n| map.get(*n))
        .find(|v| !v.is_null())
}

pub fn object<'a>(
    v: &'a Value,
    path: &str,
    type_name: &str,
) -> Result<&'a Map<String, Value>, JsonViolation> {
    v.as_object().ok_or_else(|| type_error(path, type_name, v))
}

/// An optional string field.
pub fn string<'a>(
    map: &'a Map<String, Value>,
    names: &[&str],
    path: &str,
) -> Result<Option<&'a str>, JsonViolation> {
    match field(map, names) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(type_error(path, "TYPE_STRING", v)),
    }
}

/// Refuses the first name of `map` not in `known`.
pub fn check_known(
    map: &Map<String, Value>,
    parent: &str,
    known: &[&str],
) -> Result<(), JsonViolation> {
    let Some(name) = map.keys().find(|k| !known.contains(&k.as_str())) else {
        return Ok(());
    };
    Err(if parent.is_empty() {
        JsonViolation {
            field: None,
            message: format!(
                "Invalid JSON payload received. Unknown name \"{name}\": Cannot find field."
            ),
            invalid_value: false,
        }
    } else {
        JsonViolation {
            field: Some(format!("{parent}.{name}")),
            message: format!(
                "Invalid JSON payload received. Unknown name \"{name}\" at '{parent}': \
                 Cannot find field."
            ),
            invalid_value: false,
        }
    })
}

pub fn type_error(path: &str, type_name: &str, value: &Value) -> JsonViolation {
    JsonViolation {
        field: Some(path.to_owned()),
        message: format!("Invalid value at '{path}' ({type_name}), {}", shown(value)),
        invalid_value: true,
    }
}

/// A value as Google shows it in "Invalid value" messages.
pub fn shown(value: &Value) -> String {
    match value {
        Value::Object(_) => "Starting an object on a scalar field".to_owned(),
        Value::Array(_) => "Starting an array on a scalar field".to_owned(),
        other => other.to_string(),
    }
}
