//! `GET /openapi.json` against a real node and Redis: every documented
//! (method, path) is served, every other method on a documented path is 405,
//! and the router registers routes only through utoipa-axum, so nothing is
//! served that the document leaves out.

use serde_json::Value;
use std::collections::{BTreeSet, HashMap};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_util::sync::CancellationToken;

const API_KEY: &str = "openapi-test-api-key-0123";

/// Every operation the API has (the contract's table in docs/protocol.md, the project additions,
/// the demo and operations routes).
const EXPECTED: &[(&str, &str)] = &[
    ("get", "/"),
    ("get", "/client.js"),
    ("post", "/dev/token"),
    ("get", "/v1/ws"),
    ("post", "/v1/rooms/{room}/messages"),
    ("patch", "/v1/rooms/{room}/messages/{offset}"),
    ("delete", "/v1/rooms/{room}/messages/{offset}"),
    ("post", "/v1/rooms/{room}/messages/{offset}/reactions"),
    ("get", "/v1/unread"),
    ("get", "/v1/rooms/{room}/receipts"),
    ("post", "/v1/rooms/{room}/moderation"),
    ("get", "/v1/rooms/{room}/messages"),
    ("put", "/v1/rooms/{room}/members/{user}"),
    ("delete", "/v1/rooms/{room}/members/{user}"),
    ("get", "/v1/rooms/{room}/presence"),
    ("get", "/v1/rooms/{room}/export"),
    ("delete", "/v1/rooms/{room}"),
    ("put", "/v1/sessions/{sid}"),
    ("delete", "/v1/sessions/{sid}"),
    ("post", "/v1/summaries"),
    ("get", "/v1/summaries/{job_id}"),
    ("get", "/v1/rooms/{room}/summary"),
    ("post", "/v1/devices"),
    ("delete", "/v1/devices/{token}"),
    ("get", "/healthz"),
    ("get", "/livez"),
    ("get", "/readyz"),
    ("get", "/metrics"),
    ("get", "/openapi.json"),
];

const METHODS: &[&str] = &[
    "get", "head", "post", "put", "delete", "patch", "options", "trace",
];

