//! The FCM HTTP v1 message for one push: notification, string-only data,
//! per-room collapse keys, and never over FCM's 4,096-byte limit.

use serde_json::{Value, json};

/// FCM refuses messages over 4,096 bytes.
pub const MAX_MESSAGE_BYTES: usize = 4096;
/// APNs limits `apns-collapse-id` to 64 bytes.
const APNS_COLLAPSE_MAX: usize = 64;

/// What a push says.
#[derive(Clone, Debug)]
pub struct Push<'a> {
    pub room: &'a str,
    pub sender: &'a str,
    pub preview: &'a str,
    pub count: u64,
    pub offset: u64,
    pub epoch: &'a str,
    /// The user's unread messages in the room, and over all their rooms
    /// (the badge); absent when they could not be counted.
    pub unread: Option<u64>,
    pub badge: Option<u64>,
}

fn collapse_id(room: &str) -> String {
    if room.len() <= APNS_COLLAPSE_MAX {
        return room.to_owned();
    }
    // Stable and short: FNV-1a of the room.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in room.as_bytes() {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("room-{h:016x}")
}

/// Senders are user ids of any length; the push shows at most this many characters.
const SENDER_CHARS: usize = 64;

fn message(device_token: &str, p: &Push<'_>, preview: &str) -> Value {
    let sender: String = p.sender.chars().take(SENDER_CHARS).collect();
    let title = if p.count > 1 {
        format!("{} new messages in {}", p.count, p.room)
    } else {
        format!("New message in {}", p.room)
    };
    let mut m = json!({
        "message": {
            "token": device_token,
            "notification": {"title": title, "body": format!("{sender}: {preview}")},
            // FCM requires every data value to be a string.
            "data": {
                "room": p.room,
                "offset": p.offset.to_string(),
                "epoch": p.epoch,
                "count": p.count.to_string(),
                "sender": sender,
            },
            "android": {"collapse_key": p.room, "priority": "high"},
            "apns": {"headers": {"apns-collapse-id": collapse_id(p.room), "apns-priority": "10"}},
        }
    });
    if let Some(n) = p.unread {
        m["message"]["data"]["unread"] = json!(n.to_string());
    }
    // The app icon's number: APNs's `badge`, Android's notification count.
    if let Some(b) = p.badge {
        m["message"]["android"]["notification"] = json!({"notification_count": b});
        m["message"]["apns"]["payload"] = json!({"aps": {"badge": b}});
    }
    m
}

