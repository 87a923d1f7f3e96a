//! The ingress as a real process (its release or debug binary) against a
//! real Redis: the SIGTERM drain, and what hostile clients can and cannot
//! do to a node.

mod drain;
mod hostile;
mod logs;
mod startup;
mod support;
