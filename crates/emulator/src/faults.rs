//! Fault injection: the [`Fault`] modes the emulator can misbehave in, and the switch that
//! holds the current mode and how many API calls it still applies to.
//!
//! # Which calls a mode applies to, and what uses up its count
//!
//! Modes come in two kinds (see [`Fault::scope`]):
//!
//! - **Status and transport modes** (`status-503`, `status-429`, `html-500`, `slow`, `reset`)
//!   hit *every* API call, token calls included, the way an overloaded or broken service
//!   would. Each call served under such a mode uses up one from its count.
//! - **Certificate modes** (`token-401` and everything listed after it) change only what
//!   `POST {family}/certificates` answers. Every other call (token, IAM token, instance)
//!   passes through untouched *and does not use up the count*, so `{"mode": "expired",
//!   "count": 1}` spoils exactly the next certificate, however many tokens a client fetches
//!   first.
//!
//! Control calls under `/emulator/v1/` never see a fault and never count.
//!
//! A count of `n` means "the next `n` calls this mode applies to"; after them the switch
//! returns to `ok` by itself. No count means "until changed".
//!
//! Adding a mode means adding a variant here (name, description, scope, `ALL`) and giving it
//! an effect: whole-answer modes act in `routes::fault_gate` (the single place API calls
//! consult the switch), certificate modes in the certificate handler via `misbehave`.

use std::fmt;
use std::str::FromStr;
use std::sync::Mutex;

/// How the emulator should (mis)behave on API calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Behave like the real service.
    Ok,
    /// Every call: 503 with an IBM error body and `Retry-After: 2`.
    Status503,
    /// Every call: 429 with an IBM error body and `Retry-After: 1`.
    Status429,
    /// Every call: 500 with an HTML page, as a misconfigured proxy would send.
    Html500,
    /// Every call: the answer comes only after `SLOW_DELAY` (120 s).
    Slow,
    /// Every call: the connection is closed halfway through the response body.
    Reset,
    /// Certificate calls: 401 `invalid_token`, as if the token had been revoked.
    Token401,
    /// Certificate calls: 400 `invalid_csr`, a refusal that retrying cannot fix.
    RefuseCsr,
    /// Certificate calls: a leaf whose notAfter is in the past.
    Expired,
    /// Certificate calls: a leaf whose notBefore is an hour ahead.
    NotYetValid,
    /// Certificate calls: a leaf signed by a key outside the chain.
    BadSignature,
    /// Certificate calls: a leaf for another public key than the CSR's.
    WrongKey,
    /// Certificate calls: a leaf valid for a quarter of what the JSON claims.
    ShortLived,
    /// Certificate calls: only the leaf.
    NoIntermediate,
    /// Certificate calls: a non-PEM string appended to `certificates`.
    ExtraGarbage,
    /// Certificate calls: PEM armour around bytes that are not DER, as the intermediate.
    GarbagePem,
    /// Certificate calls: 201 with the JSON body cut in half.
    Truncated,
    /// Certificate calls: 201 with a body of about 300 MB, streamed.
    Huge,
    /// Certificate calls: intermediate first, then the leaf.
    WrongOrder,
    /// Certificate calls: the documented sample response, verbatim (its chain expired in 2022).
    DocSample,
    /// Certificate calls: a sound set, but `expires_at`, `created_at` and `id` hold terminal
    /// escapes, a line break with a forged log line, and 200,000 characters.
    HostileText,
}

/// How long `slow` holds every answer back: longer than any sane client timeout.
pub(crate) const SLOW_DELAY: std::time::Duration = std::time::Duration::from_secs(120);

/// Which API calls a mode applies to (and so which calls use up its count).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Every API call, token calls included.
    EveryCall,
    /// `POST {family}/certificates` only.
    CertificateCall,
}

/// The kind of API call being served, as far as faults care.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ApiCall {
    /// `POST {family}/certificates`.
    Certificate,
    /// Anything else: token, IAM token, instance, unknown paths.
    Other,
}

