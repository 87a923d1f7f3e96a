//! Each service's settings: the contract between an operator's configuration
//! (`CHAT_*` over `CHAT_CONFIG`) and the process that reads it at start.
//! They live here, not in the deployables, so `chatctl config check` can
//! check every service's configuration without linking any of them.

pub mod archive;
pub mod fanout;
pub mod ingress;
pub mod notifier;
pub mod service_account;
pub mod summarizer;
pub mod webhook;
