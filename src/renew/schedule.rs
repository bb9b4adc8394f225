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
    /// Fraction of the certificate's lifetime after which it is renewed.
    pub renew_at: f64,
    /// Renew at the latest this long before notAfter (capped at half the lifetime).
    pub min_remaining: Duration,
    /// Renew up to this much earlier, at random.
    pub jitter: Duration,
    /// The shortest time between two successful renewals, whatever the certificate says.
    pub min_interval: Duration,
}

impl From<&CertificateConfig> for Policy {
    fn from(c: &CertificateConfig) -> Policy {
        Policy {
            renew_at: c.renew_at.0,
            min_remaining: c.min_remaining.0,
            jitter: c.jitter.0,
            min_interval: c.min_interval.0,
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

    /// `due` moved to no earlier than `min_interval` after the last successful renewal, and
    /// whether that moved it. This bounds the renewal rate whatever the certificate says: one
    /// that arrives nearly expired (an old notBefore, a notAfter seconds away) or lives for a
    /// few seconds would otherwise be renewed as fast as the service answers.
    pub fn rate_limited(
        &self,
        due: OffsetDateTime,
        last_success: Option<OffsetDateTime>,
    ) -> (OffsetDateTime, bool) {
        // `last_success` comes from state.json: a date so late that adding to it overflows
        // (a corrupt or planted file) sets no floor rather than a panic.
        let floor = last_success
            .and_then(|last| last.checked_add(time::Duration::try_from(self.min_interval).ok()?));
        match floor {
            Some(floor) if due < floor => (floor, true),
            _ => (due, false),
        }
    }

    /// The last successful renewal as far as the rate floor may trust it: one in the future
    /// was recorded under a wrong clock (or planted in state.json) and sets no floor, or a clock
    /// once set to 2099 would hold renewals back until 2099.
    pub fn trusted_last_success(
        last_success: Option<OffsetDateTime>,
        now: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        last_success.filter(|at| *at <= now)
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
            min_interval: Duration::from_secs(60),
        }
    }

    #[test]
    fn renewals_are_at_least_min_interval_apart() {
        // Issued a year ago, expiring in 90 s: due at once, by every rule but the floor.
        let now = datetime!(2026-06-01 12:00 UTC);
        let nb = now - Duration::from_secs(365 * 86_400);
        let na = now + Duration::from_secs(90);
        let due = policy().next_renewal(nb, na, 0.5);
        assert!(due <= now);
        let (at, held) = policy().rate_limited(due, Some(now));
        assert!(held);
        assert_eq!(at, now + Duration::from_secs(60));
        // A normal certificate is never held back.
        let (at, held) = policy().rate_limited(now + Duration::from_secs(2400), Some(now));
        assert_eq!((at, held), (now + Duration::from_secs(2400), false));
        assert_eq!(policy().rate_limited(due, None), (due, false));
        // A last success at the end of time (state.json is read from disk): no floor, no panic.
        let end = time::macros::datetime!(9999-12-31 23:59:59.999 UTC);
        assert_eq!(policy().rate_limited(due, Some(end)), (due, false));
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

    use proptest::prelude::*;

    const DAY: u64 = 86_400;

    /// Durations in whole nanoseconds between `lo` and `hi` seconds.
    fn duration(lo: u64, hi: u64) -> impl Strategy<Value = Duration> {
        (lo * 1_000_000_000..=hi * 1_000_000_000).prop_map(Duration::from_nanos)
    }

    proptest! {
        /// The exact property of the schedule, for every policy the config accepts (renew_at
        /// 0.1..=0.95) and any min_remaining and jitter, with effective_min_remaining =
        /// min(min_remaining, lifetime / 2) and jitter capped at a tenth of the lifetime:
        ///
        /// notBefore <= next_renewal <= renewal_point <= notAfter - effective_min_remaining,
        /// renewal_point - next_renewal <= min(jitter, lifetime / 10), and
        /// next_renewal < notAfter.
        ///
        /// Not strictly before notAfter - effective_min_remaining: with a zero jitter draw the
        /// renewal is exactly at that instant whenever min_remaining is the earlier bound. Nor
        /// strictly after notBefore: with renew_at = 0.1, jitter >= lifetime / 10 and a draw
        /// close to 1, rounding to whole nanoseconds puts it exactly at notBefore.
        #[test]
        fn next_renewal_lies_inside_the_certificate(
            not_before_s in 0i64..4_000_000_000,
            not_before_ns in 0i64..1_000_000_000,
            lifetime in duration(1, 30 * DAY),
            renew_at in 0.1f64..=0.95,
            min_remaining in duration(0, 60 * DAY),
            jitter in duration(0, 60 * DAY),
            unit in 0.0f64..1.0,
        ) {
            let nb = OffsetDateTime::from_unix_timestamp_nanos(
                i128::from(not_before_s) * 1_000_000_000 + i128::from(not_before_ns),
            )
            .unwrap();
            let na = nb + lifetime;
            let p = Policy { renew_at, min_remaining, jitter, min_interval: Duration::from_secs(60) };
            let effective = p.effective_min_remaining(lifetime);
            prop_assert_eq!(effective, min_remaining.min(lifetime / 2));
            let point = p.renewal_point(nb, na);
            let next = p.next_renewal(nb, na, unit);
            prop_assert!(point <= na - effective, "{point} after {na} - {effective:?}");
            prop_assert!(next <= point);
            prop_assert!(point - next <= jitter.min(lifetime / 10));
            prop_assert!(next >= nb, "{next} before notBefore {nb}");
            prop_assert!(next < na, "{next} not before notAfter {na}");
            prop_assert!(p.is_due(nb, na, point));
            prop_assert!(!p.is_due(nb, na, point - Duration::from_nanos(1)));
        }
    }

    #[test]
    fn renewal_can_fall_exactly_on_the_min_remaining_bound() {
        // The equality case the property above allows: min_remaining binds, no jitter drawn.
        let nb = datetime!(2026-01-01 00:00 UTC);
        let na = nb + Duration::from_secs(3600);
        let p = Policy {
            renew_at: 0.95,
            ..policy()
        };
        let bound = na - p.effective_min_remaining(Duration::from_secs(3600));
        assert_eq!(p.next_renewal(nb, na, 0.0), bound);
        assert!(p.next_renewal(nb, na, 0.5) < bound);
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
pub enum FailureClass {
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
    pub fn delay(&self, failures: u32, failure: FailureClass, unit: f64) -> Duration {
        match failure {
            FailureClass::Permanent => self.cap,
            FailureClass::Transient { retry_after } => {
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
    const T: FailureClass = FailureClass::Transient { retry_after: None };

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
        let ra = |s| FailureClass::Transient {
            retry_after: Some(Duration::from_secs(s)),
        };
        assert_eq!(B.delay(1, ra(30), 0.0), Duration::from_secs(30));
        assert_eq!(B.delay(1, ra(86400), 0.0), Duration::from_secs(300));
    }

    use proptest::prelude::*;

    fn failure() -> impl Strategy<Value = FailureClass> {
        prop_oneof![
            Just(FailureClass::Permanent),
            proptest::option::of(any::<u64>().prop_map(Duration::from_secs))
                .prop_map(|retry_after| FailureClass::Transient { retry_after }),
            // Retry-After as an HTTP date parses to any nanosecond count.
            any::<u64>().prop_map(|n| FailureClass::Transient {
                retry_after: Some(Duration::from_nanos(n))
            }),
        ]
    }

    proptest! {
        /// Within what the config accepts (retry.initial and retry.max in 1 s..=1 h, max >=
        /// initial): every delay, whatever the failure count, the kind of failure and the
        /// server's Retry-After (any u64 seconds), lies in [floor, cap].
        #[test]
        fn delay_is_between_floor_and_cap(
            initial_ms in 1_000u64..=3_600_000,
            cap_extra_ms in 0u64..=3_600_000,
            failures in any::<u32>(),
            failure in failure(),
            unit in 0.0f64..1.0,
        ) {
            let initial = Duration::from_millis(initial_ms);
            let cap = (initial + Duration::from_millis(cap_extra_ms))
                .min(Duration::from_secs(3600));
            let b = Backoff { initial, cap };
            let d = b.delay(failures, failure, unit);
            prop_assert!(d <= cap, "{d:?} > cap {cap:?}");
            prop_assert!(d >= b.floor(), "{d:?} < floor {:?}", b.floor());
            if failure == FailureClass::Permanent {
                prop_assert_eq!(d, cap);
            }
        }

        /// Outside those ranges (a zero or sub-second initial, a cap below initial), nothing
        /// panics; a transient delay stays in [floor, max(cap, floor)] and a permanent one is
        /// the cap.
        #[test]
        fn delay_is_bounded_for_any_backoff(
            initial in (0u64..=10 * 86_400_000_000_000).prop_map(Duration::from_nanos),
            cap in (0u64..=10 * 86_400_000_000_000).prop_map(Duration::from_nanos),
            failures in any::<u32>(),
            failure in failure(),
            unit in 0.0f64..1.0,
        ) {
            let b = Backoff { initial, cap };
            let d = b.delay(failures, failure, unit);
            match failure {
                FailureClass::Permanent => prop_assert_eq!(d, cap),
                FailureClass::Transient { .. } => {
                    prop_assert!(d >= b.floor());
                    prop_assert!(d <= cap.max(b.floor()));
                }
            }
        }
    }

    #[test]
    fn permanent_failures_wait_the_cap() {
        assert_eq!(
            B.delay(1, FailureClass::Permanent, 0.0),
            Duration::from_secs(300)
        );
    }
}
