//! The instance identity tokens the emulator has issued, and checking a presented one.

use std::collections::HashMap;

use time::{Duration, OffsetDateTime};

/// Why a presented bearer token is not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TokenProblem {
    Unknown,
    Expired,
}

/// Issued tokens and when each expires.
#[derive(Debug, Default)]
pub(crate) struct TokenStore {
    expiry: HashMap<String, OffsetDateTime>,
}

impl TokenStore {
    /// Remembers `token` until `expires_at`. Tokens that have already expired are dropped
    /// here, which keeps the map bounded by the number of live tokens.
    pub fn insert(&mut self, token: String, expires_at: OffsetDateTime, now: OffsetDateTime) {
        self.expiry.retain(|_, exp| *exp > now);
        self.expiry.insert(token, expires_at);
    }

    /// Whether `token` may be used at `now`. A token is valid strictly before its expiry.
    pub fn check(&self, token: &str, now: OffsetDateTime) -> Result<(), TokenProblem> {
        match self.expiry.get(token) {
            None => Err(TokenProblem::Unknown),
            Some(exp) if *exp <= now => Err(TokenProblem::Expired),
            Some(_) => Ok(()),
        }
    }

    /// Forgets `token`: from now on it is refused as unknown, as a revoked token would be.
    pub fn revoke(&mut self, token: &str) {
        self.expiry.remove(token);
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.expiry.len()
    }
}

/// The lifetime bounds the service documents for identity tokens, in seconds.
pub(crate) const MIN_TOKEN_SECONDS: u64 = 5;
pub(crate) const MAX_TOKEN_SECONDS: u64 = 3600;
pub(crate) const DEFAULT_TOKEN_SECONDS: u64 = 300;

/// `seconds` as a `time::Duration`; callers have already bounded it by [`MAX_TOKEN_SECONDS`]
/// or a certificate's maximum, far below `i64::MAX`.
pub(crate) fn seconds(seconds: u64) -> Duration {
    Duration::seconds(i64::try_from(seconds).unwrap_or(i64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn unknown_expired_and_valid() {
        let t0 = datetime!(2025-01-01 00:00:00 UTC);
        let mut store = TokenStore::default();
        store.insert("a".into(), t0 + seconds(10), t0);
        assert_eq!(store.check("a", t0), Ok(()));
        assert_eq!(store.check("a", t0 + seconds(9)), Ok(()));
        assert_eq!(
            store.check("a", t0 + seconds(10)),
            Err(TokenProblem::Expired)
        );
        assert_eq!(store.check("b", t0), Err(TokenProblem::Unknown));
        store.revoke("a");
        assert_eq!(store.check("a", t0), Err(TokenProblem::Unknown));
    }

    #[test]
    fn insert_purges_expired_tokens() {
        let t0 = datetime!(2025-01-01 00:00:00 UTC);
        let mut store = TokenStore::default();
        store.insert("old".into(), t0 + seconds(5), t0);
        store.insert("live".into(), t0 + seconds(300), t0);
        assert_eq!(store.len(), 2);
        store.insert("new".into(), t0 + seconds(305), t0 + seconds(6));
        assert_eq!(store.len(), 2);
        assert_eq!(
            store.check("old", t0 + seconds(6)),
            Err(TokenProblem::Unknown)
        );
        assert_eq!(store.check("live", t0 + seconds(6)), Ok(()));
    }
}
