//! The one-command local stack: Redis (given or a child), then ingress,
//! fanout, notifier, summarizer and (with `CHAT_MONGODB_URL`) the archive,
//! each its own process started from the binaries next to `chatctl`, as an
//! operator runs them. A dev secret is printed so a newcomer can chat at once.
//!
//! chatctl supervises them: SIGTERM or Ctrl-C stops every child gracefully
//! (SIGTERM, then SIGKILL after a grace), and a child that exits on its own
//! stops the rest, so the stack never runs half.

use anyhow::{Context, bail};
use chat_core::settings;
use chat_devkit::redis_server::RedisServer;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// How long the ingress may take to answer `/healthz` after it starts.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a child may take to stop after SIGTERM (the ingress drains its
/// sockets first) before it is killed.
const STOP_GRACE: Duration = Duration::from_secs(20);

struct Service {
    name: &'static str,
    child: Child,
}

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
    let secret = strings
        .entry("CHAT_JWT_SECRET".into())
        .or_insert_with(|| format!("dev-{:032x}", rand::random::<u128>()))
        .clone();
    strings
        .entry("CHAT_API_KEYS".into())
        .or_insert_with(|| format!("dev-api-key-{:016x}", rand::random::<u64>()));
    // Dev tokens are on unless turned off (`CHAT_DEV_TOKENS=0`), and served
    // to loopback peers only unless `CHAT_DEV_TOKENS_PUBLIC` says otherwise.
    strings
        .entry("CHAT_DEV_TOKENS".into())
        .or_insert_with(|| "1".into());
    // The archive runs when it has a MongoDB to write to.
    let archive = strings
        .get("CHAT_MONGODB_URL")
        .is_some_and(|u| !u.is_empty());

    // Every service's settings are checked before any starts, so a bad
    // configuration is one clear error, not a child dying later.
    let ingress = settings::ingress::IngressSettings::from_strings(&strings)?;
    let fanout = settings::fanout::FanoutSettings::from_strings(&strings)?;
    // The webhook worker runs when streams.toml names endpoints.
    let webhooks = !fanout.common.streams.webhooks.endpoints.is_empty();
    if webhooks {
        settings::webhook::WebhookSettings::from_strings(&strings)?;
    }
    settings::notifier::NotifierSettings::from_strings(&strings)?;
    settings::summarizer::SummarizerSettings::from_strings(&strings)?;
    if archive {
        settings::archive::ArchiveSettings::from_strings(&strings)?;
    }
    let addr = listen_addr(ingress.listen)?;
    strings.insert("CHAT_LISTEN".into(), addr.to_string());

    let dir = binaries_dir()?;
    let mut names = vec![
        "ingress",
        "fanout-worker",
        "notifier-worker",
        "summarizer-worker",
    ];
    if archive {
        names.push("archive-worker");
    }
    if webhooks {
        names.push("webhook-worker");
    }
    let shutdown = CancellationToken::new();
    chat_core::shutdown::cancel_on_signal(shutdown.clone());
    let mut services = Vec::new();
    for name in names {
        match spawn(&dir, name, &strings) {
            Ok(child) => services.push(Service { name, child }),
            Err(e) => {
                stop_all(&mut services).await;
                return Err(e);
            }
        }
    }
    let ready = tokio::select! {
        r = wait_healthy(addr) => r,
        (name, status) = first_exit(&mut services) => Err(anyhow::anyhow!("{name} exited while starting ({status})")),
        _ = shutdown.cancelled() => Ok(()),
    };
    if let Err(e) = ready {
        stop_all(&mut services).await;
        return Err(e);
    }

    println!();
    println!("  chat stack running");
    for s in &services {
        println!("  {:<18}pid {}", s.name, s.child.id().unwrap_or(0));
    }
    println!("  demo page:      http://{addr}/   (open two tabs, pick two names)");
    println!("  WebSocket:      ws://{addr}/v1/ws");
    println!("  dev JWT secret: {secret}");
    println!("  admin API key:  {}", strings["CHAT_API_KEYS"]);
    println!(
        "  archive:        {}",
        if archive {
            "on (MongoDB at CHAT_MONGODB_URL)"
        } else {
            "off (set CHAT_MONGODB_URL to keep history in MongoDB)"
        }
    );
    let bin = binaries_dir()?;
    println!();
    println!("  In another terminal, paste these, then e.g. `chatctl rooms tail lobby`:");
    println!();
    println!("    export CHAT_REDIS_URL='{}'", strings["CHAT_REDIS_URL"]);
    println!("    export CHAT_JWT_SECRET='{secret}'");
    println!("    export CHAT_API_KEYS='{}'", strings["CHAT_API_KEYS"]);
    println!(
        "    export CHAT_API_KEY='{}'",
        first_key(&strings["CHAT_API_KEYS"])
    );
    println!("    export CHAT_URL='http://{addr}'");
    println!("    export PATH=\"{}:$PATH\"", bin.display());
    println!();
    println!("  mint a token:   chatctl token --sub alice --room '*'");
    println!();

    let outcome = tokio::select! {
        _ = shutdown.cancelled() => Ok(()),
        (name, status) = first_exit(&mut services) => Err(anyhow::anyhow!("{name} exited ({status}); stopping the stack")),
    };
    stop_all(&mut services).await;
    outcome
}