/// The request body, with the preview cut (by characters, with an ellipsis)
/// until the message fits.
pub fn build(device_token: &str, p: &Push<'_>) -> Value {
    let full = message(device_token, p, p.preview);
    if serialized_message_len(&full) <= MAX_MESSAGE_BYTES {
        return full;
    }
    let chars: Vec<char> = p.preview.chars().collect();
    let (mut lo, mut hi) = (0usize, chars.len());
    // Longest prefix that fits: binary search on characters.
    while lo < hi {
        let mid = (lo + hi).div_ceil(2);
        let cut: String = chars[..mid].iter().collect::<String>() + "…";
        if serialized_message_len(&message(device_token, p, &cut)) <= MAX_MESSAGE_BYTES {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    let cut: String = chars[..lo].iter().collect::<String>() + "…";
    message(device_token, p, &cut)
}

/// Bytes of the `message` object as sent.
pub fn serialized_message_len(body: &Value) -> usize {
    body.get("message").map_or(0, |m| m.to_string().len())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn push(preview: &str) -> Push<'_> {
        Push {
            room: "team:eng",
            sender: "alice",
            preview,
            count: 3,
            offset: 42,
            epoch: "e1",
            unread: Some(4),
            badge: Some(9),
        }
    }

    #[test]
    fn the_badge_is_the_users_unread_total_and_data_has_the_rooms() {
        let b = build("tok", &push("hi"));
        let m = &b["message"];
        assert_eq!(m["data"]["unread"], "4");
        assert_eq!(m["apns"]["payload"]["aps"]["badge"], 9);
        assert_eq!(m["android"]["notification"]["notification_count"], 9);
        let none = build(
            "tok",
            &Push {
                unread: None,
                badge: None,
                ..push("hi")
            },
        );
        assert!(none["message"]["apns"].get("payload").is_none());
        assert!(none["message"]["data"].get("unread").is_none());
    }

    #[test]
    fn data_values_are_all_strings_and_collapse_keys_are_per_room() {
        let b = build("tok", &push("hi"));
        let m = &b["message"];
        assert!(
            m["data"]
                .as_object()
                .expect("data")
                .values()
                .all(Value::is_string)
        );
        assert_eq!(m["android"]["collapse_key"], "team:eng");
        assert_eq!(m["apns"]["headers"]["apns-collapse-id"], "team:eng");
        assert_eq!(m["notification"]["title"], "3 new messages in team:eng");
        assert_eq!(m["notification"]["body"], "alice: hi");
    }

    fn keys(v: &Value) -> Vec<&str> {
        let mut keys: Vec<&str> = v
            .as_object()
            .expect("object")
            .keys()
            .map(String::as_str)
            .collect();
        keys.sort_unstable();
        keys
    }

    /// Field names and types per the FCM HTTP v1 `projects.messages.send`
    /// reference (Message, Notification, AndroidConfig, ApnsConfig).
    #[test]
    fn the_request_has_the_fcm_v1_shape() {
        let b = build("tok", &push("hi"));
        assert_eq!(keys(&b), ["message"]);
        let m = &b["message"];
        assert_eq!(
            keys(m),
            ["android", "apns", "data", "notification", "token"]
        );
        assert_eq!(m["token"], "tok");
        assert_eq!(keys(&m["notification"]), ["body", "title"]);
        assert_eq!(
            keys(&m["android"]),
            ["collapse_key", "notification", "priority"]
        );
        assert!(["normal", "high"].contains(&m["android"]["priority"].as_str().expect("priority")));
        // AndroidNotification.notification_count is an integer.
        assert!(m["android"]["notification"]["notification_count"].is_u64());
        assert_eq!(keys(&m["apns"]), ["headers", "payload"]);
        // The APNs payload's `aps.badge` is a number.
        assert!(m["apns"]["payload"]["aps"]["badge"].is_u64());
        let headers = m["apns"]["headers"].as_object().expect("headers");
        assert!(headers.values().all(Value::is_string));
        // Keys FCM reserves in `data`.
        let reserved = |k: &str| {
            ["from", "notification", "message_type"].contains(&k)
                || k.starts_with("google")
                || k.starts_with("gcm")
        };
        assert!(!keys(&m["data"]).into_iter().any(reserved));
    }

    #[test]
    fn long_previews_are_cut_by_characters_to_fit() {
        let long = "é".repeat(3000); // 6,000 bytes
        let b = build("tok", &push(&long));
        assert!(serialized_message_len(&b) <= MAX_MESSAGE_BYTES);
        let body = b["message"]["notification"]["body"].as_str().expect("body");
        assert!(body.ends_with('…'));
        assert!(
            body.trim_start_matches("alice: ")
                .trim_end_matches('…')
                .chars()
                .all(|c| c == 'é')
        );
        // As much as fits: one more character would not.
        assert!(serialized_message_len(&b) > MAX_MESSAGE_BYTES - 8);
    }

    #[test]
    fn long_rooms_get_a_short_apns_collapse_id() {
        let room = "r".repeat(128);
        let p = Push {
            room: &room,
            ..push("x")
        };
        let id = build("t", &p)["message"]["apns"]["headers"]["apns-collapse-id"].clone();
        assert!(id.as_str().is_some_and(|s| s.len() <= 64));
    }
}
