//! Evaluation: the paper's speed metrics (`speed`), ranking metrics (`metrics`), the bench
//! runner and its width tuner, Table 1 reports, and the device selftest.

pub mod bench;
pub mod metrics;
pub mod recommend;
pub mod report;
pub mod selftest;
pub mod speed;
pub mod tune;
