//! End-to-end tests: every service against a real `redis-server`.
//! One binary with many modules so the link step happens once.

mod smoke;
