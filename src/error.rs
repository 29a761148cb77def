//! The library's error type.
//!
//! Every error a user can cause (a bad file, a bad config value, a mismatched store) is an
//! [`Error::Input`]: it says what failed, where (a path, a line, a config key) and a `hint:` for the
//! likely fix. Exit codes ([`Error::exit_code`]): 2 for what the user can fix — [`Error::Input`],
//! [`Error::Io`] (a named path that cannot be read or written) and [`Error::Remote`] (a server
//! refused the request); 1 for bugs ([`Error::Internal`]) and tensor failures ([`Error::Candle`]);
//! 130 for Ctrl-C ([`Error::Interrupted`]).

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Bad user input: a file, a config value, a dataset, a score store. Exit code 2.
    // The hint is not part of the message: `main` prints it last, after the whole error chain.
    #[error("{at}: {what}")]
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
    #[error("{endpoint}: {what}")]
    Remote {
        endpoint: String,
        what: String,
        hint: String,
    },

    #[error(transparent)]
    Candle(#[from] candle_core::Error),

    /// A bug in makd (a panic caught at a thread boundary, a broken invariant). Exit code 1.
    #[error("internal error: {what}")]
    Internal { what: String },

    /// The run was interrupted (Ctrl-C); everything done so far is saved.
    #[error("interrupted")]
    Interrupted,
}

pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// How to fix it, printed after the error (`hint: …`); `None` where there is nothing to add.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Error::Input { hint, .. } | Error::Remote { hint, .. } => Some(hint),
            Error::Internal { .. } => {
                Some("this is a bug in makd: please report it with the command that triggered it")
            }
            Error::Io { .. } | Error::Candle(_) | Error::Interrupted => None,
        }
    }

    /// The message and, on its own line, the hint: for places that hand an error on as text
    /// (a command-line value parser).
    pub fn report(&self) -> String {
        match self.hint() {
            Some(h) => format!("{self}\nhint: {h}"),
            None => self.to_string(),
        }
    }

    /// Exit code for the binary: 2 for anything the user can fix, 1 otherwise.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Input { .. } | Error::Io { .. } | Error::Remote { .. } => 2,
            Error::Interrupted => 130,
            Error::Candle(_) | Error::Internal { .. } => 1,
        }
    }
}

/// A user-input error: `what` failed `at` a place; `hint` says how to fix it (shown last).
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
