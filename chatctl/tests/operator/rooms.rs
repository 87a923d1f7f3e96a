//! `chatctl rooms tail` follows a room from its stream until a signal;
//! `chatctl rooms history` reads it through the ingress's history code,
//! the archive included.

use crate::cli::Cli;
use e2e::Stack;
use serde_json::Value;
use std::time::Duration;

#[tokio::test]
async fn tail_prints_new_messages_until_sigterm() {
    let stack = Stack::builder().workers(0).start().await;
    stack.publish("lobby", 2).await;
    let cli = Cli::for_stack(&stack);
    let mut tail = cli.spawn(&["rooms", "tail", "lobby"]);
    let ready = tail.stderr_until("following lobby").await;
    assert!(ready.contains("after offset 2"), "{ready}");
    stack.say("lobby", "ann", "hello").await;
    stack.say("lobby", "bob", "two\nlines").await;
    let ack = stack.say("lobby", "ann", "third").await;
    let lines = [
        tail.stdout_line().await,
        tail.stdout_line().await,
        tail.stdout_line().await,
    ];
    // offset, time, user, kind, text: only what came after the start.
    let fields: Vec<Vec<&str>> = lines
        .iter()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(fields[0][0], "3", "{lines:?}");
    assert_eq!(fields[0][2..], ["ann", "user", "hello"], "{lines:?}");
    assert_eq!(
        fields[1][2..],
        ["bob", "user", "two\\nlines"],
        "one line: {lines:?}"
    );
    assert_eq!(fields[2][0], "5");
    let ts = ack["ts"].as_u64().expect("ts");
    assert_eq!(fields[2][1], humantime_rfc3339(ts), "{lines:?}");
    // The room leaves Redis and comes back (a new epoch, offsets from 1):
    // the tail follows the new stream.
    stack.expire_room("lobby").await;
    let reborn = stack.say("lobby", "dee", "reborn").await;
    let notice = tail.stderr_until("new epoch").await;
    assert!(
        notice.contains(reborn["epoch"].as_str().expect("epoch")),
        "{notice}"
    );
    let line = tail.stdout_line().await;
    assert!(
        line.trim_start().starts_with("1 ") && line.ends_with("dee  user  reborn"),
        "{line}"
    );
    let status = tail.stop("-TERM").await;
    assert!(status.success(), "SIGTERM is a clean exit: {status:?}");
}

fn humantime_rfc3339(ms: u64) -> String {
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms);
    humantime::format_rfc3339_millis(t).to_string()
}

