//! The score store.
