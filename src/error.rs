//! The one error type for setting a server up and running it.

use std::path::PathBuf;
use std::{fmt, io};

/// What went wrong while configuring, binding or running a server.
#[derive(Debug)]
#[non_exhaustive]
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
    /// The TLS certificate or key cannot be used.
    Tls {
        /// The file at fault, when one is.
        path: Option<PathBuf>,
        /// What is wrong and, where possible, how to fix it.
        message: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config { option, message } => write!(f, "invalid config: {option} {message}"),
            Error::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Error::Io(e) => write!(f, "I/O error: {e}"),
            Error::Tls {
                path: Some(path),
                message,
            } => write!(f, "TLS file {}: {message}", path.display()),
            Error::Tls {
                path: None,
                message,
            } => write!(f, "TLS: {message}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Config { .. } | Error::Tls { .. } => None,
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
