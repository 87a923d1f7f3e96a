//! The operator commands, run as the real `chatctl` binary against a running
//! stack (real redis-server, in-process ingress and workers), configured
//! through the same `CHAT_*` variables and streams.toml as the services.
//! One test binary, so the slow link step happens once.

mod cli;
mod cluster;
mod config;
mod dlq;
mod help;
mod rooms;
mod sessions;
mod stack;
mod token;
mod webhooks;
