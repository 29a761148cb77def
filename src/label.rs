//! The label driver: runs a teacher over a dataset and writes the score store.
