//! Sessions (`require_session`, the session handoff API, revocation and
//! sliding expiry) and token expiry (`expiring`, `refresh`).

use e2e::*;
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::time::Instant;

fn now_f64() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs_f64()
}

#[tokio::test]
async fn require_session_checks_sid_and_owner() {
    let stack = Stack::builder()
        .workers(0)
        .env("CHAT_REQUIRE_SESSION", "true")
        .start()
        .await;

    // No `sid` at all: refused, by header and by frame.
    let no_sid = token("alice", &["*"]);
    let mut c = Client::connect_with_header(&stack.ws_url(0), Some(&no_sid)).await;
    c.refused("no sid (header)", None).await;
    let mut c = Client::connect_with_header(&stack.ws_url(0), None).await;
    c.send_json(json!({"type": "auth", "token": no_sid})).await;
    c.refused("no sid (frame)", None).await;

    // A sid never registered: refused.
    let mut c =
        Client::connect_with_header(&stack.ws_url(0), Some(&sid_token("alice", "s-1"))).await;
    c.refused("unregistered sid", None).await;

    // Registered: `ready` names the session.
    stack.put_session(0, "s-1", "alice", 60).await;
    let (mut a, ready) = stack.connect_token(0, &sid_token("alice", "s-1")).await;
    assert_eq!(ready["user"], "alice", "{ready}");
    assert_eq!(ready["session"], "s-1", "{ready}");
    a.ping(json!(1)).await;
    // By frame too.
    let mut b = Client::connect_with_header(&stack.ws_url(0), None).await;
    b.send_json(json!({"type": "auth", "token": sid_token("alice", "s-1")}))
        .await;
    let ready = b.recv().await;
    assert_eq!(ready["type"], "ready", "{ready}");
    assert_eq!(ready["session"], "s-1", "{ready}");

    // A session that belongs to another user: refused.
    stack.put_session(0, "s-bob", "bob", 60).await;
    let mut c =
        Client::connect_with_header(&stack.ws_url(0), Some(&sid_token("alice", "s-bob"))).await;
    c.refused("another user's session", None).await;
    // ... while bob himself gets in.
    let (_bob, ready) = stack.connect_token(0, &sid_token("bob", "s-bob")).await;
    assert_eq!(ready["session"], "s-bob", "{ready}");
}

#[tokio::test]
async fn session_delete_closes_its_sockets_on_every_node_within_1s() {
    // The sweeper is slowed down so only the pub/sub broadcast can close in time.
    let stack = Stack::builder()
        .nodes(2)
        .workers(0)
        .env("CHAT_REQUIRE_SESSION", "true")
        .env("CHAT_SESSION_SWEEP", "60s")
        .start()
        .await;
    stack.put_session(0, "s-gone", "alice", 60).await;
    stack.put_session(1, "s-kept", "alice", 60).await;
    let (mut a0, _) = stack.connect_token(0, &sid_token("alice", "s-gone")).await;
    let (mut a1, _) = stack.connect_token(1, &sid_token("alice", "s-gone")).await;
    let (mut k0, _) = stack.connect_token(0, &sid_token("alice", "s-kept")).await;
    let (mut k1, _) = stack.connect_token(1, &sid_token("alice", "s-kept")).await;
    // Every socket is fully set up before the DELETE.
    for (i, c) in [&mut a0, &mut a1, &mut k0, &mut k1].into_iter().enumerate() {
        c.ping(json!(i)).await;
    }

    let sent = Instant::now();
    let delete = async {
        let resp = http()
            .delete(stack.session_url(0, "s-gone"))
            .bearer_auth(API_KEY)
            .send()
            .await
            .expect("DELETE session");
        assert_eq!(resp.status().as_u16(), 204, "DELETE /v1/sessions/s-gone");
    };
    let (_, (r0, t0), (r1, t1)) = tokio::join!(
        delete,
        async { (a0.until_closed().await, sent.elapsed()) },
        async { (a1.until_closed().await, sent.elapsed()) },
    );
    for (node, (code, frames), took) in [("node 0", r0, t0), ("node 1", r1, t1)] {
        assert_eq!(code, Some(4003), "{node}: frames {frames:?}");
        assert!(
            took < Duration::from_secs(1),
            "{node}: closed {took:?} after the DELETE; the contract says within 1 s"
        );
    }

    // The other session's sockets are untouched, and so is its key.
    k0.ping(json!("k0")).await;
    k1.ping(json!("k1")).await;
    let keys = stack.keys();
    let gone = stack.exists(&keys.session("s-gone")).await;
    let kept = stack.exists(&keys.session("s-kept")).await;
    assert!(!gone, "deleted session still in Redis");
    assert!(kept, "other session removed from Redis");

    // The deleted session cannot be used again.
    let mut c =
        Client::connect_with_header(&stack.ws_url(1), Some(&sid_token("alice", "s-gone"))).await;
    c.refused("deleted session", None).await;
}