impl Fault {
    /// Every mode, in the order they are listed to users.
    pub const ALL: &'static [Fault] = &[
        Fault::Ok,
        Fault::Status503,
        Fault::Status429,
        Fault::Html500,
        Fault::Slow,
        Fault::Reset,
        Fault::Token401,
        Fault::RefuseCsr,
        Fault::Expired,
        Fault::NotYetValid,
        Fault::BadSignature,
        Fault::WrongKey,
        Fault::ShortLived,
        Fault::NoIntermediate,
        Fault::ExtraGarbage,
        Fault::GarbagePem,
        Fault::Truncated,
        Fault::Huge,
        Fault::WrongOrder,
        Fault::DocSample,
        Fault::HostileText,
    ];

    /// The name used on the command line and in `PUT /emulator/v1/fault`.
    pub fn name(self) -> &'static str {
        match self {
            Fault::Ok => "ok",
            Fault::Status503 => "status-503",
            Fault::Status429 => "status-429",
            Fault::Html500 => "html-500",
            Fault::Slow => "slow",
            Fault::Reset => "reset",
            Fault::Token401 => "token-401",
            Fault::RefuseCsr => "refuse-csr",
            Fault::Expired => "expired",
            Fault::NotYetValid => "not-yet-valid",
            Fault::BadSignature => "bad-signature",
            Fault::WrongKey => "wrong-key",
            Fault::ShortLived => "short-lived",
            Fault::NoIntermediate => "no-intermediate",
            Fault::ExtraGarbage => "extra-garbage",
            Fault::GarbagePem => "garbage-pem",
            Fault::Truncated => "truncated",
            Fault::Huge => "huge",
            Fault::WrongOrder => "wrong-order",
            Fault::DocSample => "doc-sample",
            Fault::HostileText => "hostile-text",
        }
    }

    /// One line for help texts.
    pub fn description(self) -> &'static str {
        match self {
            Fault::Ok => "behave like the real metadata service",
            Fault::Status503 => "every call answers 503 (IBM error body, Retry-After: 2)",
            Fault::Status429 => "every call answers 429 rate limited (Retry-After: 1)",
            Fault::Html500 => "every call answers 500 with an HTML page instead of JSON",
            Fault::Slow => "every call answers only after 120 s, beyond any sane client timeout",
            Fault::Reset => "every call's connection is closed halfway through the response body",
            Fault::Token401 => {
                "certificate calls answer 401 invalid_token, as if the token had been revoked"
            }
            Fault::RefuseCsr => {
                "certificate calls answer 400 invalid_csr, a refusal no retry can fix"
            }
            Fault::Expired => "certificate calls return a leaf whose notAfter is in the past",
            Fault::NotYetValid => "certificate calls return a leaf whose notBefore is 1 h ahead",
            Fault::BadSignature => {
                "certificate calls return a leaf signed by a key outside the chain"
            }
            Fault::WrongKey => {
                "certificate calls return a leaf for another public key than the CSR's"
            }
            Fault::ShortLived => {
                "certificate calls return a leaf valid for 1/4 of what expires_at/expires_in claim"
            }
            Fault::NoIntermediate => "certificate calls return only the leaf",
            Fault::ExtraGarbage => "certificate calls append a non-PEM string to certificates",
            Fault::GarbagePem => {
                "certificate calls return PEM armour around non-DER bytes as the intermediate"
            }
            Fault::Truncated => "certificate calls answer 201 with the JSON body cut in half",
            Fault::Huge => "certificate calls answer 201 with a ~300 MB body, streamed",
            Fault::WrongOrder => "certificate calls return the intermediate first, then the leaf",
            Fault::DocSample => {
                "certificate calls return the documented sample response verbatim (expired)"
            }
            Fault::HostileText => {
                "certificate calls: a sound set; expires_at, id hold escapes, a forged line, 200 kB"
            }
        }
    }

    /// Which API calls this mode applies to; see the module documentation.
    pub fn scope(self) -> Scope {
        match self {
            Fault::Ok
            | Fault::Status503
            | Fault::Status429
            | Fault::Html500
            | Fault::Slow
            | Fault::Reset => Scope::EveryCall,
            Fault::Token401
            | Fault::RefuseCsr
            | Fault::Expired
            | Fault::NotYetValid
            | Fault::BadSignature
            | Fault::WrongKey
            | Fault::ShortLived
            | Fault::NoIntermediate
            | Fault::ExtraGarbage
            | Fault::GarbagePem
            | Fault::Truncated
            | Fault::Huge
            | Fault::WrongOrder
            | Fault::DocSample
            | Fault::HostileText => Scope::CertificateCall,
        }
    }

    fn applies_to(self, call: ApiCall) -> bool {
        match self.scope() {
            Scope::EveryCall => true,
            Scope::CertificateCall => call == ApiCall::Certificate,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A fault name that names no mode; its message lists the valid ones.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown fault mode {given:?}; valid modes: {}", valid_names())]
pub struct UnknownFault {
    pub given: String,
}

fn valid_names() -> String {
    Fault::ALL
        .iter()
        .map(|f| f.name())
        .collect::<Vec<_>>()
        .join(", ")
}

impl FromStr for Fault {
    type Err = UnknownFault;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim();
        Fault::ALL
            .iter()
            .copied()
            .find(|f| f.name().eq_ignore_ascii_case(wanted))
            .ok_or_else(|| UnknownFault {
                given: s.to_string(),
            })
    }
}

/// The current fault and how many more API calls it applies to (`None`: until changed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FaultState {
    pub mode: Fault,
    pub remaining: Option<u32>,
}

