//! `chatctl sessions revoke` does what `DELETE /v1/sessions/{sid}` does: the
//! session's sockets on every node are closed 4003 and its key is gone.

use crate::cli::Cli;
use e2e::*;
use serde_json::json;

async fn put_session(stack: &Stack, sid: &str, user: &str) {
    let r = http()
        .put(format!("{}/v1/sessions/{sid}", stack.http(0)))
        .bearer_auth(API_KEY)
        .json(&json!({"user": user, "ttl_secs": 60}))
        .send()
        .await
        .expect("PUT session");
    assert_eq!(r.status().as_u16(), 204);
}

async fn connect(stack: &Stack, node: usize, user: &str, sid: &str) -> Client {
    let t = sign(json!({"sub": user, "exp": now() + 3600, "sid": sid, "rooms": ["*"]}));
    let mut c = Client::connect_with_header(&stack.ws_url(node), Some(&t)).await;
    let ready = c.recv().await;
    assert_eq!(ready["type"], "ready", "{ready}");
    // Fully set up (registered with its node) before the revocation.
    c.send_json(json!({"type": "ping"})).await;
    assert_eq!(c.recv().await["type"], "pong");
    c
}

#[tokio::test]
async fn sessions_revoke_closes_the_sessions_sockets_4003_on_every_node() {
    // The sweeper is slowed down: only the control broadcast can close in time.
    let stack = Stack::builder()
        .nodes(2)
        .workers(0)
        .env("CHAT_REQUIRE_SESSION", "true")
        .env("CHAT_SESSION_SWEEP", "60s")
        .start()
        .await;
    put_session(&stack, "s-gone", "alice").await;
    put_session(&stack, "s-kept", "alice").await;
    let mut a0 = connect(&stack, 0, "alice", "s-gone").await;
    let mut a1 = connect(&stack, 1, "alice", "s-gone").await;
    let mut kept = connect(&stack, 1, "alice", "s-kept").await;
    let cli = Cli::for_stack(&stack);

    let out = cli.run(&["sessions", "revoke", "s-gone"]).await;
    out.ok();
    assert!(out.stdout().contains("s-gone: deleted"), "{}", out.stdout());
    for (node, c) in [("node 0", &mut a0), ("node 1", &mut a1)] {
        let (code, frames) = c.until_closed().await;
        assert_eq!(code, Some(4003), "{node}: {frames:?}");
    }
    kept.send_json(json!({"type": "ping"})).await;
    assert_eq!(
        kept.recv().await["type"],
        "pong",
        "another session is untouched"
    );
    let k = stack.keys();
    let gone = stack.exists(&k.session("s-gone")).await;
    let other = stack.exists(&k.session("s-kept")).await;
    assert!(!gone && other);
    // Its tokens stay refused: the tombstone the API leaves too.
    assert!(stack.exists(&k.session_revoked("s-gone")).await);

    // Again: nothing left to delete, and it says so.
    let out = cli.run(&["sessions", "revoke", "s-gone"]).await;
    out.ok();
    assert!(out.stdout().contains("not in Redis"), "{}", out.stdout());
    let out = cli.run(&["sessions", "revoke", "has space"]).await;
    out.refused();
    assert!(out.stderr().contains("bad session id"), "{}", out.stderr());
}