#[tokio::test]
async fn idle_session_expires_and_closes_4003() {
    let stack = Stack::builder()
        .workers(0)
        .env("CHAT_REQUIRE_SESSION", "true")
        .start()
        .await;
    let registered = Instant::now();
    stack.put_session(0, "s-short", "alice", 1).await;
    let (mut c, _) = stack.connect_token(0, &sid_token("alice", "s-short")).await;
    let (code, frames) = c.until_closed().await;
    let took = registered.elapsed();
    assert_eq!(code, Some(4003), "frames {frames:?}");
    assert!(
        frames.iter().all(|f| f["type"] == "error"),
        "unexpected frames {frames:?}"
    );
    assert!(
        took >= Duration::from_secs(1) && took < Duration::from_secs(4),
        "session with ttl 1 s closed after {took:?}"
    );
}

#[tokio::test]
async fn active_session_slides_past_its_ttl() {
    let stack = Stack::builder()
        .workers(0)
        .env("CHAT_REQUIRE_SESSION", "true")
        .start()
        .await;
    stack.put_session(0, "s-active", "alice", 2).await;
    let (mut c, _) = stack
        .connect_token(0, &sid_token("alice", "s-active"))
        .await;
    // Activity for 3.5 s, a ping every 300 ms (a pace, not a wait): an
    // expired session would show up as a close instead of a `pong`.
    let start = Instant::now();
    let mut pace = tokio::time::interval(Duration::from_millis(300));
    let mut n = 0u64;
    while start.elapsed() < Duration::from_millis(3500) {
        pace.tick().await;
        c.ping(json!(n)).await;
        n += 1;
    }
    c.ping(json!("last")).await;
    let mut conn = stack.redis().await;
    let ttl: i64 = redis::AsyncCommands::pttl(&mut conn, stack.keys().session("s-active"))
        .await
        .expect("PTTL");
    assert!(
        ttl > 0 && ttl <= 2000,
        "session key after 3.5 s of activity has PTTL {ttl} (ttl_secs 2)"
    );
}

#[tokio::test]
async fn token_expiry_sends_expiring_then_closes_4001_at_exp() {
    let stack = Stack::builder()
        .workers(0)
        .env("CHAT_EXPIRING_NOTICE", "1s")
        .start()
        .await;
    let exp = now() + 2;
    let (mut c, ready) = stack
        .connect_token(0, &sign(json!({"sub": "alice", "exp": exp})))
        .await;
    assert_eq!(ready["exp"], exp, "{ready}");
    let expiring = c.recv().await;
    assert_eq!(expiring["type"], "expiring", "{expiring}");
    assert_eq!(expiring["exp"], exp, "{expiring}");
    let notice_at = now_f64();
    assert!(
        notice_at < exp as f64,
        "expiring came at {notice_at}, after exp {exp}"
    );
    let (code, frames) = c.until_closed().await;
    let closed_at = now_f64();
    assert_eq!(code, Some(4001), "frames {frames:?}");
    for f in &frames {
        assert_eq!(f["type"], "error", "{f}");
        assert_eq!(f["code"], "unauthorized", "{f}");
    }
    assert!(
        closed_at >= exp as f64 - 0.05 && closed_at < exp as f64 + 1.5,
        "closed at {closed_at}, token exp {exp}"
    );
}

#[tokio::test]
async fn refresh_on_expiring_keeps_the_socket_open() {
    let stack = Stack::builder()
        .workers(0)
        .env("CHAT_EXPIRING_NOTICE", "1s")
        .start()
        .await;
    let exp = now() + 2;
    let (mut c, _) = stack
        .connect_token(0, &sign(json!({"sub": "alice", "exp": exp})))
        .await;
    let expiring = c.recv().await;
    assert_eq!(expiring["type"], "expiring", "{expiring}");
    assert_eq!(expiring["exp"], exp, "{expiring}");

    let new_exp = exp + 60;
    c.send_json(json!({
        "type": "refresh",
        "token": sign(json!({"sub": "alice", "exp": new_exp})),
        "ref": "r1",
    }))
    .await;
    let refreshed = c.recv().await;
    assert_eq!(refreshed["type"], "refreshed", "{refreshed}");
    assert_eq!(refreshed["exp"], new_exp, "{refreshed}");
    assert_eq!(refreshed["ref"], "r1", "{refreshed}");

    // Past the old exp (plus the server's whole-second rounding), the socket
    // is still open: the next frame is the `pong`, not an error or a close.
    wait_until(Duration::from_secs(30), "the old exp to pass", || async {
        (now_f64() > exp as f64 + 1.2).then_some(())
    })
    .await;
    c.ping(json!("after")).await;
}

