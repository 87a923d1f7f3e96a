//! Every frame of the contract, its reply, `ref` echo, and the error and
//! close codes that apply.

use e2e::*;
use redis::AsyncCommands;
use serde_json::{Value, json};
use tokio_tungstenite::tungstenite::Message as WsMessage;

async fn assert_usable(c: &mut Client) {
    c.send_json(json!({"type": "ping", "ref": "alive"})).await;
    let f = c.recv_type("pong").await;
    assert_eq!(f["ref"], "alive");
}

#[tokio::test]
async fn every_client_frame_gets_its_reply_with_ref_echoed() {
    let stack = Stack::builder().start().await;
    let mut alice = stack.connect(0, "alice").await;
    let mut bob = stack.connect(0, "bob").await;

    alice
        .send_json(json!({"type": "join", "room": "lobby", "ref": 1}))
        .await;
    let j = alice.recv_type("joined").await;
    assert_eq!(
        (j["ref"].clone(), j["room"].clone(), j["offset"].clone()),
        (json!(1), json!("lobby"), json!(0))
    );
    assert!(j["epoch"].as_str().is_some_and(|e| !e.is_empty()));
    assert!(j.get("recovered").is_none(), "no since, no recovered: {j}");

    bob.send_json(json!({"type": "join", "room": "lobby", "ref": "b"}))
        .await;
    assert_eq!(bob.recv_type("joined").await["ref"], "b");
    let p = alice.recv().await;
    assert_eq!(
        p,
        json!({"type": "presence", "room": "lobby", "user": "bob", "state": "join"})
    );

    alice
        .send_json(
            json!({"type": "send", "room": "lobby", "text": "hi", "client_id": "c-1", "ref": 2}),
        )
        .await;
    let ack = alice.recv_type("ack").await;
    assert_eq!(ack["ref"], 2);
    assert_eq!(ack["room"], "lobby");
    assert_eq!(ack["client_id"], "c-1");
    assert_eq!(ack["offset"], 1);
    assert_eq!(ack["epoch"], j["epoch"]);
    assert_eq!(ack["duplicate"], false);
    assert!(ack["id"].as_str().is_some_and(|s| s.starts_with("1-")));
    assert!(ack["ts"].as_u64().is_some_and(|t| t > 1_700_000_000_000));
    for c in [&mut alice, &mut bob] {
        let m = c.messages(1).await.remove(0);
        assert_eq!(m["type"], "message");
        assert_eq!(m["offset"], 1);
        assert_eq!(m["text"], "hi");
        assert_eq!(m["user"], "alice");
        assert_eq!(m["client_id"], "c-1");
        assert_eq!(m["kind"], "user");
        assert_eq!(m["epoch"], ack["epoch"]);
        assert_eq!(m["id"], ack["id"]);
        assert_eq!(m["ts"], ack["ts"]);
        assert!(m.get("ref").is_none());
    }

    alice
        .send_json(json!({"type": "history", "room": "lobby", "ref": 3}))
        .await;
    let h = alice.recv_type("history").await;
    assert_eq!(h["ref"], 3);
    assert_eq!(h["epoch"], ack["epoch"]);
    assert_eq!(h["messages"].as_array().map(Vec::len), Some(1));
    assert_eq!(h["messages"][0]["text"], "hi");
    assert!(h["messages"][0].get("type").is_none());

    alice
        .send_json(json!({"type": "typing", "room": "lobby", "ref": 4}))
        .await;
    assert_eq!(
        bob.recv().await,
        json!({"type": "typing", "room": "lobby", "user": "alice"})
    );

    alice
        .send_json(json!({"type": "read", "room": "lobby", "offset": 1}))
        .await;
    let r = stack.redis().await;
    let marker: Option<String> = wait_until(FRAME_TIMEOUT, "read marker", || {
        let mut r = r.clone();
        let key = stack.keys().room_reads("lobby");
        async move {
            r.hget::<_, _, Option<String>>(key, "alice")
                .await
                .ok()
                .flatten()
        }
    })
    .await
    .into();
    assert_eq!(
        marker,
        Some(format!("{}:1", ack["epoch"].as_str().expect("epoch")))
    );

    alice.ping(json!(5)).await;

    alice
        .send_json(json!({"type": "leave", "room": "lobby", "ref": 6}))
        .await;
    assert_eq!(
        alice.recv_type("left").await,
        json!({"type": "left", "room": "lobby", "ref": 6})
    );
    assert_eq!(
        bob.recv().await,
        json!({"type": "presence", "room": "lobby", "user": "alice", "state": "leave"})
    );
    // After leaving, nothing more from the room.
    bob.send("lobby", "after", "c-2").await;
    bob.messages(1).await;
    alice.ping(json!(7)).await;
}

