//! The one error type for setting a server up and running it.

use std::{fmt, io};

/// What went wrong while configuring, binding or running a server.
#[derive(Debug)]
pub enum Error {
    /// A `Config` option has a value it cannot take.
    Config {
        /// The option's name, as in `Config`.
        option: &'static str,
        /// What is wrong with the value.
        message: String,
    },
    /// The listening socket could not be bound.
    Bind {
        /// The address as given.
        addr: String,
        /// Why it failed.
        source: io::Error,
    },
    /// An I/O error of the reactor itself (the poll or the listener).
    Io(io::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config { option, message } => write!(f, "invalid config: {option} {message}"),
            Error::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config { .. } => None,
            Error::Bind { source, .. } => Some(source),
            Error::Io(e) => Some(e),
        }
    }
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}
