//! `chatctl dlq list` and `dlq replay`: a dead letter made the real way (a
//! fanout entry delivered too often) is listed, re-driven once however often
//! replay runs, and fanned out by the worker; dead letters in the workers'
//! exact format go back to the stream their group reads.

use crate::cli::Cli;
use chat_core::entry::Entry;
use e2e::*;
use redis::AsyncCommands;
use serde_json::Value;
use std::time::Duration;

async fn xlen(stack: &Stack, key: &str) -> u64 {
    let mut r = stack.redis().await;
    r.xlen(key).await.expect("XLEN")
}

/// Entries of `stream`.
async fn stream_entries(stack: &Stack, stream: &str) -> Vec<chat_core::entry::Entry> {
    let mut r = stack.redis().await;
    let v: redis::Value = redis::cmd("XRANGE")
        .arg(stream)
        .arg("-")
        .arg("+")
        .query_async(&mut r)
        .await
        .expect("XRANGE");
    chat_core::entry::entries(&v).expect("entries")
}

/// Entries of `stream` as field lists.
async fn entries(stack: &Stack, stream: &str) -> Vec<Vec<(String, String)>> {
    stream_entries(stack, stream)
        .await
        .into_iter()
        .map(|e| e.fields)
        .collect()
}

fn field<'a>(fields: &'a [(String, String)], k: &str) -> Option<&'a str> {
    fields.iter().find(|(f, _)| f == k).map(|(_, v)| v.as_str())
}

#[tokio::test]
async fn a_dead_letter_is_listed_replayed_once_and_fanned_out() {
    let mut stack = Stack::builder()
        .workers(0)
        .streams(|s| s.fanout.max_deliveries = 1)
        .start()
        .await;
    let mut reader = stack.connect(0, "reader").await;
    reader.join("poison").await;
    let ack = stack.say("poison", "ann", "first").await;
    assert_eq!(stack.read_as_crashed_consumer().await, 1);
    // The worker takes the entry over, finds it delivered too often, and
    // dead-letters it instead of publishing it.
    stack.add_worker().await;
    let keys = stack.keys();
    let dlq = keys.dead_letter("fanout");
    wait_until(Duration::from_secs(10), "the dead letter", || async {
        (xlen(&stack, &dlq).await == 1).then_some(())
    })
    .await;
    let cli = Cli::for_stack(&stack);

    let out = cli.run(&["dlq", "list"]).await;
    out.ok();
    let text = out.stdout();
    let row = text
        .lines()
        .find(|l| l.starts_with("fanout "))
        .unwrap_or_else(|| panic!("a fanout row: {text}"));
    assert!(row.contains("max_deliveries"), "{row}");
    assert!(
        row.contains("room=poison offset=1 user=ann text=first"),
        "{row}"
    );
    for count in [
        "fanout: 1 dead letter in",
        "archive: 0 dead letters",
        "notifier: 0 dead letters",
    ] {
        assert!(text.contains(count), "{count} in {text}");
    }

    let out = cli
        .run(&["dlq", "list", "--group", "fanout", "--json"])
        .await;
    out.ok();
    let rows: Vec<Value> = out
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(rows.len(), 1, "{rows:?}");
    let dl = &rows[0];
    assert_eq!(dl["reason"], "max_deliveries");
    assert_eq!(dl["stream"], keys.room_shard_stream("poison"));
    assert_eq!(dl["fields"]["r"], "poison");
    assert_eq!(dl["fields"]["i"], ack["id"]);
    assert_eq!(dl["fields"]["t"], "first");
    let id = dl["id"].as_str().expect("id").to_owned();

    let out = cli.run(&["dlq", "replay", "--all", "--dry-run"]).await;
    out.ok();
    assert!(out.stdout().contains("would re-drive"), "{}", out.stdout());
    assert_eq!(xlen(&stack, &dlq).await, 1, "a dry run changes nothing");

    let out = cli.run(&["dlq", "replay", &id]).await;
    out.ok();
    assert!(
        out.stdout().contains("fanout: 1 re-driven, 0 already gone"),
        "{}",
        out.stdout()
    );
    // The worker handles the re-driven entry like any: published, delivered.
    let m = reader.messages(1).await;
    assert_eq!(
        (m[0]["offset"].as_u64(), m[0]["text"].as_str()),
        (Some(1), Some("first"))
    );
    assert_eq!(m[0]["id"], ack["id"]);

    // Twice is once.
    let out = cli.run(&["dlq", "replay", &id]).await;
    out.ok();
    assert!(out.stdout().contains("0 re-driven"), "{}", out.stdout());
    let out = cli.run(&["dlq", "replay", "--all"]).await;
    out.ok();
    assert!(
        out.stdout().contains("fanout: 0 re-driven"),
        "{}",
        out.stdout()
    );
    assert_eq!(xlen(&stack, &dlq).await, 0);
    let copies = entries(&stack, &keys.room_shard_stream("poison"))
        .await
        .iter()
        .filter(|f| field(f, "i") == ack["id"].as_str())
        .count();
    assert_eq!(copies, 2, "the original and one re-driven copy");
    // Nothing left pending, and nothing dead-lettered again.
    wait_until(Duration::from_secs(10), "no pending entries", || async {
        let mut r = stack.redis().await;
        let mut pending = 0;
        for s in keys.all_shard_streams() {
            let p: redis::streams::StreamPendingReply = r.xpending(&s, "fanout").await.ok()?;
            pending += p.count();
        }
        (pending == 0).then_some(())
    })
    .await;
    assert_eq!(xlen(&stack, &dlq).await, 0);
    reader.close().await;
}