#[tokio::test]
async fn tail_json_since_an_offset_prints_message_frames() {
    let stack = Stack::builder().workers(0).start().await;
    let first = stack.publish("team:eng", 3).await;
    let cli = Cli::for_stack(&stack);
    let mut tail = cli.spawn(&["rooms", "tail", "team:eng", "--since", "1", "--json"]);
    tail.stderr_until("following team:eng").await;
    let ack = stack.say("team:eng", "cy", "live one").await;
    let frames: Vec<Value> = [
        tail.stdout_line().await,
        tail.stdout_line().await,
        tail.stdout_line().await,
    ]
    .iter()
    .map(|l| serde_json::from_str(l).expect("one JSON object per line"))
    .collect();
    let offsets: Vec<u64> = frames
        .iter()
        .map(|f| f["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(offsets, vec![2, 3, 4], "after offset 1, then live");
    let live = &frames[2];
    for k in ["room", "offset", "id", "epoch", "ts", "client_id"] {
        assert_eq!(live[k], ack[k], "{k}: {live}");
    }
    assert_eq!(live["type"], "message");
    assert_eq!(
        (
            live["user"].as_str(),
            live["text"].as_str(),
            live["kind"].as_str()
        ),
        (Some("cy"), Some("live one"), Some("user"))
    );
    assert_eq!(frames[0]["epoch"], first["epoch"]);
    let status = tail.stop("-INT").await;
    assert!(status.success(), "Ctrl-C is a clean exit: {status:?}");
}

/// Malformed entries (skipped with a warning) count toward a full page:
/// a page that is short of messages only because some did not parse is
/// followed by the next page, not taken for the end of the stream.
#[tokio::test]
async fn tail_reads_past_malformed_entries_in_a_full_page() {
    let stack = Stack::builder().workers(0).start().await;
    let room = "bad:entries";
    stack.publish(room, 1).await;
    // Offset 2 is malformed, 3..=599 are good, 600..=1100 (more than a
    // page of 500) malformed, 1101..=1105 good.
    stack
        .write_room_entries(room, 2..=1105, |o| o == 2 || (600..=1100).contains(&o))
        .await;

    let mut cli = Cli::for_stack(&stack);
    // A warning per malformed entry would fill the stderr pipe this test
    // does not drain.
    cli.set("RUST_LOG", "error");
    let mut tail = cli.spawn(&["rooms", "tail", room, "--since", "0"]);
    tail.stderr_until("following bad:entries").await;
    let want: Vec<u64> = std::iter::once(1)
        .chain(3..=599)
        .chain(1101..=1105)
        .collect();
    let mut got = Vec::new();
    while got.len() < want.len() {
        let next = tokio::time::timeout(Duration::from_secs(5), tail.stdout.next_line()).await;
        let Ok(Ok(Some(line))) = next else { break };
        got.push(
            line.split_whitespace()
                .next()
                .and_then(|o| o.parse::<u64>().ok())
                .expect("offset"),
        );
    }
    assert!(
        got == want,
        "{} of {} messages printed, the last {:?}; missing: {:?}",
        got.len(),
        want.len(),
        got.last(),
        want.iter()
            .filter(|o| !got.contains(o))
            .take(10)
            .collect::<Vec<_>>()
    );
    // And it still follows: the next message is the one after them all.
    stack.say(room, "ann", "after").await;
    let line = tail.stdout_line().await;
    assert!(
        line.trim_start().starts_with("1106 ") && line.ends_with("ann  user  after"),
        "{line}"
    );
    let status = tail.stop("-TERM").await;
    assert!(status.success(), "{status:?}");
}

#[tokio::test]
async fn bad_room_names_and_arguments_are_refused_plainly() {
    let cli = Cli::with_env(&[("CHAT_REDIS_URL", "redis://127.0.0.1:1/")]);
    for args in [
        &["rooms", "tail", "no spaces"][..],
        &["rooms", "history", "x/y"][..],
        &["rooms", "tail", &"r".repeat(129)][..],
    ] {
        let out = cli.run(args).await;
        out.refused();
        assert!(
            out.stderr().contains("^[A-Za-z0-9_.:-]{1,128}$"),
            "{args:?}: {}",
            out.stderr()
        );
    }
    let out = cli.run(&["rooms", "history", "ok", "--limit", "0"]).await;
    out.refused();
    assert!(out.stderr().contains("--limit"), "{}", out.stderr());
    let out = cli.run(&["rooms", "history", "ok", "--epoch", "a b"]).await;
    out.refused();
    let out = cli.run(&["rooms", "tail", "ok", "--since", "-3"]).await;
    out.refused();
}

#[tokio::test]
async fn history_pages_back_through_redis() {
    let stack = Stack::builder().workers(0).start().await;
    let last = stack.publish("hist", 7).await;
    let cli = Cli::for_stack(&stack);
    let out = cli.run(&["rooms", "history", "hist", "--limit", "3"]).await;
    out.ok();
    let text = out.stdout();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        format!("# hist, epoch {}", last["epoch"].as_str().expect("epoch"))
    );
    let offsets: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split_whitespace().next().expect("offset"))
        .collect();
    assert_eq!(offsets, ["5", "6", "7"], "the newest, oldest first: {text}");
    assert!(lines[3].ends_with("pub  user  m6"), "{text}");
    assert!(
        out.stderr().contains("--before 5"),
        "where older ones are: {}",
        out.stderr()
    );

    let out = cli
        .run(&[
            "rooms", "history", "hist", "--before", "3", "--json", "--limit", "100",
        ])
        .await;
    out.ok();
    let msgs: Vec<Value> = out
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    let offsets: Vec<u64> = msgs
        .iter()
        .map(|m| m["offset"].as_u64().expect("offset"))
        .collect();
    assert_eq!(offsets, vec![1, 2]);
    assert_eq!(msgs[0]["text"], "m0");
    assert_eq!(msgs[0]["epoch"], last["epoch"]);

    let out = cli.run(&["rooms", "history", "nobody-here"]).await;
    out.ok();
    assert_eq!(out.stdout(), "");
    assert!(out.stderr().contains("no messages"), "{}", out.stderr());
}

#[tokio::test]
async fn history_continues_into_the_archive_across_epochs() {
    let stack = Stack::builder().archive().start().await;
    let room = "deep:2";
    let old = stack.publish(room, 30).await;
    stack.wait_archived(room, 30).await;
    // The room leaves Redis (as when it expires) and returns with a new epoch.
    stack.expire_room(room).await;
    let new = stack.publish(room, 5).await;
    assert_ne!(old["epoch"], new["epoch"]);
    let cli = Cli::for_stack(&stack);
    let out = cli
        .run(&["rooms", "history", room, "--limit", "1000"])
        .await;
    out.ok();
    let text = out.stdout();
    let (old_e, new_e) = (
        old["epoch"].as_str().expect("e"),
        new["epoch"].as_str().expect("e"),
    );
    let headers: Vec<&str> = text.lines().filter(|l| l.starts_with('#')).collect();
    assert_eq!(
        headers,
        [
            format!("# {room}, epoch {old_e}"),
            format!("# {room}, epoch {new_e}")
        ],
        "the old epoch (from the archive) first: {text}"
    );
    let offsets: Vec<u64> = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .map(|l| {
            l.split_whitespace()
                .next()
                .expect("offset")
                .parse()
                .expect("number")
        })
        .collect();
    let want: Vec<u64> = (1..=30).chain(1..=5).collect();
    assert_eq!(offsets, want, "{text}");
}
