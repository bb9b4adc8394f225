//! Why the emulator could not start: the error of `start`, which the TLS setup
//! returns too. Its own module so that `tls` need not import the crate root that imports it.

use std::net::SocketAddr;
use std::path::PathBuf;

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum EmulatorError {
    #[error("emulator could not listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("emulator could not generate its certificate authority: {0}")]
    Ca(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("emulator could not set up TLS: {0}")]
    Tls(#[source] rustls::Error),
    #[error("emulator could not write its state file {}: {source}", path.display())]
    StateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl EmulatorError {
    pub(crate) fn ca(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        EmulatorError::Ca(Box::new(e))
    }
}
