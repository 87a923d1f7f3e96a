//! Logs as a log pipeline reads them: with `CHAT_LOG_FORMAT=json` every line
//! is one JSON object with the service, the node, and the fields of the
//! event and its spans at the top level; a refused socket is one INFO line
//! naming the reason; text logs written to a file carry no ANSI codes.

use super::support::{API_KEY, Node, Ws, http, token_with};
use chat_devkit::redis_server::RedisServer;
use chat_devkit::testing::wait_until;
use serde_json::{Value, json};
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_per_line_with_room_user_and_node() {
    let redis = RedisServer::start().expect("redis-server");
    let node = Node::start(
        &redis.url(),
        &[
            ("CHAT_LOG_FORMAT", "json"),
            ("CHAT_NODE_ID", "node-7"),
            ("RUST_LOG", "info,ingress::ws=debug"),
        ],
        None,
    )
    .await;
    // A refused socket, and a membership withdrawn from a joined user.
    let mut bad = Ws::connect(&node.ws_url(), Some("not-a-token")).await;
    assert_eq!(bad.until_closed().await.0, Some(4001));
    // Its token names no room: membership is its only way in.
    let mut vic = node.connect(&token_with("vic", json!({"rooms": []}))).await;
    let r = http()
        .put(node.http("/v1/rooms/ops/members/vic"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("PUT member");
    assert!(r.status().is_success());
    vic.send(json!({"type": "join", "room": "ops"})).await;
    let joined = vic.frame().await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let r = http()
        .delete(node.http("/v1/rooms/ops/members/vic"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("DELETE member");
    assert!(r.status().is_success());
    assert_eq!(vic.until_closed().await.0, Some(4003));

    let lines: Vec<Value> = wait_until(Duration::from_secs(10), "both log lines", || async {
        let text = node.log_text();
        let lines: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect();
        let withdrawn = lines.iter().any(|l| l["message"] == "membership withdrawn");
        let refused = lines.iter().any(|l| l["message"] == "socket refused");
        (withdrawn && refused).then_some(lines)
    })
    .await;
    for l in &lines {
        assert_eq!(l["service"], "ingress", "{l}");
        assert_eq!(l["node"], "node-7", "{l}");
        assert!(l["timestamp"].is_string() && l["level"].is_string(), "{l}");
    }
    let refused: Vec<&Value> = lines
        .iter()
        .filter(|l| l["message"] == "socket refused")
        .collect();
    assert_eq!(refused.len(), 1, "one line per refused socket");
    assert_eq!(refused[0]["level"], "INFO");
    assert_eq!(refused[0]["reason"], "auth");
    let withdrawn = lines
        .iter()
        .find(|l| l["message"] == "membership withdrawn")
        .expect("withdrawn");
    assert_eq!(
        (&withdrawn["room"], &withdrawn["user"]),
        (&json!("ops"), &json!("vic"))
    );
    // Inside the socket's span, its fields are top-level too.
    let closing = wait_until(Duration::from_secs(10), "vic's socket closing", || async {
        node.log_text()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .find(|l| l["message"] == "socket closing" && l["user"] == "vic")
    })
    .await;
    assert!(
        closing["socket"].is_u64() && closing["span"] == "socket",
        "{closing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_logs_to_a_file_have_no_ansi_codes() {
    let redis = RedisServer::start().expect("redis-server");
    let node = Node::start(&redis.url(), &[], None).await;
    let mut bad = Ws::connect(&node.ws_url(), Some("not-a-token")).await;
    assert_eq!(bad.until_closed().await.0, Some(4001));
    let text = wait_until(Duration::from_secs(10), "the refusal logged", || async {
        let t = node.log_text();
        t.contains("socket refused").then_some(t)
    })
    .await;
    assert!(!text.contains('\u{1b}'), "{text}");
}
