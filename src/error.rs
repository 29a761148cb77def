//! The library's error type.
//!
//! Every error a user can cause (a bad file, a bad config value, a mismatched store) is an
//! [`Error::Input`]: it says what failed, where (a path, a line, a config key) and a `hint:` for the
//! likely fix, and the binary exits with code 2 on it. Everything else is a bug or an environment
//! failure and exits with code 1.

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad user input: a file, a config value, a dataset, a score store. Exit code 2.
    #[error("{at}: {what}\nhint: {hint}")]
    Input {
        what: String,
        at: String,
        hint: String,
    },

    /// An I/O failure on a named path.
    // The io::Error is part of the message, not a `source`, so it is printed once.
    #[error("{path}: {error}")]
    Io { path: String, error: std::io::Error },

    /// A remote server (LLM endpoint) failed in a way retries cannot heal.
    #[error("{endpoint}: {what}\nhint: {hint}")]
    Remote {
        endpoint: String,
        what: String,
        hint: String,
    },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// The run was interrupted (Ctrl-C); everything done so far is saved.
    #[error("interrupted")]
    Interrupted,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Exit code for the binary: 2 for anything the user can fix, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input { .. } | Error::Io { .. } | Error::Remote { .. } => 2,
            Error::Interrupted => 130,
            Error::Candle(_) => 1,
        }
    }
}

/// A user-input error: `what` failed `at` a place; `hint` says how to fix it.
pub fn input(what: impl Into<String>, at: impl Into<String>, hint: impl Into<String>) -> Error {
    Error::Input {
        what: what.into(),
        at: at.into(),
        hint: hint.into(),
    }
}

/// Attach a path to an I/O error.
pub fn io(path: impl AsRef<Path>, source: std::io::Error) -> Error {
    Error::Io {
        path: path.as_ref().display().to_string(),
        error: source,
    }
}

/// `.at(path)` on any `io::Result`: the I/O edge always names its file.
pub trait IoContext<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, path: impl AsRef<Path>) -> Result<T> {
        self.map_err(|e| io(path, e))
    }
}
