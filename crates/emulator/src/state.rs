//! The state every request handler shares, and that [`super::Running`] reads and steers.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::watch;

use super::ca::Authority;
use super::faults::FaultSwitch;
use super::journal::Journal;
use super::tokens::TokenStore;

pub(crate) struct Shared {
    /// Becomes the CN of every issued certificate (e.g. `0717_eb1b7391-...`).
    pub instance_id: String,
    /// Upper bound on issued certificate lifetimes, whatever the client asks for (changed at
    /// run time by [`super::Running::set_max_lifetime`]).
    pub max_lifetime: Mutex<Option<Duration>>,
    pub authority: Authority,
    pub tokens: Mutex<TokenStore>,
    pub journal: Journal,
    pub faults: FaultSwitch,
    /// Turns `true` when the server is asked to stop, so that a call held back on purpose
    /// (fault mode `slow`) does not hold up the shutdown.
    pub stop: watch::Receiver<bool>,
}

impl Shared {
    /// The token store. Every operation on it completes before the lock is released, so
    /// a poisoned lock still guards a consistent map.
    pub fn tokens(&self) -> std::sync::MutexGuard<'_, TokenStore> {
        self.tokens
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}