fn entry(fields: &[(&str, &str)]) -> Entry {
    Entry {
        id: "1-1".into(),
        fields: fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
    }
}

#[tokio::test]
async fn dead_letters_in_the_workers_format_go_back_where_their_group_reads() {
    // No consumers: what is re-driven stays in the streams to be looked at.
    let stack = Stack::builder().workers(0).start().await;
    replays_the_workers_format(&stack).await;
}

/// Also run on a Redis Cluster (crate::cluster), where each dead letter
/// moves under a lease instead of in one script.
pub async fn replays_the_workers_format(stack: &Stack) {
    let keys = stack.keys();
    let mut r = stack.redis().await;
    let mut pipe = redis::pipe();
    let notify_dlq = keys.dead_letter("notifier");
    for i in 0..3 {
        let offset = (i + 1).to_string();
        let work = entry(&[
            ("user", "bo"),
            ("room", "r1"),
            ("count", "1"),
            ("sender", "al"),
            ("preview", "hi"),
            ("offset", &offset),
            ("epoch", "e1"),
        ]);
        chat_core::group::dead_letter(
            &mut pipe,
            &notify_dlq,
            100,
            &keys.notify_stream(),
            &work,
            "max_deliveries",
        );
    }
    // From a stream the notifier never reads: nowhere to put it back.
    chat_core::group::dead_letter(
        &mut pipe,
        &notify_dlq,
        100,
        "chat:elsewhere",
        &entry(&[("x", "1")]),
        "malformed",
    );
    // A shard that no longer exists (there were 8, now 4): its room's shard now.
    let shard_entry = entry(&[
        ("r", "zed"),
        ("e", "e1"),
        ("o", "1"),
        ("i", "1-1700000000000"),
        ("u", "al"),
        ("t", "hi"),
        ("c", "c1"),
        ("k", "user"),
    ]);
    chat_core::group::dead_letter(
        &mut pipe,
        &keys.dead_letter("fanout"),
        100,
        &keys.shard_stream(7),
        &shard_entry,
        "max_deliveries",
    );
    let _: () = pipe.query_async(&mut r).await.expect("write dead letters");
    // Ensure the notify group's stream exists with nothing in it.
    let before = xlen(stack, &keys.notify_stream()).await;
    let cli = Cli::for_stack(stack);
    let out = cli.run(&["dlq", "list", "--json"]).await;
    out.ok();
    let leases: Vec<String> = out
        .stdout()
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).expect("JSON line"))
        .map(|v| {
            keys.dead_letter_lease(
                v["group"].as_str().expect("group"),
                v["id"].as_str().expect("id"),
            )
        })
        .collect();
    assert_eq!(leases.len(), 5);

    let out = cli.run(&["dlq", "replay", "--all"]).await;
    assert_eq!(
        out.code(),
        Some(1),
        "one could not be replayed: {}",
        out.stdout()
    );
    let text = out.stdout();
    assert!(text.contains("fanout: 1 re-driven"), "{text}");
    assert!(
        text.contains("notifier: 3 re-driven, 0 already gone, 1 not replayed"),
        "{text}"
    );
    assert!(
        out.stderr().contains("chat:elsewhere"),
        "says why: {}",
        out.stderr()
    );
    let work = entries(stack, &keys.notify_stream()).await;
    assert_eq!(work.len() as u64, before + 3);
    let offsets: Vec<&str> = work.iter().filter_map(|f| field(f, "offset")).collect();
    assert_eq!(offsets, ["1", "2", "3"], "in order, fields as they were");
    assert_eq!(field(&work[0], "preview"), Some("hi"));
    let shard = entries(stack, &keys.room_shard_stream("zed")).await;
    assert_eq!(shard.len(), 1);
    assert_eq!(
        shard[0], shard_entry.fields,
        "the entry's own fields, exactly"
    );

    for lease in &leases {
        let held: bool = r.exists(lease).await.expect("EXISTS");
        assert!(!held, "no lease is left behind: {lease}");
    }

    let out = cli
        .run(&["dlq", "replay", "--all", "--stream", "notify"])
        .await;
    assert!(
        out.stdout().contains("notifier: 0 re-driven"),
        "{}",
        out.stdout()
    );
    assert_eq!(
        entries(stack, &keys.notify_stream()).await.len() as u64,
        before + 3
    );
    let out = cli
        .run(&["dlq", "list", "--group", "notifier", "--json"])
        .await;
    out.ok();
    let left: Vec<Value> = out
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON line"))
        .collect();
    assert_eq!(left.len(), 1);
    assert_eq!(left[0]["stream"], "chat:elsewhere");

    let out = cli.run(&["dlq", "list", "--stream", "bogus"]).await;
    out.refused();
    assert!(
        out.stderr().contains("fanout"),
        "lists what there is: {}",
        out.stderr()
    );
    let out = cli.run(&["dlq", "replay", "not-an-id"]).await;
    out.refused();
    let out = cli.run(&["dlq", "replay"]).await;
    out.refused();
}

