//! The Redis paths that differ on a Redis Cluster, always run there:
//! `rooms tail` (a script and a blocking read on the room's slot) and
//! `dlq replay` (a lease per dead letter, the streams being in other slots).

use crate::cli::Cli;
use e2e::Stack;

#[tokio::test]
async fn on_a_redis_cluster_tail_follows_and_replay_moves_each_dead_letter_once() {
    let stack = Stack::builder().cluster().workers(0).start().await;
    let cli = Cli::for_stack(&stack);
    assert!(
        stack.env["CHAT_REDIS_URL"].starts_with("redis+cluster://"),
        "chatctl is pointed at the cluster"
    );
    let mut tail = cli.spawn(&["rooms", "tail", "c:1"]);
    tail.stderr_until("following c:1").await;
    stack.say("c:1", "ann", "over the cluster").await;
    let line = tail.stdout_line().await;
    assert!(line.ends_with("ann  user  over the cluster"), "{line}");
    assert!(tail.stop("-TERM").await.success());

    crate::dlq::replays_the_workers_format(&stack).await;
}