#[tokio::test]
async fn bad_frames_get_error_codes_and_the_socket_stays_usable() {
    let stack = Stack::builder()
        .env("CHAT_MAX_TEXT_BYTES", "16")
        .start()
        .await;
    let mut c = stack.connect(0, "carol").await;
    let cases: Vec<(Value, &str)> = vec![
        (json!({"ref": 1}), "bad_request"),
        (json!({"type": "nope", "ref": 1}), "bad_request"),
        (json!({"type": "join", "ref": 1}), "bad_request"),
        (
            json!({"type": "join", "room": "has space", "ref": 1}),
            "bad_request",
        ),
        (
            json!({"type": "join", "room": "x".repeat(129), "ref": 1}),
            "bad_request",
        ),
        (
            json!({"type": "history", "room": "r", "limit": 101, "ref": 1}),
            "bad_request",
        ),
        (
            json!({"type": "history", "room": "r", "limit": 0, "ref": 1}),
            "bad_request",
        ),
        (
            json!({"type": "send", "room": "r", "text": "hi", "ref": 1}),
            "bad_request",
        ),
        (
            json!({"type": "send", "room": "r", "text": "hi", "client_id": "x".repeat(65), "ref": 1}),
            "bad_request",
        ),
        (
            json!({"type": "send", "room": "r", "text": "", "client_id": "c", "ref": 1}),
            "bad_request",
        ),
        (
            json!({"type": "send", "room": "r", "text": "x".repeat(17), "client_id": "c", "ref": 1}),
            "too_large",
        ),
        (
            json!({"type": "send", "room": "r", "text": "hi", "client_id": "c", "ref": 1}),
            "not_joined",
        ),
        (
            json!({"type": "leave", "room": "r", "ref": 1}),
            "not_joined",
        ),
        (
            json!({"type": "typing", "room": "r", "ref": 1}),
            "not_joined",
        ),
        (
            json!({"type": "read", "room": "r", "offset": 1, "ref": 1}),
            "not_joined",
        ),
        (
            json!({"type": "auth", "token": "x", "ref": 1}),
            "bad_request",
        ),
    ];
    for (frame, code) in cases {
        c.send_json(frame.clone()).await;
        let e = c.recv().await;
        assert_eq!(e["type"], "error", "{frame} -> {e}");
        assert_eq!(e["code"], code, "{frame} -> {e}");
        assert_eq!(e["ref"], 1, "{frame} -> {e}");
        assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()));
    }
    for raw in ["not json", "[1,2]", "42", "{\"type\": 7}"] {
        c.send_raw(WsMessage::Text(raw.into())).await;
        let e = c.recv().await;
        assert_eq!(
            (e["type"].as_str(), e["code"].as_str()),
            (Some("error"), Some("bad_request")),
            "{raw}"
        );
    }
    assert_usable(&mut c).await;
}

#[tokio::test]
async fn joining_needs_the_claim_or_membership_and_withdrawal_closes_4003() {
    let stack = Stack::builder().start().await;
    let tok = token("dave", &["team:*"]);
    let mut c = Client::connect_with_header(&stack.ws_url(0), Some(&tok)).await;
    assert_eq!(c.recv().await["type"], "ready");
    assert_eq!(c.join("team:eng").await["room"], "team:eng");
    c.send_json(json!({"type": "join", "room": "private", "ref": 9}))
        .await;
    let e = c.recv().await;
    assert_eq!(
        (e["code"].clone(), e["ref"].clone()),
        (json!("forbidden"), json!(9))
    );
    c.send_json(json!({"type": "history", "room": "private", "ref": 10}))
        .await;
    assert_eq!(c.recv().await["code"], "forbidden");

    let http = http();
    let url = format!("{}/v1/rooms/private/members/dave", stack.http(0));
    let r = http
        .put(&url)
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("put member");
    assert_eq!(r.status(), 204);
    assert_eq!(c.join("private").await["room"], "private");

    let r = http
        .delete(&url)
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("delete member");
    assert_eq!(r.status(), 204);
    let (code, _) = c.until_closed().await;
    assert_eq!(code, Some(4003));
}

