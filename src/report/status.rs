//! What `eit-certd status` reports: the installed set, its health, the last attempt and the
//! next renewal, for a person (text with a lifetime bar) or a machine (`--json`).
//!
//! Building the report is pure (facts and "now" in); only `gather` touches the disk.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;
use time::OffsetDateTime;

use crate::pki::ca_expiry::CaExpiry;
use crate::pki::TrustAnchors;
use crate::renew::schedule::Policy;
use crate::store::state::State;
use crate::store::{self, CurrentSet, KeyCheck, Store};
use crate::text::rfc3339;

/// Health, ordered from good to bad; the exit code follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Health {
    Valid,
    Due,
    /// A usable set, but something that keeps it in use or fresh is wrong: a hook or a
    /// consumer failed for the installed set, hooks are owed, the config file on disk does not
    /// load. `Report::degraded` says what. (Whether a daemon runs is `Report::daemon`.)
    Degraded,
    Expired,
    Missing,
    Broken,
}

impl Health {
    /// 0 valid, 1 due (renewal pending) or degraded, 3 no usable certificate.
    pub fn exit_code(self) -> u8 {
        match self {
            Health::Valid => 0,
            Health::Due | Health::Degraded => 1,
            Health::Expired | Health::Missing | Health::Broken => 3,
        }
    }

    /// The monitoring-plugin convention (Nagios, Icinga, Sensu, check_mk): 0 OK, 1 WARNING,
    /// 2 CRITICAL (3 UNKNOWN is for when status cannot tell).
    pub fn plugin_exit_code(self) -> u8 {
        match self {
            Health::Valid => 0,
            Health::Due | Health::Degraded => 1,
            Health::Expired | Health::Missing | Health::Broken => 2,
        }
    }
}

