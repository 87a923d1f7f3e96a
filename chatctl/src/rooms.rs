//! `chatctl rooms`: follow a room live, or read its history.

pub mod history;
pub mod tail;
