//! webhook-worker as its own process.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    chat_core::report::exit(run().await)
}

async fn run() -> anyhow::Result<()> {
    chat_core::telemetry::init("info");
    let strings = chat_core::config::load_strings()?;
    let settings = webhook_worker::settings::WebhookSettings::from_strings(&strings)?;
    let shutdown = CancellationToken::new();
    chat_core::shutdown::cancel_on_signal(shutdown.clone());
    // Prometheus at CHAT_METRICS_LISTEN (e.g. 0.0.0.0:9100), when set.
    chat_core::metrics::serve_configured(&strings, shutdown.clone()).await?;
    let grace = settings.common.shutdown_grace;
    let worker = webhook_worker::Webhooks::build(settings)
        .await
        .context("starting webhook worker")?;
    if let Some(r) =
        chat_core::shutdown::with_grace(worker.run(shutdown.clone()), shutdown, grace).await
    {
        r?;
    }
    Ok(())
}
