//! Evaluation: ranking metrics over generated identifiers.

pub mod bench;
pub mod metrics;
pub mod report;
pub mod selftest;
pub mod tune;
