//! Experiments: variants × seeds with honest controls, and their aggregation.
<<<<<<< HEAD
=======

pub mod results;
pub mod stats;
>>>>>>> h-report
