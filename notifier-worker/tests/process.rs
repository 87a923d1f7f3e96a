//! notifier-worker as its own process: a bad setting stops it with the setting
//! named and no panic; a good one runs until SIGTERM and exits cleanly.

use chat_devkit::testing::process;

const BIN: &str = env!("CARGO_BIN_EXE_notifier-worker");

#[tokio::test]
async fn a_bad_setting_stops_it_with_the_setting_named() {
    process::refuses_bad_setting(BIN, "CHAT_FCM_SERVICE_ACCOUNT", "/nonexistent/sa.json").await;
}

#[tokio::test]
async fn it_runs_until_sigterm_and_exits_cleanly() {
    process::stops_cleanly_on_sigterm(BIN, "notifier ready").await;
}
