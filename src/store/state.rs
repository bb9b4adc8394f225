//! `state.json`: what happened last, kept beside the certificate set so that `status` (another
//! process) can report it. Rewritten atomically after every attempt; a missing or unreadable
//! file reads as "no history", never as an error that blocks renewal.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::files::{write_atomic, WriteError};

pub const STATE_FILE: &str = "state.json";

/// Longest error message kept, in characters.
const ERROR_LIMIT: usize = 2000;

/// Free text read back (errors, hook output) is cut to this many characters.
const TEXT_LIMIT: usize = 4096;
/// At most this many hook results are read back (one per configured hook is what we write).
const HOOK_RESULTS_KEPT: usize = 64;

/// A certificate serial as eit-certd writes it: upper-case hex (RFC 5280 allows 20 octets;
/// up to 64 are accepted, for CAs that overstep it).
pub fn is_serial(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'A'..=b'F').contains(&b))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Error,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Attempt {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub outcome: Outcome,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Serial of the certificate installed by this attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serial: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookResult {
    pub name: String,
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    pub ok: bool,
    /// Exit code, or `None` when killed (timeout) or not started.
    pub exit_code: Option<i32>,
    pub duration_ms: u64,
    /// Serial the hook ran for; a retried hook runs again for the same serial.
    pub serial: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Counters {
    pub ok: u64,
    pub error: u64,
}

/// Hooks that still have to run for an installed set: recorded before the first hook starts,
/// so that hooks cut short by a stop, a crash or a failure (with `retry = true`) run again
/// after a restart; the consumers would otherwise never pick up the new set.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HooksOwed {
    /// Serial of the set they are owed for; they are dropped once another set is installed.
    pub serial: String,
    /// The serial it replaced, for `EIT_PREVIOUS_SERIAL`.
    #[serde(default)]
    pub previous_serial: Option<String>,
    /// Names of the `[[hooks]]` that have not finished (or failed with `retry = true`).
    pub names: Vec<String>,
}

/// The name under which the `[output.swanctl]` links are owed when making them failed after
/// `current` moved: they are retried with the hooks, without a new certificate. Not a valid
/// hook name (it holds a space and brackets), so no `[[hooks]]` entry can take it.
pub const SWANCTL_LINKS: &str = "[output.swanctl] links";

/// Adds the swanctl links to what is owed for the set with `serial`.
pub fn owe_links(owed: &mut Option<HooksOwed>, serial: &str) {
    let entry = owed.get_or_insert_with(|| HooksOwed {
        serial: serial.to_string(),
        previous_serial: None,
        names: Vec::new(),
    });
    if !entry.names.iter().any(|n| n == SWANCTL_LINKS) {
        entry.names.insert(0, SWANCTL_LINKS.to_string());
    }
}

impl HooksOwed {
    /// Every one of `hooks`, owed for the set with `serial`; `None` when there are no hooks.
    pub fn all(
        serial: &str,
        previous_serial: Option<String>,
        hooks: &[crate::config::HookConfig],
    ) -> Option<HooksOwed> {
        (!hooks.is_empty()).then(|| HooksOwed {
            serial: serial.to_string(),
            previous_serial,
            names: hooks.iter().map(|h| h.name.clone()).collect(),
        })
    }
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct State {
    pub last_attempt: Option<Attempt>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub last_success: Option<OffsetDateTime>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub next_renewal: Option<OffsetDateTime>,
    pub consecutive_failures: u32,
    pub renewals: Counters,
    pub hook_failures: u64,
    pub hooks: Vec<HookResult>,
    /// Serial of the last set this process family installed (tells a set installed by a run
    /// that died before recording it from one whose hooks already ran).
    pub installed_serial: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hooks_owed: Option<HooksOwed>,
}

impl State {
    pub fn path(dir: &Path) -> PathBuf {
        dir.join(STATE_FILE)
    }

    /// The saved state, or the default when there is none or it cannot be read.
    ///
    /// What comes back is input like the service's answers (anyone who could write the file
    /// chose it): serials that are not hex are dropped (they reach hooks as
    /// `EIT_PREVIOUS_SERIAL`), and free text is bounded and flattened to one line (it reaches
    /// `status`, logs and the terminal).
    pub fn load(dir: &Path) -> State {
        let state: State = crate::files::read(
            &State::path(dir),
            crate::files::Links::Refuse,
            crate::files::limit::STATE,
        )
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .unwrap_or_default();
        state.sanitized()
    }

    fn sanitized(mut self) -> State {
        let text = |s: &str| crate::text::bounded(s, TEXT_LIMIT);
        let serial = |s: Option<String>| s.filter(|s| is_serial(s));
        if let Some(a) = self.last_attempt.as_mut() {
            a.error = a.error.as_deref().map(text);
            a.serial = serial(a.serial.take());
        }
        self.installed_serial = serial(self.installed_serial.take());
        self.hooks.truncate(HOOK_RESULTS_KEPT);
        for h in &mut self.hooks {
            h.name = text(&h.name);
            h.detail = text(&h.detail);
            if !is_serial(&h.serial) {
                h.serial = String::new();
            }
        }
        self.hooks_owed = self.hooks_owed.take().and_then(|mut owed| {
            // Owed for a serial that cannot be ours: nothing to run.
            if !is_serial(&owed.serial) {
                return None;
            }
            owed.previous_serial = serial(owed.previous_serial.take());
            Some(owed)
        });
        self
    }

    pub fn save(&self, dir: &Path) -> Result<(), WriteError> {
        let mut json = serde_json::to_vec_pretty(self).expect("state serializes");
        json.push(b'\n');
        write_atomic(&State::path(dir), &json, 0o644)
    }

    pub fn record_success(&mut self, at: OffsetDateTime, serial: &str) {
        self.last_attempt = Some(Attempt {
            at,
            outcome: Outcome::Ok,
            error: None,
            serial: Some(serial.to_string()),
        });
        self.last_success = Some(at);
        self.installed_serial = Some(serial.to_string());
        self.consecutive_failures = 0;
        // Counters come back from state.json: a planted u64::MAX must not overflow.
        self.renewals.ok = self.renewals.ok.saturating_add(1);
    }

    /// A hook finished: it is no longer owed unless it failed and is to be retried.
    pub fn hook_done(&mut self, name: &str, owed_again: bool) {
        if let Some(owed) = &mut self.hooks_owed {
            if !owed_again {
                owed.names.retain(|n| n != name);
            }
            if owed.names.is_empty() {
                self.hooks_owed = None;
            }
        }
    }

    /// Keeps the latest result per hook name.
    pub fn record_hook(&mut self, result: HookResult) {
        if !result.ok {
            self.hook_failures = self.hook_failures.saturating_add(1);
        }
        self.hooks.retain(|h| h.name != result.name);
        self.hooks.push(result);
    }

    pub fn record_failure(&mut self, at: OffsetDateTime, error: &str) {
        self.last_attempt = Some(Attempt {
            at,
            outcome: Outcome::Error,
            // The message can quote the service; keep state.json (and `status`) small.
            error: Some(crate::text::bounded(error, ERROR_LIMIT)),
            serial: None,
        });
        self.consecutive_failures = self.consecutive_failures.saturating_add(1);
        self.renewals.error = self.renewals.error.saturating_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_counts() {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = State::load(tmp.path());
        assert_eq!(s, State::default());
        let t = OffsetDateTime::from_unix_timestamp(1_800_000_000).unwrap();
        s.record_failure(t, "HTTP 503");
        s.record_failure(t, "HTTP 503");
        assert_eq!(s.consecutive_failures, 2);
        // From a planted state.json: saturates, no overflow.
        let mut planted = State {
            consecutive_failures: u32::MAX,
            hook_failures: u64::MAX,
            renewals: Counters {
                ok: u64::MAX,
                error: u64::MAX,
            },
            ..State::default()
        };
        planted.record_failure(OffsetDateTime::now_utc(), "x");
        assert_eq!(planted.consecutive_failures, u32::MAX);
        planted.record_success(OffsetDateTime::now_utc(), "AB");
        assert_eq!(planted.renewals.ok, u64::MAX);
        s.record_success(t, "ABCD");
        s.save(tmp.path()).unwrap();
        let back = State::load(tmp.path());
        assert_eq!(back.consecutive_failures, 0);
        assert_eq!(back.renewals, Counters { ok: 1, error: 2 });
        assert_eq!(back.last_attempt.unwrap().serial.as_deref(), Some("ABCD"));
        let text = std::fs::read_to_string(State::path(tmp.path())).unwrap();
        assert!(text.contains("\"at\": \"2027-01-15T08:00:00Z\""), "{text}");
    }

    #[test]
    fn corrupt_state_reads_as_empty() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(State::path(tmp.path()), "{not json").unwrap();
        assert_eq!(State::load(tmp.path()), State::default());
    }
}
