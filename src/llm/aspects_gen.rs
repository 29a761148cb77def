//! Aspect generation (being written).
