//! The one-command local stack: Redis (given or a child), ingress, fanout,
//! notifier, summarizer and (with `CHAT_MONGODB_URL`) the archive in one
//! process, a dev secret printed so a newcomer can chat at once.

use anyhow::Context;
use chat_core::redis_server::RedisServer;
use std::collections::HashMap;
use tokio_util::sync::CancellationToken;

pub async fn run() -> anyhow::Result<()> {
    let mut strings: HashMap<String, String> = chat_core::config::load_strings()?;
    let _redis_child = if strings.contains_key("CHAT_REDIS_URL") {
        None
    } else {
        let server = RedisServer::start().context("starting a local redis-server")?;
        println!(
            "redis-server started on {} (pid {})",
            server.url(),
            server.pid()
        );
        strings.insert("CHAT_REDIS_URL".into(), server.url());
        Some(server)
    };
    let secret = match strings.get("CHAT_JWT_SECRET") {
        Some(s) => s.clone(),
        None => {
            let s = format!("dev-{:032x}", rand::random::<u128>());
            strings.insert("CHAT_JWT_SECRET".into(), s.clone());
            s
        }
    };
    strings
        .entry("CHAT_API_KEYS".into())
        .or_insert_with(|| format!("dev-api-key-{:016x}", rand::random::<u64>()));
    // Dev tokens are on unless turned off (`CHAT_DEV_TOKENS=0`), and served
    // to loopback peers only unless `CHAT_DEV_TOKENS_PUBLIC` says otherwise.
    strings
        .entry("CHAT_DEV_TOKENS".into())
        .or_insert_with(|| "1".into());
    let ingress_settings = ingress::settings::IngressSettings::from_strings(&strings)?;
    let fanout_settings = fanout_worker::settings::FanoutSettings::from_strings(&strings)?;
    let notifier_settings = notifier_worker::settings::NotifierSettings::from_strings(&strings)?;
    let summarizer_settings =
        summarizer_worker::settings::SummarizerSettings::from_strings(&strings)?;
    // The archive runs when it has a MongoDB to write to.
    let archive_settings = if strings
        .get("CHAT_MONGODB_URL")
        .is_some_and(|u| !u.is_empty())
    {
        Some(archive_worker::settings::ArchiveSettings::from_strings(
            &strings,
        )?)
    } else {
        None
    };

    let shutdown = CancellationToken::new();
    chat_core::shutdown::cancel_on_signal(shutdown.clone());
    let node = ingress::Ingress::build(ingress_settings, shutdown.clone()).await?;
    let addr = node.local_addr();
    let worker = fanout_worker::Fanout::build(fanout_settings).await?;
    let notifier = notifier_worker::Notifier::build(notifier_settings).await?;
    let summarizer = summarizer_worker::Summarizer::build(summarizer_settings).await?;
    let archive = match archive_settings {
        Some(s) => Some(archive_worker::Archive::build(s).await?),
        None => None,
    };

    println!();
    println!("  chat stack running");
    println!("  demo page:      http://{addr}/   (open two tabs, pick two names)");
    println!("  WebSocket:      ws://{addr}/v1/ws");
    println!("  dev JWT secret: {secret}");
    println!("  admin API key:  {}", strings["CHAT_API_KEYS"]);
    println!(
        "  archive:        {}",
        if archive.is_some() {
            "on (MongoDB at CHAT_MONGODB_URL)"
        } else {
            "off (set CHAT_MONGODB_URL to keep history in MongoDB)"
        }
    );
    println!(
        "  mint a token:   cargo run -q -p chatctl -- token --sub alice --room '*' --secret {secret}"
    );
    println!();

    let fanout = tokio::spawn(worker.run(shutdown.clone()));
    let notify = tokio::spawn(notifier.run(shutdown.clone(), std::time::Duration::from_secs(5)));
    let summaries = tokio::spawn(summarizer.run(shutdown.clone()));
    let archived = archive.map(|a| tokio::spawn(a.run(shutdown.clone())));
    let served = node.run().await;
    shutdown.cancel();
    let _ = fanout.await;
    let _ = notify.await;
    let _ = summaries.await;
    if let Some(a) = archived {
        let _ = a.await;
    }
    served?;
    Ok(())
}