#[tokio::test]
async fn refresh_with_another_users_token_is_refused() {
    let stack = Stack::builder().workers(0).start().await;
    let mut c = stack.connect(0, "alice").await;
    c.send_json(json!({"type": "refresh", "token": token("bob", &["*"]), "ref": "r2"}))
        .await;
    let e = c.recv().await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], "unauthorized", "{e}");
    assert_eq!(e["ref"], "r2", "{e}");
    // An invalid token is refused the same way.
    c.send_json(json!({"type": "refresh", "token": "abc", "ref": "r3"}))
        .await;
    let e = c.recv().await;
    assert_eq!(e["type"], "error", "{e}");
    assert_eq!(e["code"], "unauthorized", "{e}");
    assert_eq!(e["ref"], "r3", "{e}");
    // A bad frame leaves the connection open, still alice's.
    c.ping(json!(1)).await;
}

#[tokio::test]
async fn sessions_api_refuses_bad_bodies_and_bad_keys() {
    let stack = Stack::builder().workers(0).start().await;
    let url = stack.session_url(0, "s-1");
    let client = http();

    for (body, what) in [
        (json!({"user": "alice"}).to_string(), "missing ttl_secs"),
        (json!({"ttl_secs": 60}).to_string(), "missing user"),
        (json!({}).to_string(), "empty object"),
        (json!({"user": "alice", "ttl_secs": 0}).to_string(), "ttl 0"),
        (
            json!({"user": "alice", "ttl_secs": "60"}).to_string(),
            "ttl string",
        ),
        (
            json!({"user": "alice", "ttl_secs": -1}).to_string(),
            "ttl negative",
        ),
        (
            json!({"user": "", "ttl_secs": 60}).to_string(),
            "empty user",
        ),
        (
            json!({"user": "al\u{202E}ice", "ttl_secs": 60}).to_string(),
            "a bidi override in the user",
        ),
        ("not json".to_owned(), "not JSON"),
        (String::new(), "empty body"),
    ] {
        let resp = client
            .put(&url)
            .bearer_auth(API_KEY)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("PUT");
        assert_eq!(resp.status().as_u16(), 400, "{what}");
        let v: Value = resp.json().await.expect("JSON error body");
        assert_eq!(v["error"]["code"], "bad_request", "{what}: {v}");
        assert!(v["error"]["message"].is_string(), "{what}: {v}");
    }

    let good = json!({"user": "alice", "ttl_secs": 60});
    for (key, what) in [
        (None, "no key"),
        (Some("wrong-key-0123456789"), "wrong key"),
    ] {
        let mut put = client.put(&url).json(&good);
        let mut delete = client.delete(&url);
        if let Some(k) = key {
            put = put.bearer_auth(k);
            delete = delete.bearer_auth(k);
        }
        for (req, method) in [(put, "PUT"), (delete, "DELETE")] {
            let resp = req.send().await.expect("request");
            assert_eq!(resp.status().as_u16(), 401, "{method} {what}");
            let v: Value = resp.json().await.expect("JSON error body");
            assert_eq!(v["error"]["code"], "unauthorized", "{method} {what}: {v}");
        }
    }
    // A user's JWT is not an API key.
    let resp = client
        .put(&url)
        .bearer_auth(token("alice", &["*"]))
        .json(&good)
        .send()
        .await
        .expect("PUT");
    assert_eq!(resp.status().as_u16(), 401, "PUT with a user JWT");

    // Nothing was stored by any of the refused calls.
    let mut conn = stack.redis().await;
    let exists: bool = redis::AsyncCommands::exists(&mut conn, stack.keys().session("s-1"))
        .await
        .expect("EXISTS");
    assert!(!exists, "a refused PUT stored the session");

    // Positive control: the same request with the key succeeds.
    stack.put_session(0, "s-1", "alice", 60).await;
    let ttl: i64 = redis::AsyncCommands::ttl(&mut conn, stack.keys().session("s-1"))
        .await
        .expect("TTL");
    assert!(ttl > 0 && ttl <= 60, "session TTL {ttl}");
}

