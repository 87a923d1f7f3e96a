//! End-to-end tests: every service against a real `redis-server`.
//! One binary with many modules so the link step happens once.

mod archive;
mod auth;
mod cluster;
mod conversation;
mod delivery;
mod failover;
mod faults;
mod fcm;
mod gemini;
mod lifecycle;
mod moderation;
mod notify;
mod outage;
mod overload;
mod promises;
mod protocol;
mod recovery;
mod retention;
mod sessions;
mod smoke;
mod storeloss;
mod summaries;
mod unread;
