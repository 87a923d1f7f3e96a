//! Operator commands: run the whole stack locally, mint a dev token.

mod bench;
mod stack;
mod summarize;

use anyhow::Context;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "chatctl", about = "Operate the chat backend", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service in one process (Redis from CHAT_REDIS_URL, or a
    /// redis-server child on a free port).
    Stack,
    /// Mint an HS256 token for development.
    Token {
        /// User id (`sub`).
        #[arg(long)]
        sub: String,
        /// Signing secret (CHAT_JWT_SECRET).
        #[arg(long, env = "CHAT_JWT_SECRET", hide_env_values = true)]
        secret: String,
        /// Room patterns for the `rooms` claim (repeatable), e.g. `team:*`.
        #[arg(long = "room")]
        rooms: Vec<String>,
        /// Session id (`sid`).
        #[arg(long)]
        sid: Option<String>,
        /// Lifetime, e.g. `1h`.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// Validate streams.toml and the CHAT_* environment.
    Config,
    /// Load generator: R x M real WebSocket clients, open-loop sends, checks
    /// every delivery; prints one JSON line.
    Bench {
        /// WebSocket URLs of the ingress nodes (comma-separated).
        #[arg(
            long,
            value_delimiter = ',',
            default_value = "ws://127.0.0.1:8080/v1/ws"
        )]
        urls: Vec<String>,
        /// HS256 secret the nodes verify tokens with.
        #[arg(long, env = "CHAT_JWT_SECRET", hide_env_values = true)]
        secret: String,
        #[arg(long, default_value_t = 100)]
        rooms: usize,
        #[arg(long, default_value_t = 10)]
        members: usize,
        /// Messages per second, all rooms together.
        #[arg(long, default_value_t = 2000)]
        rate: u64,
        #[arg(long, default_value = "20s")]
        duration: String,
        #[arg(long, default_value = "2s")]
        warmup: String,
        #[arg(long, default_value = "5s")]
        drain: String,
        #[arg(long, default_value_t = 64)]
        text_bytes: usize,
        /// Processes to measure: name=pid,name=pid.
        #[arg(long, value_delimiter = ',')]
        pids: Vec<String>,
        /// Open this many idle sockets instead, and report memory per connection
        /// (of the first pid).
        #[arg(long)]
        connections: Option<usize>,
        /// Raise the rate from --rate by --step until p99 passes --p99-limit-ms
        /// or a message is lost; report the highest rate that held.
        #[arg(long)]
        find_max: bool,
        #[arg(long, default_value_t = 1000)]
        step: u64,
        #[arg(long, default_value_t = 50.0)]
        p99_limit_ms: f64,
        #[arg(long, default_value_t = 40000)]
        max_rate: u64,
    },
    /// Summarize rooms: submit a batch, follow it with a progress bar, print
    /// the results; exits 1 if any job failed.
    Summarize {
        /// Ingress base URL.
        #[arg(long, env = "CHAT_URL", default_value = "http://127.0.0.1:8080")]
        url: String,
        /// Admin API key.
        #[arg(long, env = "CHAT_API_KEY", hide_env_values = true)]
        api_key: String,
        /// A room to summarize (repeatable).
        #[arg(long = "room")]
        rooms: Vec<String>,
        /// A file with one room per line.
        #[arg(long)]
        rooms_file: Option<std::path::PathBuf>,
        /// Only messages at or after this time (ms since the epoch).
        #[arg(long)]
        since: Option<u64>,
        /// Only messages at or before this time (ms since the epoch).
        #[arg(long)]
        until: Option<u64>,
        /// Give up waiting after this long.
        #[arg(long, default_value = "10m")]
        timeout: String,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Stack => {
            chat_core::telemetry::init("info");
            stack::run().await
        }
        Command::Token {
            sub,
            secret,
            rooms,
            sid,
            ttl,
        } => {
            let ttl = chat_core::config::parse_duration(&ttl).map_err(anyhow::Error::msg)?;
            println!(
                "{}",
                mint(&secret, &sub, &rooms, sid.as_deref(), ttl.as_secs())?
            );
            Ok(())
        }
        Command::Summarize {
            url,
            api_key,
            rooms,
            rooms_file,
            since,
            until,
            timeout,
        } => {
            let rooms = summarize::rooms(rooms, rooms_file.as_deref())?;
            let timeout =
                chat_core::config::parse_duration(&timeout).map_err(anyhow::Error::msg)?;
            let ok = summarize::run(summarize::Args {
                url,
                api_key,
                rooms,
                since,
                until,
                timeout,
            })
            .await?;
            if !ok {
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Bench {
            urls,
            secret,
            rooms,
            members,
            rate,
            duration,
            warmup,
            drain,
            text_bytes,
            pids,
            connections,
            find_max,
            step,
            p99_limit_ms,
            max_rate,
        } => {
            let dur = |s: &str| chat_core::config::parse_duration(s).map_err(anyhow::Error::msg);
            let pids: Vec<(String, u32)> = pids
                .iter()
                .filter_map(|p| {
                    let (n, id) = p.split_once('=')?;
                    Some((n.to_owned(), id.parse().ok()?))
                })
                .collect();
            let out = if let Some(n) = connections {
                bench::connections(&urls, &secret, n, pids.first().map(|p| p.1)).await?
            } else {
                let mut args = bench::Args {
                    urls,
                    secret,
                    rooms,
                    members,
                    rate,
                    duration: dur(&duration)?,
                    warmup: dur(&warmup)?,
                    drain: dur(&drain)?,
                    text_bytes,
                    pids,
                };
                if find_max {
                    bench::find_max(&mut args, p99_limit_ms, rate, step, max_rate).await?
                } else {
                    bench::run(&args).await?
                }
            };
            println!("{out}");
            Ok(())
        }
        Command::Config => {
            let strings = chat_core::config::load_strings()?;
            ingress::settings::IngressSettings::from_strings(&strings)
                .context("ingress settings")?;
            fanout_worker::settings::FanoutSettings::from_strings(&strings)
                .context("fanout settings")?;
            notifier_worker::settings::NotifierSettings::from_strings(&strings)
                .context("notifier settings")?;
            summarizer_worker::settings::SummarizerSettings::from_strings(&strings)
                .context("summarizer settings")?;
            println!("configuration ok");
            Ok(())
        }
    }
}

pub fn mint(
    secret: &str,
    sub: &str,
    rooms: &[String],
    sid: Option<&str>,
    ttl: u64,
) -> anyhow::Result<String> {
    let exp = ingress::ws::now_secs() + ttl;
    let mut claims = serde_json::json!({"sub": sub, "exp": exp});
    if !rooms.is_empty() {
        claims["rooms"] = serde_json::json!(rooms);
    }
    if let Some(sid) = sid {
        claims["sid"] = serde_json::json!(sid);
    }
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )?)
}
