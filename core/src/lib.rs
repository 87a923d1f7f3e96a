//! Shared library of the chat backend: configuration, the Redis key schema,
//! the Lua scripts, the wire types of the contract, JWT verification and the
//! test support that starts a real `redis-server`.

pub mod backoff;
pub mod clock;
pub mod config;
pub mod consumer;
pub mod control;
pub mod entry;
pub mod google;
pub mod group;
pub mod jwt;
pub mod keys;
pub mod live;
pub mod metrics;
pub mod outbox;
pub mod pattern;
pub mod protocol;
pub mod redis_conn;
pub mod replicas;
pub mod report;
pub mod scripts;
pub mod sessions;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
pub mod tombstone;
