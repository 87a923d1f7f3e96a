//! `chatctl config check`: every bad field of streams.toml, the environment
//! and the config file, each on its own line, and exit 1; a good
//! configuration passes with a summary.

use crate::cli::Cli;

/// A typo and a wrong type first: they must not hide the rest.
const BAD_STREAMS: &str = "[defaults]\nmaxlenn = 3\nmaxlen = 0\nttl = \"soon\"\n\n\
                           [fanout]\nbatch = \"many\"\nshards = 0\n";

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
            "defaults.maxlenn",
            "defaults.maxlen:",
            "defaults.ttl",
            "fanout.batch",
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
        assert!(errors.len() >= 9, "{text}");
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
    assert!(
        text.contains("(CHAT_JOBS_REDIS_URL inherited from CHAT_REDIS_URL)"),
        "{text}"
    );
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

/// A value in both the config file and the environment: the environment's
/// is the one every service reads.
#[tokio::test]
async fn the_environment_wins_over_the_config_file() {
    let streams = concat!(env!("CARGO_MANIFEST_DIR"), "/../streams.toml");
    let mut cli = Cli::with_env(&[
        ("CHAT_STREAMS", streams),
        ("CHAT_JWT_SECRET", "a-secret-of-some-length"),
        ("CHAT_LISTEN", "127.0.0.1:2222"),
    ]);
    let file = cli.dir.path().join("chat.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1111\"\nprefix = \"fromfile\"\n",
    )
    .expect("write");
    cli.set("CHAT_CONFIG", file.to_str().expect("path"));
    let out = cli.run(&["config", "check"]).await;
    out.ok();
    let text = out.stdout();
    assert!(text.contains("listen 127.0.0.1:2222"), "{text}");
    assert!(!text.contains("1111"), "{text}");
    assert!(
        text.contains("prefix fromfile"),
        "the file still counts: {text}"
    );
}

/// The JWT settings the ingress verifier would refuse at start are errors
/// here too, each naming its variable, not "configuration ok".
#[tokio::test]
async fn config_check_reports_jwt_settings_the_ingress_refuses() {
    let streams = concat!(env!("CARGO_MANIFEST_DIR"), "/../streams.toml");
    let secret = ("CHAT_JWT_SECRET", "a-secret-of-some-length-0123456789");
    let base = [
        ("CHAT_STREAMS", streams),
        ("CHAT_API_KEYS", "0123456789abcdef0123"),
    ];
    let dir = tempfile::tempdir().expect("tempdir");
    let not_pem = dir.path().join("key.pem");
    std::fs::write(&not_pem, "not a key\n").expect("write");
    let not_pem = not_pem.to_str().expect("path");
    let cases: [(&[(&str, &str)], &str); 5] = [
        // HS256 (the default) with no key at all.
        (&[], "CHAT_JWT_SECRET: not set"),
        (
            &[secret, ("CHAT_JWT_ALGORITHMS", "RS256")],
            "CHAT_JWT_ALGORITHMS: RS256 is allowed but has no key",
        ),
        (
            &[
                secret,
                ("CHAT_JWT_ALGORITHMS", "HS256,RS256"),
                ("CHAT_JWT_PUBLIC_KEYS", not_pem),
            ],
            "CHAT_JWT_PUBLIC_KEYS: ",
        ),
        (
            &[secret, ("CHAT_JWT_LEEWAY_SECS", "7200")],
            "CHAT_JWT_LEEWAY_SECS: ",
        ),
        (
            &[secret, ("CHAT_JWKS_URL", "ftp://auth.example/jwks.json")],
            "CHAT_JWKS_URL: ",
        ),
    ];
    for (extra, expected) in cases {
        let env: Vec<(&str, &str)> = base.iter().chain(extra).copied().collect();
        let out = Cli::with_env(&env).run(&["config", "check"]).await;
        let text = out.stdout();
        assert_eq!(out.code(), Some(1), "{extra:?}:\n{text}");
        let errors: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with("error:"))
            .collect();
        assert_eq!(errors.len(), 1, "{extra:?}:\n{text}");
        assert!(
            errors[0].contains(&format!("error: {expected}")) && errors[0].contains("[ingress]"),
            "{extra:?}:\n{text}"
        );
        assert!(text.contains("ingress: would not start"), "{text}");
        assert!(!text.contains("configuration ok"), "{text}");
    }
}
