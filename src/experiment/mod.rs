//! Experiments: variants × seeds with honest controls, and their aggregation.

pub mod results;
pub mod stats;
