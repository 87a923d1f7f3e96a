//! The archive in MongoDB ([`Store`]), and history read across both tiers,
//! Redis first and then the archive ([`tiers`]): what the archive worker
//! writes and the ingress and `chatctl` read.

mod store;
pub mod tiers;

pub use store::*;