/// The first of a comma-separated list of API keys.
fn first_key(keys: &str) -> &str {
    keys.split(',').next().unwrap_or("").trim()
}

/// The ingress's address; port 0 is resolved here, since the banner and the
/// health check need the real one.
fn listen_addr(configured: SocketAddr) -> anyhow::Result<SocketAddr> {
    if configured.port() != 0 {
        return Ok(configured);
    }
    let probe = std::net::TcpListener::bind(configured).context("finding a free port")?;
    Ok(probe.local_addr()?)
}

/// The directory of chatctl's own executable, where cargo puts every binary
/// of the workspace.
fn binaries_dir() -> anyhow::Result<PathBuf> {
    let exe = std::env::current_exe().context("locating chatctl's executable")?;
    exe.parent()
        .map(Path::to_path_buf)
        .context("chatctl's executable has no directory")
}

fn spawn(dir: &Path, name: &str, env: &HashMap<String, String>) -> anyhow::Result<Child> {
    let path = dir.join(name);
    if !path.is_file() {
        bail!(
            "{name} is not built next to chatctl ({}); build every service first: \
             cargo build --release --bins (scripts/stack does)",
            path.display()
        );
    }
    let mut command = Command::new(&path);
    command.envs(env);
    if name != "ingress" {
        // One address cannot serve five processes: the workers' own metrics
        // listeners stay off here (the ingress serves its /metrics).
        command.env_remove("CHAT_METRICS_LISTEN");
    }
    command
        .stdin(std::process::Stdio::null())
        // A stack that dies without its cleanup leaves no orphans.
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", path.display()))
}

async fn wait_healthy(addr: SocketAddr) -> anyhow::Result<()> {
    let http = reqwest::Client::new();
    let url = format!("http://{addr}/healthz");
    let deadline = tokio::time::Instant::now() + START_TIMEOUT;
    loop {
        match http.get(&url).send().await {
            Ok(r) if r.status().is_success() => return Ok(()),
            _ if tokio::time::Instant::now() >= deadline => {
                bail!("the ingress did not answer {url} within {START_TIMEOUT:?}")
            }
            _ => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Resolves when any child exits, with its name and status.
async fn first_exit(services: &mut [Service]) -> (&'static str, String) {
    let waits = services.iter_mut().map(|s| {
        let name = s.name;
        Box::pin(async move {
            let status = match s.child.wait().await {
                Ok(st) => st.to_string(),
                Err(e) => e.to_string(),
            };
            (name, status)
        })
    });
    futures_util::future::select_all(waits).await.0
}

/// SIGTERM to every child, then a wait; whoever outlives the grace is killed.
async fn stop_all(services: &mut [Service]) {
    for s in services.iter() {
        if let Some(pid) = s
            .child
            .id()
            .and_then(|p| i32::try_from(p).ok())
            .and_then(rustix::process::Pid::from_raw)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
    }
    for s in services.iter_mut() {
        match tokio::time::timeout(STOP_GRACE, s.child.wait()).await {
            Ok(Ok(status)) if !status.success() => {
                eprintln!("{} stopped: {status}", s.name);
            }
            Ok(_) => {}
            Err(_) => {
                eprintln!("{} did not stop within {STOP_GRACE:?}; killing it", s.name);
                let _ = s.child.kill().await;
            }
        }
    }
}
