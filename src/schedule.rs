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

/// Capped exponential backoff with full jitter, for retries after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub initial: Duration,
    pub cap: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(5),
            cap: Duration::from_secs(300),
        }
    }
}

/// How a failed attempt failed, as far as retrying is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Worth retrying soon (network, 5xx, 429, a bad certificate that a retry may fix).
    Transient { retry_after: Option<Duration> },
    /// Cannot succeed until the configuration changes (a 4xx such as a refused CSR): retried
    /// only at the cap, so a fix is picked up without hammering the service meanwhile.
    Permanent,
}

impl Backoff {
    /// The least a retry waits: full jitter may draw zero, and a service that is down should
    /// not see back-to-back requests.
    pub fn floor(&self) -> Duration {
        self.initial.min(Duration::from_secs(1))
    }

    /// The delay before retry number `failures` (1 = after the first failure); `unit` is a
    /// random draw from [0, 1).
    ///
    /// Transient: uniform in [floor, min(cap, initial·2^(failures−1))], and at least the
    /// server's `Retry-After` (itself capped, so a hostile header cannot stall renewal).
    pub fn delay(&self, failures: u32, failure: Failure, unit: f64) -> Duration {
        match failure {
            Failure::Permanent => self.cap,
            Failure::Transient { retry_after } => {
                let exp = failures.saturating_sub(1).min(30);
                let ceiling = self.initial.saturating_mul(1u32 << exp).min(self.cap);
                let drawn = ceiling.mul_f64(unit.clamp(0.0, 1.0)).max(self.floor());
                let asked = retry_after.unwrap_or(Duration::ZERO).min(self.cap);
                drawn.max(asked).min(self.cap.max(self.floor()))
            }
        }
    }
}

#[cfg(test)]
mod backoff_tests {
    use super::*;

    const B: Backoff = Backoff {
        initial: Duration::from_secs(5),
        cap: Duration::from_secs(300),
    };
    const T: Failure = Failure::Transient { retry_after: None };

    #[test]
    fn ceiling_doubles_until_the_cap() {
        assert_eq!(B.delay(1, T, 1.0), Duration::from_secs(5));
        assert_eq!(B.delay(2, T, 1.0), Duration::from_secs(10));
        assert_eq!(B.delay(4, T, 1.0), Duration::from_secs(40));
        assert_eq!(B.delay(7, T, 1.0), Duration::from_secs(300));
        assert_eq!(B.delay(1000, T, 1.0), Duration::from_secs(300));
    }

    #[test]
    fn full_jitter_is_floored() {
        assert_eq!(B.delay(3, T, 0.0), Duration::from_secs(1));
        assert_eq!(B.delay(3, T, 0.5), Duration::from_secs(10));
    }

    #[test]
    fn retry_after_is_honoured_but_capped() {
        let ra = |s| Failure::Transient {
            retry_after: Some(Duration::from_secs(s)),
        };
        assert_eq!(B.delay(1, ra(30), 0.0), Duration::from_secs(30));
        assert_eq!(B.delay(1, ra(86400), 0.0), Duration::from_secs(300));
    }

    #[test]
    fn permanent_failures_wait_the_cap() {
        assert_eq!(
            B.delay(1, Failure::Permanent, 0.0),
            Duration::from_secs(300)
        );
    }
}
