//! Experiments: variants × seeds with honest controls, and their aggregation.
