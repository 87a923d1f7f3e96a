//! What the FCM and Gemini mocks share: Google's error envelope and the
//! light request checks.

use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use wiremock::{Match, MockServer, Request, ResponseTemplate};

/// A fresh server, not one from wiremock's pool, so it stops when dropped.
/// Our responders record what the tests look at, so wiremock does not.
pub async fn start_server() -> MockServer {
    MockServer::builder()
        .disable_request_recording()
        .start()
        .await
}

/// The canonical status name of an HTTP code in Google's error envelope.
fn google_status(code: u16) -> &'static str {
    match code {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        429 => "RESOURCE_EXHAUSTED",
        500 => "INTERNAL",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        _ => "UNKNOWN",
    }
}

/// `{"error": {"code", "message", "status", "details"?}}` with status `code`.
pub fn google_error(code: u16, message: &str, details: Vec<Value>) -> ResponseTemplate {
    let mut error = json!({"code": code, "message": message, "status": google_status(code)});
    if !details.is_empty() {
        error["details"] = Value::Array(details);
    }
    ResponseTemplate::new(code).set_body_json(json!({ "error": error }))
}

/// A `google.rpc.BadRequest` detail, naming the field when there is one.
pub fn bad_request_detail(field: Option<&str>, description: &str) -> Value {
    let mut violation = json!({ "description": description });
    if let Some(field) = field {
        violation["field"] = json!(field);
    }
    let bad_request = "type.googleapis.com/google.rpc.BadRequest";
    json!({"@type": bad_request, "fieldViolations": [violation]})
}

/// The body of an `application/json` request whose body is a JSON object.
pub fn json_object(request: &Request) -> Option<Value> {
    let media_type = request.headers.get("content-type")?.to_str().ok()?;
    media_type.starts_with("application/json").then_some(())?;
    request.body_json::<Value>().ok().filter(Value::is_object)
}

/// Turns its mock off when dropped, as a `MockGuard` would: wiremock 0.6
/// re-sorts mounted mocks by priority, so dropping a scoped mock's guard
/// unmounts whichever mock now holds its index.
pub struct MockSwitch(Arc<AtomicBool>);

impl MockSwitch {
    /// The switch, and a matcher that matches while it lives.
    pub fn new() -> (MockSwitch, impl Match + 'static) {
        let on = Arc::new(AtomicBool::new(true));
        let matcher = Arc::clone(&on);
        let matcher = move |_: &Request| matcher.load(Ordering::Relaxed);
        (MockSwitch(on), matcher)
    }
}

impl Drop for MockSwitch {
    fn drop(&mut self) {
        self.0.store(false, Ordering::Relaxed);
    }
}
