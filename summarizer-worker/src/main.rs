//! summarizer-worker as its own process.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    chat_core::telemetry::init("info");
    let strings = chat_core::config::load_strings()?;
    let settings = summarizer_worker::settings::SummarizerSettings::from_strings(&strings)?;
    let shutdown = CancellationToken::new();
    chat_core::shutdown::cancel_on_signal(shutdown.clone());
    let worker = summarizer_worker::Summarizer::build(settings)
        .await
        .context("starting summarizer worker")?;
    worker.run(shutdown).await?;
    Ok(())
}
