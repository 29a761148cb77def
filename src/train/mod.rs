//! Training: losses, optimizers, schedules, the loop, checkpoints, metrics.

pub mod init;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod schedule;
