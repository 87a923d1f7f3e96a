//! Moderation (docs/protocol.md, "Moderation"): roles set through the
//! members API, mutes, bans that take a user out on every node, slow
//! mode; every action a `system` message in the room.

use e2e::*;
use serde_json::{Value, json};
use std::time::Duration;

async fn put_role(stack: &Stack, room: &str, user: &str, role: &str) {
    let r = http()
        .put(format!("{}/v1/rooms/{room}/members/{user}", stack.http(0)))
        .bearer_auth(API_KEY)
        .json(&json!({"role": role}))
        .send()
        .await
        .expect("put member");
    assert_eq!(r.status(), 204, "{role} {user}");
}

fn moderate(room: &str, user: &str, action: &str, secs: Option<u64>) -> Value {
    let mut f = json!({"type": "moderate", "room": room, "user": user, "action": action});
    if let Some(s) = secs {
        f["duration_secs"] = json!(s);
    }
    f
}

#[tokio::test]
async fn owners_and_moderators_mute_and_delete_and_every_action_is_a_system_message() {
    let stack = Stack::builder().start().await;
    let room = "mod:1";
    put_role(&stack, room, "alice", "owner").await;
    put_role(&stack, room, "bob", "moderator").await;
    stack.add_member(room, "carol").await;
    let mut alice = stack.connect(0, "alice").await;
    let mut bob = stack.connect(0, "bob").await;
    let mut carol = stack.connect(0, "carol").await;
    for c in [&mut alice, &mut bob, &mut carol] {
        c.join(room).await;
    }
    let e = carol.request(moderate(room, "bob", "mute", None)).await;
    assert_eq!(
        (e["type"].as_str(), e["code"].as_str()),
        (Some("error"), Some("forbidden")),
        "{e}"
    );
    let e = bob.request(moderate(room, "alice", "mute", None)).await;
    assert_eq!(
        e["code"], "forbidden",
        "a moderator does not mute an owner: {e}"
    );

    let ack = bob
        .request(moderate(room, "carol", "mute", Some(600)))
        .await;
    assert_eq!(ack["type"], "ack", "{ack}");
    let e = carol
        .request(json!({"type": "send", "room": room, "text": "hey", "client_id": "c1"}))
        .await;
    assert_eq!(
        (e["code"].as_str(), e["message"].as_str()),
        (Some("forbidden"), Some("you are muted in this room")),
        "{e}"
    );
    let e = carol
        .request(json!({"type": "react", "room": room, "offset": 1, "emoji": "x"}))
        .await;
    assert_eq!(e["code"], "forbidden", "{e}");
    alice.request(moderate(room, "carol", "unmute", None)).await;
    let sent = carol.send(room, "back", "c2").await;
    // Staff delete anyone's message; members only their own.
    let del = bob
        .request(json!({"type": "delete", "room": room, "offset": sent["offset"]}))
        .await;
    assert_eq!(del["type"], "ack", "{del}");
    let own = bob.send(room, "from bob", "b1").await;
    let e = carol
        .request(json!({"type": "delete", "room": room, "offset": own["offset"]}))
        .await;
    assert_eq!(e["code"], "forbidden", "{e}");

    // The log: two role changes, mute, unmute as system messages.
    let page = stack.history_http(room, "").await;
    let actions: Vec<(String, String, String)> = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["kind"] == "system")
        .map(|m| {
            let a = &m["notice"];
            (
                a["action"].as_str().unwrap_or_default().to_owned(),
                a["user"].as_str().unwrap_or_default().to_owned(),
                a["by"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let want: Vec<(String, String, String)> = [
        ("role", "alice", "system"),
        ("role", "bob", "system"),
        ("mute", "carol", "bob"),
        ("unmute", "carol", "alice"),
    ]
    .iter()
    .map(|(a, u, b)| ((*a).into(), (*u).into(), (*b).into()))
    .collect();
    assert_eq!(actions, want, "{page}");
    let mute = page["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .find(|m| m["notice"]["action"] == "mute")
        .expect("mute");
    assert!(
        mute["notice"]["until"]
            .as_u64()
            .is_some_and(|u| u > now() * 1000),
        "{mute}"
    );
    assert_eq!(mute["text"], "carol was muted by bob for 600 s");
    // Everyone got them live too.
    let live: Vec<String> = carol
        .messages(5)
        .await
        .iter()
        .map(|m| m["kind"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert_eq!(
        live,
        ["system", "system", "user", "delete", "user"],
        "carol's view after joining"
    );
}

#[tokio::test]
async fn a_ban_takes_the_user_out_on_every_node_keeps_them_out_and_ends() {
    let stack = Stack::builder().nodes(2).start().await;
    let room = "ban:1";
    let mut dave0 = stack.connect(0, "dave").await;
    let mut dave1 = stack.connect(1, "dave").await;
    let mut erin = stack.connect(1, "erin").await;
    for c in [&mut dave0, &mut dave1, &mut erin] {
        c.join(room).await;
    }
    let r = http()
        .post(format!("{}/v1/rooms/{room}/moderation", stack.http(0)))
        .bearer_auth(API_KEY)
        .json(&json!({"user": "dave", "action": "ban", "duration_secs": 3}))
        .send()
        .await
        .expect("ban");
    assert_eq!(r.status(), 200);
    for d in [&mut dave0, &mut dave1] {
        let mut before = Vec::new();
        let left = loop {
            let f = d.recv().await;
            if f["type"] == "left" {
                break f;
            }
            before.push(f);
        };
        assert_eq!(left["room"], room);
        assert!(
            before.iter().any(|f| f["notice"]["action"] == "ban"),
            "the banned user reads why before leaving: {before:?}"
        );
        let e = d
            .request(
                json!({"type": "send", "room": room, "text": "still here?", "client_id": "d1"}),
            )
            .await;
        assert_eq!(e["code"], "not_joined", "{e}");
        let e = d.request(json!({"type": "join", "room": room})).await;
        assert_eq!(e["code"], "forbidden", "{e}");
        let e = d.request(json!({"type": "history", "room": room})).await;
        assert_eq!(e["code"], "forbidden", "{e}");
    }
    let notice = erin.messages(1).await.remove(0);
    assert_eq!(
        (
            notice["kind"].as_str(),
            notice["notice"]["action"].as_str(),
            notice["notice"]["user"].as_str()
        ),
        (Some("system"), Some("ban"), Some("dave"))
    );
    // It ends on its own.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let f = dave0.request(json!({"type": "join", "room": room})).await;
        if f["type"] == "joined" {
            break;
        }
        assert_eq!(f["code"], "forbidden", "{f}");
        assert!(std::time::Instant::now() < deadline, "the ban did not end");
        // A client's retry pace.
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn slow_mode_spaces_a_users_posts_but_not_staffs_or_retries() {
    let stack = Stack::builder()
        .streams(|s| {
            s.rooms.push(chat_core::config::RoomPolicy {
                pattern: "slow:*".into(),
                retention: chat_core::config::RetentionPolicy {
                    slow_mode: Some(Duration::from_secs(3600)),
                    ..s.defaults.clone()
                },
            })
        })
        .start()
        .await;
    let room = "slow:1";
    put_role(&stack, room, "mia", "moderator").await;
    let mut mia = stack.connect(0, "mia").await;
    let mut ned = stack.connect(0, "ned").await;
    mia.join(room).await;
    ned.join(room).await;
    let first = ned.send(room, "one", "n1").await;
    let again = ned.send(room, "one", "n1").await;
    assert_eq!(
        (again["offset"].clone(), again["duplicate"].as_bool()),
        (first["offset"].clone(), Some(true)),
        "a retry is its ack, not a refusal"
    );
    let e = ned
        .request(json!({"type": "send", "room": room, "text": "two", "client_id": "n2"}))
        .await;
    assert_eq!(e["code"], "rate_limited", "{e}");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("slow mode")),
        "{e}"
    );
    // Reactions are not posts.
    let r = ned
        .request(json!({"type": "react", "room": room, "offset": first["offset"], "emoji": "👍"}))
        .await;
    assert_eq!(r["type"], "ack", "{r}");
    mia.send(room, "a", "m1").await;
    mia.send(room, "b", "m2").await;
}

#[tokio::test]
async fn a_first_join_is_a_notice_only_where_the_room_asks_for_it() {
    let stack = Stack::builder()
        .streams(|s| {
            s.rooms.push(chat_core::config::RoomPolicy {
                pattern: "lobby:*".into(),
                retention: chat_core::config::RetentionPolicy {
                    join_notices: true,
                    ..s.defaults.clone()
                },
            })
        })
        .start()
        .await;
    let mut host = stack.connect(0, "host").await;
    host.join("quiet").await;
    host.join("lobby:1").await;
    let mut guest = stack.connect(0, "guest").await;
    guest.join("quiet").await;
    guest.join("lobby:1").await;
    // Joining again (another socket, a reconnect) is not a first join.
    let mut again = stack.connect(0, "guest").await;
    again.join("lobby:1").await;
    host.send("quiet", "after", "q1").await;
    host.send("lobby:1", "welcome", "l1").await;
    let got: Vec<(String, String)> = host
        .messages(4)
        .await
        .iter()
        .map(|m| {
            (
                m["room"].as_str().unwrap_or_default().to_owned(),
                m["notice"]["action"].as_str().map_or_else(
                    || m["text"].as_str().unwrap_or_default().to_owned(),
                    |a| format!("{a} {}", m["notice"]["user"].as_str().unwrap_or_default()),
                ),
            )
        })
        .collect();
    let mut lobby: Vec<&str> = got
        .iter()
        .filter(|(r, _)| r == "lobby:1")
        .map(|(_, t)| t.as_str())
        .collect();
    let quiet: Vec<&str> = got
        .iter()
        .filter(|(r, _)| r == "quiet")
        .map(|(_, t)| t.as_str())
        .collect();
    lobby.dedup();
    assert_eq!(quiet, ["after"], "no notice without join_notices");
    assert_eq!(lobby, ["join host", "join guest", "welcome"]);
}