/// An entry in a dead-letter stream that is not a dead letter (no
/// `stream` field: written by hand or by something else) is reported on
/// stderr and skipped: `list` shows the rest, `replay` re-drives the rest
/// (a page of nothing but such entries included) and leaves it in place.
#[tokio::test]
async fn entries_that_are_not_dead_letters_are_skipped_and_left_in_place() {
    let stack = Stack::builder().workers(0).start().await;
    let keys = stack.keys();
    let dlq = keys.dead_letter("fanout");
    let shard = keys.room_shard_stream("zed");
    let message = |o: &str| {
        entry(&[
            ("r", "zed"),
            ("e", "e1"),
            ("o", o),
            ("i", "1-1700000000000"),
            ("u", "al"),
            ("t", "hi"),
            ("c", "c1"),
            ("k", "user"),
        ])
    };
    let mut r = stack.redis().await;
    let mut pipe = redis::pipe();
    chat_core::group::dead_letter(
        &mut pipe,
        &dlq,
        1000,
        &shard,
        &message("1"),
        "max_deliveries",
    );
    // More than a page of replay (200) of them, then a real one again.
    for i in 0..201 {
        pipe.cmd("XADD")
            .arg(&dlq)
            .arg("*")
            .arg("junk")
            .arg(i)
            .ignore();
    }
    chat_core::group::dead_letter(
        &mut pipe,
        &dlq,
        1000,
        &shard,
        &message("2"),
        "max_deliveries",
    );
    let _: () = pipe.query_async(&mut r).await.expect("write");
    let all: Vec<String> = stream_entries(&stack, &dlq)
        .await
        .into_iter()
        .map(|e| e.id)
        .collect();
    let junk: Vec<&String> = all[1..202].iter().collect();
    let cli = Cli::for_stack(&stack);

    let out = cli
        .run(&["dlq", "list", "--stream", "fanout", "--limit", "1000"])
        .await;
    out.ok();
    let text = out.stdout();
    let rows: Vec<&str> = text.lines().filter(|l| l.starts_with("fanout ")).collect();
    assert_eq!(rows.len(), 2, "{text}");
    assert!(
        rows[1].contains("offset=2"),
        "the one after them too: {text}"
    );
    assert!(
        text.contains("fanout: 2 dead letters in")
            && text.contains("201 entries that are not dead letters skipped"),
        "{text}"
    );
    let err = out.stderr();
    assert!(
        err.contains(&format!("{}: skipped: not a dead letter", junk[0])),
        "{err}"
    );
    let out = cli.run(&["dlq", "list", "--json"]).await;
    out.ok();
    let rows: Vec<Value> = out
        .stdout()
        .lines()
        .map(|l| serde_json::from_str(l).expect("stdout stays JSON lines"))
        .collect();
    assert_eq!(rows.len(), 2);

    // One of them by id: not replayed, left, exit 1.
    let out = cli.run(&["dlq", "replay", junk[5]]).await;
    assert_eq!(out.code(), Some(1), "{}", out.stdout());
    assert!(
        out.stdout()
            .contains("fanout: 0 re-driven, 0 already gone, 1 not replayed"),
        "{}",
        out.stdout()
    );
    assert!(
        out.stderr()
            .contains(&format!("{}: not replayed: not a dead letter", junk[5])),
        "{}",
        out.stderr()
    );
    assert_eq!(xlen(&stack, &dlq).await, 203);

    let out = cli.run(&["dlq", "replay", "--all"]).await;
    assert_eq!(out.code(), Some(1), "{}", out.stdout());
    assert!(
        out.stdout()
            .contains("fanout: 2 re-driven, 0 already gone, 201 not replayed"),
        "{}",
        out.stdout()
    );
    assert!(out.stderr().contains("left in place"), "{}", out.stderr());
    let moved = entries(&stack, &shard).await;
    let offsets: Vec<&str> = moved.iter().filter_map(|f| field(f, "o")).collect();
    assert_eq!(offsets, ["1", "2"]);
    let left = entries(&stack, &dlq).await;
    assert_eq!(left.len(), 201, "the others stay");
    assert!(left.iter().all(|f| field(f, "junk").is_some()));
}
