//! Experiments: variants × seeds with honest controls, and their aggregation.

pub mod config;
pub mod results;
pub mod runner;
pub mod stats;
pub mod variant;
