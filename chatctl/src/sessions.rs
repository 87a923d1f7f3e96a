//! `chatctl sessions revoke SID`: what `DELETE /v1/sessions/{sid}` does, by
//! the same code: the session key is deleted, a tombstone keeps its tokens
//! refused (`CHAT_REVOKED_SESSION_TTL`), and every ingress node is told on
//! the control channel to close the session's sockets (4003).

use crate::context::Context;
use anyhow::bail;

pub async fn revoke(ctx: &Context, sid: &str) -> anyhow::Result<()> {
    if !chat_core::sessions::valid_sid(sid) {
        bail!("bad session id {sid:?}: 1-128 printable ASCII characters");
    }
    let mut conn = ctx.redis().await?;
    let existed =
        chat_core::sessions::revoke_session(&mut conn, &ctx.keys, sid, ctx.revoked_session_ttl)
            .await?;
    println!(
        "session {sid}: {}; every ingress node closes its sockets (4003)",
        if existed {
            "deleted"
        } else {
            "not in Redis (expired or already revoked)"
        }
    );
    Ok(())
}
