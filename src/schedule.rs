//! When to renew. Pure: certificate times, a policy and "now" in; an instant out.
//!
//! The rule (after rustls-acme): renew once `renew_at` of the certificate's *actual* lifetime
//! (notBefore → notAfter, read from the certificate) has passed, and no later than
//! `min_remaining` before notAfter, minus a random jitter so that a fleet started together
//! does not renew together.

use std::time::Duration;

use time::OffsetDateTime;

use crate::config::CertificateConfig;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Policy {
    pub renew_at: f64,
    pub min_remaining: Duration,
    pub jitter: Duration,
}

impl From<&CertificateConfig> for Policy {
    fn from(c: &CertificateConfig) -> Policy {
        Policy {
            renew_at: c.renew_at.0,
            min_remaining: c.min_remaining.0,
            jitter: c.jitter.0,
        }
    }
}

impl Policy {
    /// `min_remaining`, capped at half the certificate's lifetime: a certificate shorter than
    /// `min_remaining` (the service may cap lifetimes) is then renewed at half-life instead of
    /// the moment it arrives, which would loop against the service.
    pub fn effective_min_remaining(&self, lifetime: Duration) -> Duration {
        self.min_remaining.min(lifetime / 2)
    }

    /// The renewal instant before jitter.
    pub fn renewal_point(
        &self,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
    ) -> OffsetDateTime {
        let lifetime: Duration = (not_after - not_before)
            .try_into()
            .unwrap_or(Duration::ZERO);
        let by_fraction = not_before + lifetime.mul_f64(self.renew_at);
        let latest = not_after - self.effective_min_remaining(lifetime);
        by_fraction.min(latest)
    }

    /// The renewal instant with jitter; `unit` is a random draw from [0, 1). Jitter never
    /// exceeds a tenth of the lifetime, so it cannot pull renewal to before issuance.
    pub fn next_renewal(
        &self,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        unit: f64,
    ) -> OffsetDateTime {
        let lifetime: Duration = (not_after - not_before)
            .try_into()
            .unwrap_or(Duration::ZERO);
        let jitter = self.jitter.min(lifetime / 10).mul_f64(unit.clamp(0.0, 1.0));
        self.renewal_point(not_before, not_after) - jitter
    }

    /// Whether a certificate with these times should be renewed at `now` (no jitter: an
    /// operator asking "is it due?" gets a stable answer).
    pub fn is_due(
        &self,
        not_before: OffsetDateTime,
        not_after: OffsetDateTime,
        now: OffsetDateTime,
    ) -> bool {
        now >= self.renewal_point(not_before, not_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    fn policy() -> Policy {
        Policy {
            renew_at: 0.66,
            min_remaining: Duration::from_secs(600),
            jitter: Duration::from_secs(30),
        }
    }

    #[test]
    fn one_hour_certificate_renews_at_two_thirds() {
        let nb = datetime!(2026-01-01 00:00 UTC);
        let na = datetime!(2026-01-01 01:00 UTC);
        assert_eq!(
            policy().renewal_point(nb, na),
            nb + Duration::from_secs(2376)
        );
        assert_eq!(
            policy().next_renewal(nb, na, 1.0),
            nb + Duration::from_secs(2346)
        );
    }

    #[test]
    fn min_remaining_wins_when_it_is_earlier() {
        let p = Policy {
            renew_at: 0.95,
            ..policy()
        };
        let nb = datetime!(2026-01-01 00:00 UTC);
        let na = datetime!(2026-01-01 01:00 UTC);
        assert_eq!(p.renewal_point(nb, na), na - Duration::from_secs(600));
    }

    #[test]
    fn short_certificate_follows_the_certificate_not_the_request() {
        // Asked for 1h, got 2 minutes: renew within the 2 minutes, not at once.
        let nb = datetime!(2026-01-01 00:00 UTC);
        let na = nb + Duration::from_secs(120);
        let at = policy().renewal_point(nb, na);
        assert_eq!(at, nb + Duration::from_secs(60));
        assert!(policy().next_renewal(nb, na, 0.99) > nb);
    }

    #[test]
    fn due_flips_at_the_point() {
        let nb = datetime!(2026-01-01 00:00 UTC);
        let na = datetime!(2026-01-01 01:00 UTC);
        let point = policy().renewal_point(nb, na);
        assert!(!policy().is_due(nb, na, point - Duration::from_secs(1)));
        assert!(policy().is_due(nb, na, point));
    }
}
