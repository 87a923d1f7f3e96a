//! `chatctl sessions revoke` does what `DELETE /v1/sessions/{sid}` does: the
//! session's sockets on every node are closed 4003 and its key is gone.

use crate::cli::Cli;
use e2e::*;
use serde_json::json;

async fn connect(stack: &Stack, node: usize, user: &str, sid: &str) -> Client {
    let (mut c, _) = stack.connect_token(node, &sid_token(user, sid)).await;
    // Fully set up (registered with its node) before the revocation.
    c.ping(json!(0)).await;
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
    stack.put_session(0, "s-gone", "alice", 60).await;
    stack.put_session(0, "s-kept", "alice", 60).await;
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
    // Another session is untouched.
    kept.ping(json!(1)).await;
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