/// Shared, lockable fault state.
#[derive(Debug)]
pub(crate) struct FaultSwitch {
    state: Mutex<FaultState>,
}

impl FaultSwitch {
    pub fn new(mode: Fault) -> Self {
        FaultSwitch {
            state: Mutex::new(FaultState {
                mode,
                remaining: None,
            }),
        }
    }

    /// Sets the mode for the next `count` API calls (`None`: until changed again).
    pub fn set(&self, mode: Fault, count: Option<u32>) {
        // A fault for zero calls is no fault at all; normalising here keeps `take` simple.
        let state = match count {
            Some(0) => FaultState {
                mode: Fault::Ok,
                remaining: None,
            },
            _ => FaultState {
                mode,
                remaining: count,
            },
        };
        *self.lock() = state;
    }

    /// The current state, without consuming anything (for the control endpoint).
    pub fn peek(&self) -> FaultState {
        *self.lock()
    }

    /// The fault that applies to `call`, counted against a limited fault. A mode that does
    /// not apply to this kind of call (a certificate mode on a token call) leaves the call
    /// alone: it gets [`Fault::Ok`] and the count is not touched.
    pub fn take(&self, call: ApiCall) -> Fault {
        let mut state = self.lock();
        let mode = state.mode;
        if !mode.applies_to(call) {
            return Fault::Ok;
        }
        if let Some(left) = state.remaining {
            if left <= 1 {
                *state = FaultState {
                    mode: Fault::Ok,
                    remaining: None,
                };
            } else {
                state.remaining = Some(left - 1);
            }
        }
        mode
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FaultState> {
        // The guarded value is a plain Copy struct that is never left half-written,
        // so a panic elsewhere while holding the lock cannot have corrupted it.
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_unknown_lists_valid_modes() {
        for f in Fault::ALL {
            assert_eq!(f.to_string().parse::<Fault>(), Ok(*f));
            assert!(!f.description().is_empty());
        }
        assert_eq!(" OK ".parse::<Fault>(), Ok(Fault::Ok));
        let err = "explode".parse::<Fault>().unwrap_err();
        assert_eq!(" Status-503 ".parse::<Fault>(), Ok(Fault::Status503));
        let err = err.to_string();
        assert!(
            err.starts_with("unknown fault mode \"explode\"; valid modes: ok, status-503, "),
            "{err}"
        );
        assert!(err.ends_with(", doc-sample, hostile-text"), "{err}");
    }

    #[test]
    fn every_mode_is_listed_once_with_a_unique_name() {
        let mut names: Vec<&str> = Fault::ALL.iter().map(|f| f.name()).collect();
        assert_eq!(names.len(), 21);
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Fault::ALL.len());
        for f in Fault::ALL {
            assert!(!f.description().contains('\n'), "{f}: one line");
            assert!(f.description().len() <= 90, "{f}: keep it short");
        }
        // Status and transport modes first, then certificate modes: the help text relies on it.
        let first_certificate_mode = Fault::ALL
            .iter()
            .position(|f| f.scope() == Scope::CertificateCall)
            .unwrap();
        assert_eq!(Fault::ALL[first_certificate_mode], Fault::Token401);
        assert!(Fault::ALL[first_certificate_mode..]
            .iter()
            .all(|f| f.scope() == Scope::CertificateCall));
    }

    #[test]
    fn counted_fault_reverts_to_ok() {
        let switch = FaultSwitch::new(Fault::Ok);
        switch.set(Fault::Status503, Some(2));
        assert_eq!(
            switch.peek(),
            FaultState {
                mode: Fault::Status503,
                remaining: Some(2)
            }
        );
        assert_eq!(switch.take(ApiCall::Other), Fault::Status503);
        assert_eq!(switch.peek().remaining, Some(1));
        assert_eq!(switch.take(ApiCall::Certificate), Fault::Status503);
        assert_eq!(
            switch.peek(),
            FaultState {
                mode: Fault::Ok,
                remaining: None
            }
        );
        assert_eq!(switch.take(ApiCall::Other), Fault::Ok);
        switch.set(Fault::Status503, Some(0));
        assert_eq!(switch.peek().mode, Fault::Ok, "a count of 0 is no fault");
    }

    #[test]
    fn status_and_transport_modes_hit_and_count_every_call() {
        for mode in [
            Fault::Status503,
            Fault::Status429,
            Fault::Html500,
            Fault::Slow,
            Fault::Reset,
        ] {
            assert_eq!(mode.scope(), Scope::EveryCall);
            let switch = FaultSwitch::new(Fault::Ok);
            switch.set(mode, Some(3));
            // token, certificate, token: three calls, three counts.
            assert_eq!(switch.take(ApiCall::Other), mode);
            assert_eq!(switch.take(ApiCall::Certificate), mode);
            assert_eq!(switch.take(ApiCall::Other), mode);
            assert_eq!(switch.take(ApiCall::Certificate), Fault::Ok);
        }
    }

    #[test]
    fn certificate_modes_skip_other_calls_without_counting_them() {
        for &mode in Fault::ALL
            .iter()
            .filter(|f| f.scope() == Scope::CertificateCall)
        {
            let switch = FaultSwitch::new(Fault::Ok);
            switch.set(mode, Some(2));
            for _ in 0..5 {
                assert_eq!(switch.take(ApiCall::Other), Fault::Ok, "{mode}");
            }
            assert_eq!(
                switch.peek().remaining,
                Some(2),
                "{mode}: token calls are free"
            );
            assert_eq!(switch.take(ApiCall::Certificate), mode);
            assert_eq!(switch.take(ApiCall::Other), Fault::Ok);
            assert_eq!(switch.take(ApiCall::Certificate), mode);
            assert_eq!(
                switch.take(ApiCall::Certificate),
                Fault::Ok,
                "{mode}: used up"
            );
            assert_eq!(switch.peek().mode, Fault::Ok);
        }
    }

    #[test]
    fn uncounted_fault_stays_until_changed() {
        let switch = FaultSwitch::new(Fault::Expired);
        for _ in 0..10 {
            assert_eq!(switch.take(ApiCall::Other), Fault::Ok);
            assert_eq!(switch.take(ApiCall::Certificate), Fault::Expired);
        }
        assert_eq!(switch.peek().remaining, None);
        switch.set(Fault::Ok, None);
        assert_eq!(switch.take(ApiCall::Certificate), Fault::Ok);
    }
}
