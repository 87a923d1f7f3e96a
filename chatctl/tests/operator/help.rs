//! Every command explains itself; the old `summarize` still works, hidden.

use crate::cli::Cli;

#[tokio::test]
async fn every_command_has_help() {
    let cli = Cli::with_env(&[]);
    let commands: &[&[&str]] = &[
        &[],
        &["stack"],
        &["token"],
        &["config"],
        &["config", "check"],
        &["rooms"],
        &["rooms", "tail"],
        &["rooms", "history"],
        &["sessions"],
        &["sessions", "revoke"],
        &["dlq"],
        &["dlq", "list"],
        &["dlq", "replay"],
        &["summaries"],
        &["summaries", "submit"],
        &["summarize"],
        &["bench"],
    ];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let out = cli.run(&args).await;
        out.ok();
        let text = out.stdout();
        assert!(text.contains("Usage: chatctl"), "{command:?}: {text}");
        assert!(text.lines().count() > 3, "{command:?}: {text}");
    }
    let top = cli.run(&["--help"]).await.stdout();
    for listed in ["config", "rooms", "sessions", "dlq", "summaries", "token"] {
        assert!(top.contains(&format!("  {listed}")), "{listed} in {top}");
    }
    assert!(!top.contains("summarize"), "the old name is hidden: {top}");
    let tail = cli.run(&["rooms", "tail", "--help"]).await.stdout();
    assert!(
        tail.contains("--since") && tail.contains("--json"),
        "{tail}"
    );
}