#[tokio::test]
async fn binary_frames_close_1003() {
    let stack = Stack::builder().start().await;
    let mut c = stack.connect(0, "erin").await;
    c.send_raw(WsMessage::Binary(vec![1, 2, 3].into())).await;
    let (code, frames) = c.until_closed().await;
    assert_eq!(code, Some(1003));
    assert_eq!(
        frames.last().map(|f| f["code"].clone()),
        Some(json!("bad_request"))
    );
}

#[tokio::test]
async fn frames_over_the_limit_close_1009() {
    let stack = Stack::builder()
        .env("CHAT_MAX_FRAME_BYTES", "1024")
        .env("CHAT_MAX_TEXT_BYTES", "512")
        .start()
        .await;
    let mut c = stack.connect(0, "fay").await;
    let big = json!({"type": "ping", "pad": "x".repeat(2000)});
    c.send_json(big).await;
    let (code, _) = c.until_closed().await;
    assert_eq!(code, Some(1009));
}

#[tokio::test]
async fn frames_over_the_rate_are_refused_then_abuse_closes_4008() {
    let stack = Stack::builder()
        .env("CHAT_RATE_PER_SEC", "0.5")
        .env("CHAT_RATE_BURST", "3")
        .start()
        .await;
    let mut c = stack.connect(0, "gus").await;
    for i in 0..3 {
        c.ping(json!(i)).await;
    }
    c.send_json(json!({"type": "ping", "ref": "over"})).await;
    let e = c.recv().await;
    assert_eq!(
        (e["code"].clone(), e["ref"].clone()),
        (json!("rate_limited"), json!("over"))
    );
    for _ in 0..10 {
        c.send_json(json!({"type": "ping"})).await;
    }
    let (code, frames) = c.until_closed().await;
    assert_eq!(code, Some(4008));
    assert!(
        frames.iter().all(|f| f["code"] == "rate_limited"),
        "{frames:?}"
    );
}

#[tokio::test]
async fn duplicate_client_id_is_stored_once_and_acked_with_the_original_offset() {
    let stack = Stack::builder().start().await;
    let mut a = stack.connect(0, "hal").await;
    let mut b = stack.connect(0, "ivy").await;
    let mut watcher = stack.connect(0, "lu").await;
    a.join("dups").await;
    b.join("dups").await;
    watcher.join("dups").await;
    let first = a.send("dups", "once", "same-id").await;
    let again = a.send("dups", "once", "same-id").await;
    assert_eq!(again["duplicate"], true);
    for f in ["offset", "epoch", "id", "ts"] {
        assert_eq!(first[f], again[f], "{f}");
    }
    // Another user may use the same client_id: it is theirs.
    let other = b.send("dups", "mine", "same-id").await;
    assert_eq!(
        (other["duplicate"].clone(), other["offset"].clone()),
        (json!(false), json!(2))
    );
    let got = watcher.messages(2).await;
    assert_eq!(
        got.iter().map(|m| m["offset"].clone()).collect::<Vec<_>>(),
        vec![json!(1), json!(2)]
    );
    let mut r = stack.redis().await;
    let len: u64 = r
        .xlen(stack.keys().room_stream("dups"))
        .await
        .expect("xlen");
    assert_eq!(len, 2);
    // Nothing else was delivered: the next message is offset 3.
    b.send("dups", "next", "n-1").await;
    assert_eq!(watcher.messages(1).await[0]["offset"], 3);
}

