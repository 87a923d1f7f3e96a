//! Redis down: `send` answers `unavailable` instead of hanging, `/readyz`
//! says not ready, and everything works again once Redis is back.

use e2e::*;
use serde_json::json;
use std::time::{Duration, Instant};

#[tokio::test]
async fn redis_down_gives_unavailable_and_service_resumes_after_restart() {
    let mut stack = Stack::builder().start().await;
    let mut c = stack.connect(0, "olga").await;
    let epoch = c.join("outage").await["epoch"].clone();
    c.send("outage", "before", "o1").await;
    c.messages(1).await;

    stack.kill_redis();
    let started = Instant::now();
    c.send_json(
        json!({"type": "send", "room": "outage", "text": "during", "client_id": "o2", "ref": "d"}),
    )
    .await;
    let e = c.recv_type("error").await;
    assert_eq!(
        (e["code"].clone(), e["ref"].clone()),
        (json!("unavailable"), json!("d"))
    );
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "answered, not hung: {:?}",
        started.elapsed()
    );
    let r = http()
        .get(format!("{}/readyz", stack.http(0)))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), 503);

    stack.restart_redis_empty();
    // The data is gone: the room comes back with a new epoch.
    let ack = wait_until(Duration::from_secs(20), "send to succeed again", || {
        let url = format!("{}/v1/rooms/outage/messages", stack.http(0));
        async move {
            let r = http()
                .post(url)
                .bearer_auth(API_KEY)
                .json(&json!({"text": "after"}))
                .send()
                .await
                .ok()?;
            if r.status() != 200 {
                return None;
            }
            r.json::<serde_json::Value>().await.ok()
        }
    })
    .await;
    assert_eq!(ack["offset"], 1);
    assert_ne!(ack["epoch"], epoch);
    let r = http()
        .get(format!("{}/readyz", stack.http(0)))
        .send()
        .await
        .expect("readyz");
    assert_eq!(r.status(), 200);
    // The socket that stayed joined gets the new epoch's messages live.
    let m = c.messages(1).await.remove(0);
    assert_eq!(
        (m["epoch"].clone(), m["offset"].clone(), m["text"].clone()),
        (ack["epoch"].clone(), json!(1), json!("after"))
    );
}
