//! Training: losses, optimizers, schedules, the loop, checkpoints, metrics.

pub mod checkpoint;
pub mod classify;
pub mod config;
pub mod fit;
pub mod init;
pub mod kd;
pub mod loss;
pub mod metrics;
pub mod optim;
pub mod rows;
pub mod run_dir;
pub mod schedule;
pub mod targets;
pub mod trainer;
