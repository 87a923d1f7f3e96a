use e2e::*;

#[tokio::test]
async fn a_message_reaches_another_node() {
    let stack = Stack::builder().nodes(2).start().await;
    let mut alice = stack.connect(0, "alice").await;
    let mut bob = stack.connect(1, "bob").await;
    let j = alice.join("lobby").await;
    assert_eq!(j["offset"], 0);
    bob.join("lobby").await;
    let ack = alice.send("lobby", "hello", "c1").await;
    assert_eq!(ack["offset"], 1);
    assert_eq!(ack["duplicate"], false);
    let m = bob.messages(1).await;
    assert_eq!(m[0]["text"], "hello");
    assert_eq!(m[0]["user"], "alice");
}