struct Node {
    base: String,
    stop: CancellationToken,
    _redis: chat_devkit::redis_server::RedisServer,
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn start() -> Node {
    let redis = chat_devkit::redis_server::RedisServer::start().expect("redis-server");
    let env: HashMap<String, String> = [
        ("CHAT_REDIS_URL", redis.url()),
        (
            "CHAT_JWT_SECRET",
            "openapi-test-secret-0123456789abcdef".to_owned(),
        ),
        ("CHAT_API_KEYS", API_KEY.to_owned()),
        ("CHAT_LISTEN", "127.0.0.1:0".to_owned()),
        ("CHAT_DEV_TOKENS", "1".to_owned()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let settings = ingress::settings::IngressSettings::from_strings(&env).expect("settings");
    let stop = CancellationToken::new();
    let node = ingress::Ingress::build(settings, stop.clone())
        .await
        .expect("ingress starts");
    let base = format!("http://{}", node.local_addr());
    tokio::spawn(node.run());
    Node {
        base,
        stop,
        _redis: redis,
    }
}

fn sample(path: &str) -> String {
    path.split('/')
        .map(|seg| {
            if seg.starts_with('{') && seg.ends_with('}') {
                "sample-1"
            } else {
                seg
            }
        })
        .collect::<Vec<_>>()
        .join("/")
}

async fn call(http: &reqwest::Client, base: &str, method: &str, path: &str) -> (u16, String) {
    let method =
        reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).expect("method name");
    let r = http
        .request(method, format!("{base}{}", sample(path)))
        .send()
        .await
        .expect("request");
    let status = r.status().as_u16();
    (status, r.text().await.unwrap_or_default())
}

fn is_fallback(status: u16, body: &str) -> bool {
    status == 404
        && serde_json::from_str::<Value>(body).is_ok_and(|v| {
            v == serde_json::json!({"error": {"code": "not_found", "message": "no such route"}})
        })
}

/// Operations of the document as (method, path).
fn operations(doc: &Value) -> BTreeSet<(String, String)> {
    let mut ops = BTreeSet::new();
    for (path, item) in doc["paths"].as_object().expect("paths") {
        for method in METHODS {
            if item.get(*method).is_some() {
                ops.insert(((*method).to_owned(), path.clone()));
            }
        }
    }
    ops
}

fn resolves(doc: &Value, pointer: &str) -> bool {
    pointer
        .strip_prefix('#')
        .is_some_and(|p| doc.pointer(p).is_some())
}

fn refs<'a>(v: &'a Value, out: &mut Vec<&'a str>) {
    match v {
        Value::Object(m) => {
            if let Some(Value::String(r)) = m.get("$ref") {
                out.push(r);
            }
            m.values().for_each(|v| refs(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| refs(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn openapi_document_and_router_match() {
    let node = start().await;
    let http = reqwest::Client::new();

    let r = http
        .get(format!("{}/openapi.json", node.base))
        .send()
        .await
        .expect("openapi.json");
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok()),
        Some("application/json")
    );
    let doc: Value = r.json().await.expect("valid JSON");
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1")),
        "openapi: {}",
        doc["openapi"]
    );

    let ops = operations(&doc);
    let expected: BTreeSet<(String, String)> = EXPECTED
        .iter()
        .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
        .collect();
    assert_eq!(ops, expected, "documented operations");

    // The detector works: an unknown route is the fallback's 404.
    let (s, b) = call(&http, &node.base, "get", "/no/such/route").await;
    assert!(is_fallback(s, &b), "{s} {b}");

    for (method, path) in &ops {
        // Served: neither the fallback nor 405, and a documented status.
        let (status, body) = call(&http, &node.base, method, path).await;
        assert!(
            !is_fallback(status, &body) && status != 405,
            "{method} {path}: {status} {body}"
        );
        let op = &doc["paths"][path][method];
        assert!(
            op["responses"].get(status.to_string()).is_some(),
            "{method} {path}: {status} is not documented ({body})"
        );
        // Other methods on a documented path: 405. axum answers HEAD with
        // the GET handler, as HTTP wants, so HEAD counts as GET.
        for other in METHODS {
            let documented = doc["paths"][path].get(*other).is_some()
                || (*other == "head" && doc["paths"][path].get("get").is_some());
            if documented {
                continue;
            }
            let (status, body) = call(&http, &node.base, other, path).await;
            assert_eq!(
                status, 405,
                "{other} {path} is served but not documented: {body}"
            );
        }
    }

    // The upgrade's own statuses, which a plain request cannot reach.
    let ws = format!("{}/v1/ws", node.base.replace("http://", "ws://"));
    let (_socket, r) = tokio_tungstenite::connect_async(&ws)
        .await
        .expect("upgrade");
    let mut refused = ws.into_client_request().expect("request");
    refused.headers_mut().insert(
        "Origin",
        "http://elsewhere.example".parse().expect("origin"),
    );
    let refused = match tokio_tungstenite::connect_async(refused).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(r)) => r.status().as_u16(),
        other => panic!("a refused origin upgraded: {other:?}"),
    };
    for status in [r.status().as_u16(), refused] {
        assert!(
            doc["paths"]["/v1/ws"]["get"]["responses"]
                .get(status.to_string())
                .is_some(),
            "GET /v1/ws: {status} is not documented"
        );
    }
    assert_eq!((r.status().as_u16(), refused), (101, 403));

    // A client generator needs a server; this node is one. And every file
    // a description names exists in the repository.
    assert_eq!(doc["servers"][0]["url"], "/", "{}", doc["servers"]);
    let text = doc.to_string();
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/..");
    for word in text.split(|c: char| c.is_whitespace() || "\"(),;`".contains(c)) {
        if word.ends_with(".md") || word.ends_with(".toml") || word.ends_with(".rs") {
            assert!(
                std::path::Path::new(root).join(word).exists(),
                "the document cites {word}, which does not exist"
            );
        }
    }

    // The document holds together: unique operation ids, known security
    // schemes, every $ref resolves, every error answer has a body.
    let schemes = doc["components"]["securitySchemes"]
        .as_object()
        .expect("security schemes");
    assert!(schemes.contains_key("api_key") && schemes.contains_key("user_jwt"));
    let mut ids = BTreeSet::new();
    for (method, path) in &ops {
        let op = &doc["paths"][path][method];
        let id = op["operationId"].as_str().expect("operationId");
        assert!(ids.insert(id.to_owned()), "duplicate operationId {id}");
        for req in op["security"].as_array().into_iter().flatten() {
            for name in req.as_object().expect("requirement").keys() {
                assert!(schemes.contains_key(name), "{method} {path}: scheme {name}");
            }
        }
        let responses = op["responses"].as_object().expect("responses");
        for (status, response) in responses {
            if status.starts_with('4') || status.starts_with('5') {
                assert!(
                    response["content"]
                        .as_object()
                        .is_some_and(|c| !c.is_empty()),
                    "{method} {path}: {status} has no body"
                );
            }
        }
        if !op["security"].is_null() {
            assert!(
                responses.contains_key("401") || path == "/v1/ws",
                "{method} {path}: authenticated but no 401"
            );
        }
    }
    let mut all = Vec::new();
    refs(&doc, &mut all);
    for r in all {
        assert!(resolves(&doc, r), "dangling $ref {r}");
    }
}

/// Routes registered past utoipa-axum would be served but undocumented.
#[test]
fn router_registers_routes_only_through_utoipa_axum() {
    for (file, src) in [
        ("http/mod.rs", include_str!("../src/http/mod.rs")),
        ("lib.rs", include_str!("../src/lib.rs")),
    ] {
        for raw in [
            ".route(",
            ".route_service(",
            ".nest(",
            ".nest_service(",
            ".merge(",
            ".fallback_service(",
        ] {
            assert!(!src.contains(raw), "{file} calls {raw}: use routes!");
        }
    }
}
