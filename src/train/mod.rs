//! Training: losses, optimizers, schedules, the loop, checkpoints, metrics.
