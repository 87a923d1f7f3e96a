//! The ingress as its own process: settings from the environment, then serve.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    chat_core::report::exit(run().await)
}

async fn run() -> anyhow::Result<()> {
    chat_core::telemetry::init("info");
    let strings = chat_core::config::load_strings()?;
    let settings = ingress::settings::IngressSettings::from_strings(&strings)?;
    let shutdown = CancellationToken::new();
    chat_core::shutdown::cancel_on_signal(shutdown.clone());
    let node = ingress::Ingress::build(settings, shutdown)
        .await
        .context("starting ingress")?;
    node.run().await?;
    Ok(())
}
