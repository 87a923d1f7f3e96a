//! `chatctl config check`: every bad field of streams.toml, the environment
//! and the config file, each on its own line, and exit 1; a good
//! configuration passes with a summary.

use crate::cli::Cli;

const BAD_STREAMS: &str = "[defaults]\nmaxlen = 0\nttl = \"soon\"\n\n[fanout]\nshards = 0\n";

#[tokio::test]
async fn config_check_prints_every_bad_field_and_fails() {
    let mut cli = Cli::with_env(&[
        ("CHAT_RATE_PER_SEC", "fast"),
        ("CHAT_PREFIX", "bad prefix"),
        ("CHAT_MAX_TEXT_BYTES", "lots"),
        // A typo: no service reads it.
        ("CHAT_RATE_PER_SECS", "3"),
    ]);
    let streams = cli.dir.path().join("bad-streams.toml");
    std::fs::write(&streams, BAD_STREAMS).expect("write");
    cli.set("CHAT_STREAMS", streams.to_str().expect("path"));
    let file = cli.dir.path().join("chat.toml");
    std::fs::write(&file, "rate_burst = \"plenty\"\n").expect("write");
    cli.set("CHAT_CONFIG", file.to_str().expect("path"));

    for args in [&["config", "check"][..], &["config"][..]] {
        let out = cli.run(args).await;
        out.refused();
        assert_eq!(out.code(), Some(1), "{args:?}");
        let text = out.stdout();
        let errors: Vec<&str> = text.lines().filter(|l| l.contains("error:")).collect();
        for field in [
            "defaults.maxlen",
            "defaults.ttl",
            "fanout.shards",
            "CHAT_RATE_PER_SEC=",
            "CHAT_PREFIX=",
            "CHAT_MAX_TEXT_BYTES=",
            "CHAT_RATE_BURST=",
        ] {
            assert_eq!(
                errors.iter().filter(|l| l.contains(field)).count(),
                1,
                "{field} reported once in:\n{text}"
            );
        }
        assert!(errors.len() >= 7, "{text}");
        // A problem every service shares is printed once, naming them.
        let prefix = errors
            .iter()
            .find(|l| l.contains("CHAT_PREFIX="))
            .expect("prefix");
        assert!(
            prefix.contains("ingress") && prefix.contains("fanout-worker"),
            "{prefix}"
        );
        assert!(
            text.contains("warning: CHAT_RATE_PER_SECS is set but no service reads it"),
            "{text}"
        );
        assert!(!text.contains("configuration ok"), "{text}");
    }
}

#[tokio::test]
async fn config_check_passes_a_good_configuration() {
    let streams = concat!(env!("CARGO_MANIFEST_DIR"), "/../streams.toml");
    let cli = Cli::with_env(&[
        ("CHAT_STREAMS", streams),
        ("CHAT_REDIS_URL", "redis://:hunter2@127.0.0.1:6399/"),
        ("CHAT_JWT_SECRET", "a-secret-of-some-length"),
        ("CHAT_API_KEYS", "0123456789abcdef0123"),
    ]);
    let out = cli.run(&["config", "check"]).await;
    out.ok();
    let text = out.stdout();
    assert!(text.lines().any(|l| l == "configuration ok"), "{text}");
    assert!(text.contains("streams: ok"), "{text}");
    for service in [
        "ingress: ok",
        "fanout-worker: ok",
        "notifier-worker: ok",
        "summarizer-worker: ok",
    ] {
        assert!(text.contains(service), "{service} in {text}");
    }
    assert!(
        !text.contains("error:") && !text.contains("warning:"),
        "{text}"
    );
    assert!(
        !text.contains("hunter2"),
        "credentials are not printed: {text}"
    );
}
