//! Operator commands: run the whole stack locally, mint a dev token, check
//! the configuration, follow and read rooms, revoke sessions, inspect and
//! replay dead letters, submit summaries, generate load. Each command that
//! touches Redis reads the same configuration as the services.

mod abuse;
mod bench;
mod config_check;
mod context;
mod dlq;
mod hops;
mod output;
mod rooms;
mod sessions;
mod stack;
mod summarize;
mod token;

use clap::{Args, Parser, Subcommand};
use context::Context;

#[derive(Parser)]
#[command(
    name = "chatctl",
    about = "Operate the chat backend",
    long_about = "Operate the chat backend. Commands that talk to Redis read the services' \
        configuration: CHAT_* variables over the file named by CHAT_CONFIG, and \
        CHAT_STREAMS (or ./streams.toml).",
    version
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every service locally, each its own process started from the
    /// binaries next to chatctl (Redis from CHAT_REDIS_URL, or a
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
    /// Check the configuration (`config` alone does the same as `config check`).
    Config {
        #[command(subcommand)]
        action: Option<ConfigAction>,
    },
    /// Follow a room live, or read its history.
    Rooms {
        #[command(subcommand)]
        action: RoomsAction,
    },
    /// Sessions (the auth server's handoff).
    Sessions {
        #[command(subcommand)]
        action: SessionsAction,
    },
    /// The consumer groups' dead-letter streams: inspect and re-drive.
    Dlq {
        #[command(subcommand)]
        action: DlqAction,
    },
    /// Summary jobs.
    Summaries {
        #[command(subcommand)]
        action: SummariesAction,
    },
    /// The old name of `summaries submit`.
    #[command(hide = true)]
    Summarize(SubmitArgs),
    /// Hostile load against one node: slow connections, sockets that do not
    /// read (bench/abuse.sh; docs/operations.md "Limits and abuse").
    Abuse {
        #[command(subcommand)]
        action: AbuseAction,
    },
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
}

#[derive(Subcommand)]
enum AbuseAction {
    /// Keep N slow request heads open against one node (reopening those it
    /// closes) while probing /readyz and a user's send; prints one JSON line.
    Slow {
        /// host:port of the ingress node.
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        #[arg(long, env = "CHAT_JWT_SECRET", hide_env_values = true)]
        secret: String,
        #[arg(long, default_value_t = 1000)]
        connections: usize,
        /// Reopen each connection the node closes, at once.
        #[arg(long)]
        churn: bool,
        #[arg(long, default_value = "20s")]
        duration: String,
        /// The node's pid, for its memory and descriptors.
        #[arg(long)]
        pid: Option<u32>,
    },
    /// M sockets that ask for history pages and never read; prints the
    /// node's memory per socket.
    Hog {
        #[arg(long, default_value = "127.0.0.1:8080")]
        addr: String,
        #[arg(long, env = "CHAT_JWT_SECRET", hide_env_values = true)]
        secret: String,
        /// An admin key, to publish the room's messages.
        #[arg(long, env = "CHAT_API_KEY", hide_env_values = true)]
        api_key: String,
        #[arg(long, default_value_t = 20)]
        sockets: usize,
        #[arg(long)]
        pid: u32,
    },
}

#[derive(Subcommand)]
enum ConfigAction {
    /// Validate streams.toml and the CHAT_* settings of every service; print
    /// every bad field (not only the first) and exit 1, or a summary and
    /// `configuration ok`.
    Check,
}