#[tokio::test]
async fn http_api_publish_history_members_presence_and_health() {
    let stack = Stack::builder().start().await;
    let base = stack.http(0);
    let http = http();
    let mut watcher = stack.connect(0, "jo").await;
    watcher.join("news").await;

    let r = http
        .post(format!("{base}/v1/rooms/news/messages"))
        .bearer_auth(API_KEY)
        .json(&json!({"text": "from the backend", "user": "bot", "kind": "system", "client_id": "b-1"}))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 200);
    let ack: Value = r.json().await.expect("ack json");
    assert_eq!(
        (ack["offset"].clone(), ack["duplicate"].clone()),
        (json!(1), json!(false))
    );
    let m = watcher.messages(1).await.remove(0);
    assert_eq!(
        (m["user"].clone(), m["kind"].clone()),
        (json!("bot"), json!("system"))
    );

    for i in 2..=5 {
        http.post(format!("{base}/v1/rooms/news/messages"))
            .bearer_auth(API_KEY)
            .json(&json!({"text": format!("m{i}")}))
            .send()
            .await
            .expect("publish");
    }
    // The default kind: a message with an author is theirs, one without a
    // notice from the app.
    let r = http
        .post(format!("{base}/v1/rooms/news/messages"))
        .bearer_auth(API_KEY)
        .json(&json!({"text": "hi from ann's phone", "user": "ann"}))
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 200);
    let seen = watcher.messages(5).await;
    let kinds: Vec<(&str, &str)> = seen
        .iter()
        .map(|m| {
            (
                m["user"].as_str().unwrap_or(""),
                m["kind"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("system", "system"),
            ("system", "system"),
            ("system", "system"),
            ("system", "system"),
            ("ann", "user")
        ]
    );
    let h = stack.history_http("news", "before=5&limit=2").await;
    let offsets: Vec<u64> = h["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter_map(|m| m["offset"].as_u64())
        .collect();
    assert_eq!(offsets, vec![3, 4]);
    assert_eq!(h["epoch"], ack["epoch"]);

    // A member reads with their own token; a stranger may not.
    let member = token("jo", &["news"]);
    let r = http
        .get(format!("{base}/v1/rooms/news/messages"))
        .bearer_auth(&member)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 200);
    let stranger = token("kim", &["elsewhere"]);
    let r = http
        .get(format!("{base}/v1/rooms/news/messages"))
        .bearer_auth(&stranger)
        .send()
        .await
        .expect("get");
    assert_eq!(r.status(), 403);
    let body: Value = r.json().await.expect("json");
    assert_eq!(body["error"]["code"], "forbidden");

    let p: Value = http
        .get(format!("{base}/v1/rooms/news/presence"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("presence")
        .json()
        .await
        .expect("json");
    assert_eq!(p["users"], json!(["jo"]));

    let checks: Vec<(reqwest::RequestBuilder, u16, &str)> = vec![
        (
            http.post(format!("{base}/v1/rooms/news/messages"))
                .json(&json!({"text": "x"})),
            401,
            "unauthorized",
        ),
        (
            http.post(format!("{base}/v1/rooms/news/messages"))
                .bearer_auth("wrong-key-0123456789")
                .json(&json!({"text": "x"})),
            401,
            "unauthorized",
        ),
        (
            http.post(format!("{base}/v1/rooms/news/messages"))
                .bearer_auth(API_KEY)
                .body("{nope"),
            400,
            "bad_request",
        ),
        (
            http.post(format!("{base}/v1/rooms/news/messages"))
                .bearer_auth(API_KEY)
                .json(&json!({"text": ""})),
            400,
            "bad_request",
        ),
        (
            http.post(format!("{base}/v1/rooms/bad%20room/messages"))
                .bearer_auth(API_KEY)
                .json(&json!({"text": "x"})),
            400,
            "bad_request",
        ),
        (
            http.post(format!("{base}/v1/rooms/news/messages"))
                .bearer_auth(API_KEY)
                .json(&json!({"text": "x".repeat(5000)})),
            413,
            "too_large",
        ),
        (
            http.get(format!("{base}/v1/rooms/news/messages?limit=500"))
                .bearer_auth(API_KEY),
            400,
            "bad_request",
        ),
        (
            http.get(format!("{base}/v1/rooms/news/messages?before=abc"))
                .bearer_auth(API_KEY),
            400,
            "bad_request",
        ),
        (
            http.put(format!("{base}/v1/rooms/news/members/u1")),
            401,
            "unauthorized",
        ),
        (http.get(format!("{base}/v1/nothing")), 404, "not_found"),
    ];
    for (req, status, code) in checks {
        let r = req.send().await.expect("request");
        assert_eq!(r.status(), status);
        let body: Value = r.json().await.expect("error body is JSON");
        assert_eq!(body["error"]["code"], code, "{body}");
        assert!(body["error"]["message"].is_string());
    }

    let r = http
        .get(format!("{base}/healthz"))
        .send()
        .await
        .expect("healthz");
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("{base}/readyz"))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), 200);
    let r = http
        .get(format!("{base}/"))
        .send()
        .await
        .expect("demo page");
    assert!(
        r.text()
            .await
            .expect("html")
            .contains("<title>chat demo</title>")
    );
}