#[tokio::test]
async fn refresh_for_another_session_is_refused_and_lowercase_bearer_is_accepted() {
    let stack = Stack::builder()
        .env("CHAT_REQUIRE_SESSION", "true")
        .start()
        .await;
    stack.put_session(0, "s-a", "alice", 60).await;
    stack.put_session(0, "s-b", "alice", 60).await;
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(
        stack.ws_url(0),
    )
    .expect("request");
    req.headers_mut().insert(
        "Authorization",
        format!("bearer {}", sid_token("alice", "s-a"))
            .parse()
            .expect("header"),
    );
    let (mut ws, _) = tokio_tungstenite::connect_async(req)
        .await
        .expect("connect");
    let first = tokio::time::timeout(FRAME_TIMEOUT, futures_util::StreamExt::next(&mut ws))
        .await
        .expect("a frame")
        .expect("open")
        .expect("frame");
    let ready: Value = serde_json::from_str(first.to_text().expect("text")).expect("json");
    assert_eq!(
        ready["type"], "ready",
        "the scheme is case-insensitive: {ready}"
    );
    let (mut c, _) = stack.connect_token(0, &sid_token("alice", "s-a")).await;
    c.send_json(
        serde_json::json!({"type": "refresh", "token": sid_token("alice", "s-b"), "ref": "x"}),
    )
    .await;
    let e = c.recv().await;
    assert_eq!(
        (e["code"].as_str(), e["ref"].as_str()),
        (Some("unauthorized"), Some("x"))
    );
}

#[tokio::test]
async fn refresh_to_a_narrower_claim_leaves_the_rooms_it_no_longer_allows() {
    let stack = Stack::builder().workers(0).start().await;
    stack.add_member("club", "alice").await;
    let t = |rooms: &[&str]| sign(json!({"sub": "alice", "exp": now() + 3600, "rooms": rooms}));
    let (mut c, _) = stack.connect_token(0, &t(&["team:*", "lobby"])).await;
    for room in ["team:eng", "lobby", "club"] {
        c.send_json(json!({"type": "join", "room": room})).await;
        c.recv_type("joined").await;
    }

    // The new token drops `team:*`; `club` stays by membership.
    c.send_json(json!({"type": "refresh", "token": t(&["lobby"]), "ref": "r"}))
        .await;
    assert_eq!(c.recv_type("refreshed").await["ref"], "r");
    let left = c.recv_type("left").await;
    assert_eq!(left["room"], "team:eng", "{left}");
    assert!(left.get("ref").is_none_or(Value::is_null), "{left}");
    // Nothing else is left, and the room is really gone from the socket.
    c.send_json(
        json!({"type": "send", "room": "team:eng", "text": "x", "client_id": "c1", "ref": 1}),
    )
    .await;
    let e = c.recv_type("error").await;
    assert_eq!(e["code"], "not_joined", "{e}");
    for (room, id) in [("lobby", "c2"), ("club", "c3")] {
        let ack = c.send(room, "still here", id).await;
        assert_eq!(ack["room"], room, "{ack}");
        // Delivered by this node itself (there is no fanout worker here).
        let m = c.messages(1).await;
        assert_eq!(
            (m[0]["room"].as_str(), m[0]["client_id"].as_str()),
            (Some(room), Some(id))
        );
    }
    c.send_json(json!({"type": "join", "room": "team:eng", "ref": 2}))
        .await;
    let e = c.recv_type("error").await;
    assert_eq!(e["code"], "forbidden", "{e}");
}

#[tokio::test]
async fn a_deleted_session_leaves_a_tombstone_that_a_new_put_lifts() {
    let stack = Stack::builder().workers(0).start().await;
    stack.put_session(0, "s-t", "alice", 60).await;
    let r = http()
        .delete(stack.session_url(0, "s-t"))
        .bearer_auth(API_KEY)
        .send()
        .await
        .expect("DELETE");
    assert_eq!(r.status().as_u16(), 204);
    let k = stack.keys();
    assert!(
        stack.exists(&k.session_revoked("s-t")).await,
        "no tombstone"
    );
    let mut c =
        Client::connect_with_header(&stack.ws_url(0), Some(&sid_token("alice", "s-t"))).await;
    c.refused("a revoked sid", None).await;
    stack.put_session(0, "s-t", "alice", 60).await;
    assert!(!stack.exists(&k.session_revoked("s-t")).await);
    let (mut c, ready) = stack.connect_token(0, &sid_token("alice", "s-t")).await;
    assert_eq!(ready["type"], "ready", "{ready}");
    c.ping(json!("back")).await;
}