#[derive(Subcommand)]
enum RoomsAction {
    /// Follow a room live from its Redis stream, one line per message
    /// (offset, time, user, kind, text), until Ctrl-C or SIGTERM.
    Tail {
        /// The room (^[A-Za-z0-9_.:-]{1,128}$).
        room: String,
        /// Print the messages after this offset first (default: only new ones).
        #[arg(long, value_name = "OFFSET")]
        since: Option<u64>,
        /// One JSON `message` frame per line, as the WebSocket sends them.
        #[arg(long)]
        json: bool,
    },
    /// Print a room's history, oldest first: Redis, then the MongoDB archive
    /// when CHAT_MONGODB_URL is set, across epochs.
    History {
        /// The room (^[A-Za-z0-9_.:-]{1,128}$).
        room: String,
        /// Only messages below this offset (exclusive).
        #[arg(long, value_name = "OFFSET")]
        before: Option<u64>,
        /// How many messages, at most.
        #[arg(long, default_value_t = 50, value_name = "N")]
        limit: u32,
        /// The epoch `--before` counts in (default: the current one).
        #[arg(long, value_name = "EPOCH")]
        epoch: Option<String>,
        /// One JSON `message` object per line.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum SessionsAction {
    /// Revoke a session: delete it and close its sockets (4003) on every
    /// ingress node, as `DELETE /v1/sessions/{sid}` does.
    Revoke {
        /// The session id (`sid` claim).
        sid: String,
    },
}

#[derive(Subcommand)]
enum DlqAction {
    /// List dead letters (oldest first) and how many each stream holds.
    List {
        /// Only this consumer group's dead letters: fanout, archive or
        /// notifier (the group names `dlq list` prints). Repeatable; default
        /// all. `--stream` is the older name of this flag.
        #[arg(long = "group", visible_alias = "stream", value_name = "GROUP")]
        streams: Vec<String>,
        /// One JSON object per dead letter.
        #[arg(long)]
        json: bool,
        /// At most this many per stream.
        #[arg(long, default_value_t = 1000)]
        limit: usize,
    },
    /// Re-drive dead letters into the stream their group reads, each removed
    /// from the dead-letter stream as it is re-added (a second replay
    /// re-drives nothing). Fix what dead-lettered them first.
    Replay {
        /// Dead-letter ids (from `dlq list`).
        #[arg(
            value_name = "ID",
            required_unless_present = "all",
            conflicts_with = "all"
        )]
        ids: Vec<String>,
        /// Every dead letter there is now (in the streams chosen).
        #[arg(long)]
        all: bool,
        /// Only this consumer group's dead letters: fanout, archive or
        /// notifier. Repeatable. `--stream` is the older name of this flag.
        #[arg(long = "group", visible_alias = "stream", value_name = "GROUP")]
        streams: Vec<String>,
        /// Say what would be re-driven where, and change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Subcommand)]
enum SummariesAction {
    /// Summarize rooms: submit a batch, follow it with a progress bar, print
    /// the results; exits 1 if any job failed.
    Submit(SubmitArgs),
}

#[derive(Args)]
struct SubmitArgs {
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
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        // The cause chain on one line, each cause once; no backtrace for an
        // operator's mistake.
        Err(e) => chat_core::report::exit(Err(e)),
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    if !matches!(cli.command, Command::Stack) {
        // Warnings (e.g. why a history read failed) on stderr, never mixed
        // into the output; RUST_LOG overrides.
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .try_init();
    }
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
            let ttl = duration_arg("--ttl", &ttl)?;
            println!(
                "{}",
                token::mint(&secret, &sub, &rooms, sid.as_deref(), ttl.as_secs())?
            );
            Ok(())
        }
        Command::Config { action: None }
        | Command::Config {
            action: Some(ConfigAction::Check),
        } => exit_unless(config_check::run()),
        Command::Rooms { action } => rooms(action).await,
        Command::Sessions {
            action: SessionsAction::Revoke { sid },
        } => sessions::revoke(&Context::load(false)?, &sid).await,
        Command::Dlq { action } => dlq(action).await,
        Command::Summaries {
            action: SummariesAction::Submit(args),
        }
        | Command::Summarize(args) => submit(args).await,
        Command::Abuse { action } => {
            let out = match action {
                AbuseAction::Slow {
                    addr,
                    secret,
                    connections,
                    churn,
                    duration,
                    pid,
                } => {
                    let duration = duration_arg("--duration", &duration)?;
                    abuse::slow(&addr, &secret, connections, churn, duration, pid).await?
                }
                AbuseAction::Hog {
                    addr,
                    secret,
                    api_key,
                    sockets,
                    pid,
                } => abuse::hog(&addr, &secret, &api_key, sockets, pid).await?,
            };
            println!("{out}");
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
                    duration: duration_arg("--duration", &duration)?,
                    warmup: duration_arg("--warmup", &warmup)?,
                    drain: duration_arg("--drain", &drain)?,
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
    }
}

/// A duration flag (`90s`, `10m`), its error naming the flag and the value.
fn duration_arg(flag: &str, value: &str) -> anyhow::Result<std::time::Duration> {
    chat_core::config::parse_duration(value).map_err(|e| anyhow::anyhow!("{flag} {value:?}: {e}"))
}

/// Exit status 1 for a check that failed (its report is printed already).
fn exit_unless(ok: bool) -> anyhow::Result<()> {
    if !ok {
        std::process::exit(1);
    }
    Ok(())
}

async fn rooms(action: RoomsAction) -> anyhow::Result<()> {
    match action {
        RoomsAction::Tail { room, since, json } => {
            let ctx = Context::load(false)?;
            rooms::tail::run(&ctx, rooms::tail::Args { room, since, json }).await
        }
        RoomsAction::History {
            room,
            before,
            limit,
            epoch,
            json,
        } => {
            let ctx = Context::load(true)?;
            let args = rooms::history::Args {
                room,
                before,
                limit,
                epoch,
                json,
            };
            rooms::history::run(&ctx, args).await
        }
    }
}

async fn dlq(action: DlqAction) -> anyhow::Result<()> {
    let ctx = Context::load(false)?;
    match action {
        DlqAction::List {
            streams,
            json,
            limit,
        } => {
            dlq::list(
                &ctx,
                dlq::ListArgs {
                    streams,
                    json,
                    limit,
                },
            )
            .await
        }
        DlqAction::Replay {
            ids,
            all,
            streams,
            dry_run,
        } => {
            let args = dlq::replay::Args {
                streams,
                ids,
                all,
                dry_run,
            };
            exit_unless(dlq::replay::run(&ctx, args).await?)
        }
    }
}

async fn submit(args: SubmitArgs) -> anyhow::Result<()> {
    let rooms = summarize::rooms(args.rooms, args.rooms_file.as_deref())?;
    let timeout = duration_arg("--timeout", &args.timeout)?;
    let ok = summarize::run(summarize::Args {
        url: args.url,
        api_key: args.api_key,
        rooms,
        since: args.since,
        until: args.until,
        timeout,
    })
    .await?;
    exit_unless(ok)
}
