//! fanout-worker as its own process.

use anyhow::Context;
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    chat_core::telemetry::init("info");
    let strings = chat_core::config::load_strings()?;
    let settings = fanout_worker::settings::FanoutSettings::from_strings(&strings)?;
    let shutdown = CancellationToken::new();
    chat_core::shutdown::cancel_on_signal(shutdown.clone());
    let worker = fanout_worker::Fanout::build(settings)
        .await
        .context("starting fanout worker")?;
    worker.run(shutdown).await?;
    Ok(())
}
