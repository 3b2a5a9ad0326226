//! Evaluation: ranking metrics over generated identifiers.

pub mod metrics;