impl Report {
    /// [`Health::plugin_exit_code`], and WARNING at least when no daemon holds the lock: a
    /// valid certificate that nothing renews is an alert an hour early, not an OK.
    pub fn plugin_exit_code(&self) -> u8 {
        let health = self.health.plugin_exit_code();
        match self.daemon {
            Some(crate::store::lock::Holder::Free | crate::store::lock::Holder::NoLockFile) => {
                health.max(1)
            }
            _ => health,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Installed {
    pub generation: String,
    pub dir: PathBuf,
    pub subject: String,
    pub issuer: String,
    pub serial: String,
    pub fingerprint_sha256: String,
    #[serde(with = "time::serde::rfc3339")]
    pub not_before: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub not_after: OffsetDateTime,
    pub lifetime_seconds: u64,
    pub remaining_seconds: u64,
    /// `null` when the key could not be read (see `key_unchecked`): neither sound nor broken.
    pub key_matches: Option<bool>,
    /// Why the key was not checked against the certificate (no permission to read it).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_unchecked: Option<String>,
    pub files: Files,
}

#[derive(Debug, Clone, Serialize)]
pub struct Files {
    pub key: PathBuf,
    pub cert: PathBuf,
    pub chain: PathBuf,
    pub fullchain: PathBuf,
    pub combined: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub health: Health,
    pub output_dir: PathBuf,
    pub installed: Option<Installed>,
    /// Why the set is unusable, for `Broken`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    #[serde(with = "time::serde::rfc3339::option")]
    pub renewal_due_at: Option<OffsetDateTime>,
    /// When `certificate.min_interval` holds the next renewal back past `renewal_due_at`
    /// (the certificate is due sooner after the last renewal than renewals may follow).
    #[serde(
        with = "time::serde::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub held_back_until: Option<OffsetDateTime>,
    /// `certificate.min_interval`, for the explanation.
    #[serde(skip)]
    pub min_interval: Duration,
    pub state: State,
    /// The `[output.swanctl]` paths, when configured (filled in by the caller).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub swanctl: Option<Vec<crate::integrations::swanctl::PathStatus>>,
    /// The CAs above the installed leaf (see [`Report::set_ca`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<CaStatus>,
    /// Whether the next key and CSR are ready on disk (filled in by the caller).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub spare: Option<crate::store::spare::SpareState>,
    /// The consumers the configured hooks reload: whether their users can read the set,
    /// and what they hold (filled in by the caller).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub consumers: Vec<crate::report::consumers::Consumer>,
    /// Who holds the output directory's lock: a running daemon, or nobody (filled in by the
    /// caller).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon: Option<crate::store::lock::Holder>,
    /// Why the health is `degraded`, one sentence each (see [`Report::assess`]).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub degraded: Vec<String>,
}

/// The CAs above the installed leaf: when they expire, and a warning for each that does so
/// within [`crate::pki::ca_expiry::WARN_BEFORE`].
#[derive(Debug, Clone, Serialize)]
pub struct CaStatus {
    /// The intermediate and the anchor, as far as known.
    #[serde(flatten)]
    pub expiry: CaExpiry,
    /// One sentence per CA that expires within 270 days.
    pub warnings: Vec<String>,
    /// Why the configured trust anchors could not be read, if they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub anchor_problem: Option<String>,
}

impl Report {
    /// Decides `degraded` from what the caller filled in: a usable set whose renewal or use
    /// is in doubt. `config_problem`: the config file on disk does not load (the report was
    /// made with the defaults).
    pub fn assess(&mut self, config_problem: Option<&str>) {
        let mut why = Vec::new();
        if let Some(problem) = config_problem {
            why.push(format!(
                "the config file does not load ({problem}); a running daemon keeps its \
                 configuration, but the next start fails"
            ));
        }
        if let Some(serial) = self.installed.as_ref().map(|i| i.serial.clone()) {
            for h in self
                .state
                .hooks
                .iter()
                .filter(|h| h.serial == serial && !h.ok)
            {
                why.push(format!(
                    "hook {} failed for the installed set: {}",
                    h.name, h.detail
                ));
            }
            if let Some(owed) = self
                .state
                .hooks_owed
                .as_ref()
                .filter(|o| o.serial == serial)
            {
                why.push(format!(
                    "still owed for the installed set: {}",
                    owed.names.join(", ")
                ));
            }
        }
        for c in &self.consumers {
            why.extend(c.problems());
        }
        if matches!(self.health, Health::Valid | Health::Due) && !why.is_empty() {
            self.health = Health::Degraded;
        }
        self.degraded = why;
    }

    /// Fills in [`Report::ca`] from the installed chain and the configured trust anchors.
    pub fn set_ca(
        &mut self,
        store: &Store,
        certificate: &crate::config::CertificateConfig,
        now: OffsetDateTime,
    ) {
        let (anchors, anchor_problem) = match TrustAnchors::load_at(certificate, now) {
            Ok(a) => (a, None),
            Err(e) => (None, Some(e.to_string())),
        };
        let expiry = store.ca_expiry(anchors.as_ref());
        if expiry == CaExpiry::default() && anchor_problem.is_none() {
            return;
        }
        self.ca = Some(CaStatus {
            warnings: expiry.warnings(now),
            expiry,
            anchor_problem,
        });
    }
}

/// Reads the store and the state file.
pub fn gather(store: &Store, policy: &Policy, now: OffsetDateTime) -> Report {
    let state = State::load(store.dir());
    let current = store.read_current().map_err(|e| e.to_string());
    build(store, current, state, policy, now)
}

pub fn build(
    store: &Store,
    current: Result<Option<CurrentSet>, String>,
    state: State,
    policy: &Policy,
    now: OffsetDateTime,
) -> Report {
    let link = store.current_link();
    let files = Files {
        key: link.join(store::KEY_FILE),
        cert: link.join(store::CERT_FILE),
        chain: link.join(store::CHAIN_FILE),
        fullchain: link.join(store::FULLCHAIN_FILE),
        combined: link.join(store::COMBINED_FILE),
    };
    let mut report = Report {
        health: Health::Missing,
        output_dir: store.dir().to_path_buf(),
        installed: None,
        problem: None,
        renewal_due_at: None,
        held_back_until: None,
        min_interval: policy.min_interval,
        state,
        swanctl: None,
        ca: None,
        spare: None,
        consumers: Vec::new(),
        daemon: None,
        degraded: Vec::new(),
    };
    let set = match current {
        Ok(Some(set)) => set,
        Ok(None) => return report,
        Err(problem) => {
            report.health = Health::Broken;
            report.problem = Some(problem);
            return report;
        }
    };
    let leaf = &set.leaf;
    let due = policy.renewal_point(leaf.not_before, leaf.not_after);
    report.renewal_due_at = Some(due);
    let last_success = Policy::trusted_last_success(report.state.last_success, now);
    if let (at, true) = policy.rate_limited(due, last_success) {
        report.held_back_until = Some(at);
    }
    report.health = if set.key == KeyCheck::Mismatch {
        report.problem = Some(format!(
            "{} does not hold the key of {}; run `eit-certd renew --force`",
            files.key.display(),
            files.cert.display()
        ));
        Health::Broken
    } else if now >= leaf.not_after {
        Health::Expired
    } else if policy.is_due(leaf.not_before, leaf.not_after, now) {
        Health::Due
    } else {
        Health::Valid
    };
    report.installed = Some(Installed {
        generation: set.id.clone(),
        dir: set.dir.clone(),
        subject: leaf.subject.clone(),
        issuer: leaf.issuer.clone(),
        serial: leaf.serial_hex.clone(),
        fingerprint_sha256: leaf.fingerprint_sha256.clone(),
        not_before: leaf.not_before,
        not_after: leaf.not_after,
        lifetime_seconds: leaf.lifetime().as_secs(),
        remaining_seconds: leaf.remaining(now).as_secs(),
        key_matches: match set.key {
            KeyCheck::Matches => Some(true),
            KeyCheck::Mismatch => Some(false),
            KeyCheck::Unreadable(_) => None,
        },
        key_unchecked: match &set.key {
            KeyCheck::Unreadable(why) => Some(why.clone()),
            _ => None,
        },
        files,
    });
    report
}

/// A 20-cell bar of the remaining share of the lifetime.
pub fn bar(remaining: Duration, lifetime: Duration) -> String {
    const CELLS: usize = 20;
    let share = if lifetime.is_zero() {
        0.0
    } else {
        (remaining.as_secs_f64() / lifetime.as_secs_f64()).clamp(0.0, 1.0)
    };
    let full = (share * CELLS as f64).round() as usize;
    format!(
        "[{}{}] {:>3.0}%",
        "#".repeat(full),
        "-".repeat(CELLS - full),
        share * 100.0
    )
}

fn human(d: Duration) -> String {
    // Whole seconds: sub-second precision is noise in a status line.
    humantime::format_duration(Duration::from_secs(d.as_secs())).to_string()
}

fn relative(t: OffsetDateTime, now: OffsetDateTime) -> String {
    if t >= now {
        format!("in {}", human((t - now).try_into().unwrap_or_default()))
    } else {
        format!("{} ago", human((now - t).try_into().unwrap_or_default()))
    }
}

impl Report {
    pub fn render_text(&self, now: OffsetDateTime) -> String {
        use std::fmt::Write;
        let mut out = String::new();
        let health = match self.health {
            Health::Valid => "valid",
            Health::Due => "valid, renewal due",
            Health::Degraded => "DEGRADED (valid, but see below)",
            Health::Expired => "EXPIRED",
            Health::Missing => "no certificate installed",
            Health::Broken => "BROKEN",
        };
        let _ = writeln!(out, "status        {health}");
        let _ = writeln!(out, "output dir    {}", self.output_dir.display());
        for why in &self.degraded {
            let _ = writeln!(out, "degraded      {why}");
        }
        match self.daemon {
            Some(crate::store::lock::Holder::Held { pid }) => {
                let _ = writeln!(out, "daemon        running (pid {pid} holds the lock)");
            }
            Some(_) => {
                let _ = writeln!(
                    out,
                    "daemon        NOT running: nothing renews the certificate"
                );
            }
            None => {}
        }
        if let Some(problem) = &self.problem {
            let _ = writeln!(out, "problem       {problem}");
        }
        if let Some(i) = &self.installed {
            let remaining = Duration::from_secs(i.remaining_seconds);
            let lifetime = Duration::from_secs(i.lifetime_seconds);
            let _ = writeln!(out, "subject       {}", i.subject);
            let _ = writeln!(out, "issuer        {}", i.issuer);
            let _ = writeln!(out, "serial        {}", i.serial);
            let _ = writeln!(out, "sha256        {}", i.fingerprint_sha256);
            let _ = writeln!(
                out,
                "valid         {} .. {} ({})",
                rfc3339(i.not_before),
                rfc3339(i.not_after),
                human(lifetime)
            );
            let _ = writeln!(
                out,
                "remaining     {} {}",
                bar(remaining, lifetime),
                human(remaining)
            );
            let _ = writeln!(out, "generation    {}", i.generation);
            let _ = writeln!(out, "key           {}", i.files.key.display());
            if let Some(why) = &i.key_unchecked {
                // What we could not check, rather than a false alarm: the key is 0600 root.
                let _ = writeln!(
                    out,
                    "key check     NOT CHECKED: {why}; the certificate was checked, the key was \
                     not (run `sudo eit-certd status` to check that the key matches)"
                );
            }
            let _ = writeln!(out, "certificate   {}", i.files.cert.display());
            let _ = writeln!(out, "chain         {}", i.files.chain.display());
            let _ = writeln!(out, "fullchain     {}", i.files.fullchain.display());
            let _ = writeln!(out, "combined      {}", i.files.combined.display());
        }
        if let Some(ca) = &self.ca {
            for (role, info) in ca.expiry.roles() {
                if let Some(info) = info {
                    let _ = writeln!(
                        out,
                        "{:<14}{} until {} ({})",
                        role,
                        info.subject,
                        rfc3339(info.not_after),
                        relative(info.not_after, now)
                    );
                }
            }
            for warning in &ca.warnings {
                let _ = writeln!(out, "WARNING       {warning}");
            }
            if let Some(problem) = &ca.anchor_problem {
                let _ = writeln!(out, "anchors       {problem}");
            }
        }
        let next = self.state.next_renewal.or(self.renewal_due_at);
        if let Some(next) = next {
            let _ = writeln!(
                out,
                "next renewal  {} ({})",
                rfc3339(next),
                relative(next, now)
            );
        }
        if let (Some(until), Some(due)) = (self.held_back_until, self.renewal_due_at) {
            let _ = writeln!(
                out,
                "held back     the certificate is due at {} but renewals are at least \
                 certificate.min_interval ({}) apart, so the next waits until {}: the service \
                 issues certificates that are due (or expire) sooner than that",
                rfc3339(due),
                human(self.min_interval),
                rfc3339(until)
            );
        }
        match &self.state.last_attempt {
            Some(a) => {
                let what = match &a.error {
                    Some(e) => format!("failed: {e}"),
                    None => format!("ok, serial {}", a.serial.as_deref().unwrap_or("?")),
                };
                let _ = writeln!(
                    out,
                    "last attempt  {} ({}) {what}",
                    rfc3339(a.at),
                    relative(a.at, now)
                );
            }
            None => {
                let _ = writeln!(out, "last attempt  none recorded");
            }
        }
        if self.state.consecutive_failures > 0 {
            let _ = writeln!(
                out,
                "failures      {} in a row",
                self.state.consecutive_failures
            );
        }
        for h in &self.state.hooks {
            let result = if h.ok {
                "ok".to_string()
            } else {
                format!("FAILED {}", h.detail)
            };
            let _ = writeln!(
                out,
                "hook          {} at {}: {result}",
                h.name,
                rfc3339(h.at)
            );
        }
        for p in self.swanctl.iter().flatten() {
            let current = if p.resolves_to_current {
                "current set"
            } else {
                "NOT the current set"
            };
            let _ = writeln!(
                out,
                "swanctl       {} {} ({current}): {} {}",
                p.role.key(),
                p.path.display(),
                p.state,
                p.detail
            );
        }
        for c in &self.consumers {
            let name = format!("{} (hook {})", c.kind.name(), c.hook);
            if c.processes.is_empty() && c.holds_current.is_none() {
                let _ = writeln!(out, "consumer      {name}: not running");
            }
            for p in &c.processes {
                let read = match (&p.can_read, &p.problem) {
                    (_, Some(problem)) => format!(
                        "CANNOT read the set: {problem}; fix: {}",
                        p.fix.as_deref().unwrap_or("")
                    ),
                    (Some(true), None) => "can read the set".to_string(),
                    (_, None) => "running".to_string(),
                };
                let _ = writeln!(
                    out,
                    "consumer      {name}: pid {} uid {} {read}",
                    p.pid, p.uid
                );
            }
            match (c.holds_current, &c.serial_unknown) {
                (Some(true), _) => {
                    let _ = writeln!(out, "consumer      {name}: holds the installed certificate");
                }
                (Some(false), _) => {
                    let _ = writeln!(
                        out,
                        "consumer      {name}: does NOT hold the installed certificate"
                    );
                }
                (None, Some(why)) => {
                    let _ = writeln!(out, "consumer      {name}: serial held unknown: {why}");
                }
                (None, None) => {}
            }
        }
        if let Some(spare) = self.spare {
            let text = match spare {
                crate::store::spare::SpareState::Ready => {
                    "ready (the next renewal needs no key generation)"
                }
                crate::store::spare::SpareState::Absent => {
                    "none yet (being prepared, or spare_key just enabled)"
                }
                crate::store::spare::SpareState::Disabled => {
                    "off (certificate.spare_key = false or reuse_key)"
                }
            };
            let _ = writeln!(out, "spare key     {text}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::validate::LeafInfo;
    use time::macros::datetime;

    fn policy() -> Policy {
        Policy {
            renew_at: 0.66,
            min_remaining: Duration::from_secs(600),
            jitter: Duration::ZERO,
            min_interval: Duration::from_secs(60),
        }
    }

    fn set(key_matches: bool) -> CurrentSet {
        with_key(if key_matches {
            KeyCheck::Matches
        } else {
            KeyCheck::Mismatch
        })
    }

    fn with_key(key: KeyCheck) -> CurrentSet {
        CurrentSet {
            dir: PathBuf::from("/o/generations/g1"),
            id: "g1".into(),
            leaf: LeafInfo {
                not_before: datetime!(2026-01-01 00:00 UTC),
                not_after: datetime!(2026-01-01 01:00 UTC),
                serial_hex: "AB".into(),
                fingerprint_sha256: "ff".into(),
                subject: "C=US, CN=i".into(),
                issuer: "CN=int".into(),
                public_key_der: vec![],
            },
            key,
        }
    }

    fn health(current: Result<Option<CurrentSet>, String>, now: OffsetDateTime) -> Health {
        let store = Store::new(std::path::Path::new("/o"), 3, None).unwrap();
        build(&store, current, State::default(), &policy(), now).health
    }

    #[test]
    fn health_follows_time_key_and_presence() {
        let early = datetime!(2026-01-01 00:10 UTC);
        let late = datetime!(2026-01-01 00:50 UTC);
        let after = datetime!(2026-01-01 01:00 UTC);
        assert_eq!(health(Ok(Some(set(true))), early), Health::Valid);
        assert_eq!(health(Ok(Some(set(true))), late), Health::Due);
        assert_eq!(health(Ok(Some(set(true))), after), Health::Expired);
        assert_eq!(health(Ok(Some(set(false))), early), Health::Broken);
        // An unreadable key (status without root) is not evidence of a broken set.
        let unreadable = || Ok(Some(with_key(KeyCheck::Unreadable("denied".into()))));
        assert_eq!(health(unreadable(), early), Health::Valid);
        assert_eq!(health(unreadable(), after), Health::Expired);
        assert_eq!(health(Ok(None), early), Health::Missing);
        assert_eq!(health(Err("x".into()), early), Health::Broken);
        assert_eq!(Health::Valid.exit_code(), 0);
        assert_eq!(Health::Due.exit_code(), 1);
        assert_eq!(Health::Expired.exit_code(), 3);
    }

    #[test]
    fn text_shows_remaining_bar_and_paths() {
        let store = Store::new(std::path::Path::new("/o"), 3, None).unwrap();
        let now = datetime!(2026-01-01 00:30 UTC);
        let r = build(
            &store,
            Ok(Some(set(true))),
            State::default(),
            &policy(),
            now,
        );
        let text = r.render_text(now);
        assert!(text.contains("[##########----------]  50% 30m"), "{text}");
        assert!(text.contains("/o/current/key.pem"), "{text}");
        assert!(
            text.contains("next renewal  2026-01-01T00:39:36Z (in 9m 36s)"),
            "{text}"
        );
    }
}
