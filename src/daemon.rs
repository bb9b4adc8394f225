//! The daemon behind `eit-certd run`: keeps the certificate set fresh for as long as it runs.
//!
//! One task, one loop. Between renewals it sleeps on a single wall-clock timer (a timerfd, see
//! [`crate::wallclock`]) set from the installed certificate's notAfter: it wakes once, on time
//! after a suspend, and early when the clock is set, so a due renewal is never late.
//! The loop also wakes for signals (TERM/INT stop, HUP reloads the config, USR1 renews now) and
//! for file-system events on the config file and the output directory (debounced): a changed
//! config is reloaded, a deleted or corrupted set is repaired.
//!
//! A failed attempt never touches the installed set; the next one follows a capped exponential
//! backoff with full jitter ([`crate::schedule::Backoff`]). Outcomes are reported as typed
//! [`Event`]s (after rustls-acme) to whoever listens: the demo, tests, the log.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::Watcher;
use time::OffsetDateTime;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::Config;
use crate::hooks::HookEnv;
use crate::lock::DirLock;
use crate::metadata::client::Client;
use crate::pki::validate::{rfc3339, LeafInfo};
use crate::renew::{KeySource, RenewError, Renewer};
use crate::schedule::{Backoff, Failure, Policy};
use crate::state::State;
use crate::store::Store;
use crate::systemd::Notifier;
use crate::wallclock::WallTimer;

/// The longest single sleep. The wall-clock timer already wakes on time after a suspend and
/// early when the clock is set; this only bounds the damage of anything unforeseen.
const MAX_SLEEP: Duration = Duration::from_secs(30 * 60);
/// File-system events are collected for this long before acting on them.
const DEBOUNCE: Duration = Duration::from_millis(300);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Lock(#[from] crate::lock::LockError),
    #[error(transparent)]
    Renew(#[from] RenewError),
    #[error(transparent)]
    Client(#[from] crate::metadata::client::ClientError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Swanctl(#[from] crate::swanctl::SwanctlError),
}

impl DaemonError {
    /// Configuration problems are usage errors (exit 2); the rest are failures (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            DaemonError::Config(_)
                | DaemonError::Client(_)
                | DaemonError::Renew(RenewError::Anchor { .. })
                | DaemonError::Store(crate::store::StoreError::NoSuchGroup(_))
                | DaemonError::Store(crate::store::StoreError::UnsafeDir { .. })
        ) || matches!(self, DaemonError::Swanctl(e) if e.is_config())
    }
}

/// What happened, for listeners (see [`Daemon::events`]).
#[derive(Debug, Clone)]
pub enum Event {
    Installed {
        serial: String,
        not_after: OffsetDateTime,
        generation: PathBuf,
        next_renewal: OffsetDateTime,
    },
    Failed {
        error: String,
        retry_in: Duration,
    },
    HookFinished(crate::state::HookResult),
}

pub struct Daemon {
    config_path: PathBuf,
    config: Config,
    renewer: Renewer,
    keys: KeySource,
    state: State,
    _lock: DirLock,
    next_attempt: OffsetDateTime,
    /// When the hooks still owed for the installed set (`state.hooks_owed`: failed with
    /// `retry = true`, or cut short by a stop or crash) run next.
    hook_retry_at: Option<OffsetDateTime>,
    /// Rounds of owed hooks run since the last install, for their backoff.
    hook_rounds: u32,
    events: Option<mpsc::UnboundedSender<Event>>,
    notifier: Notifier,
    ready_sent: bool,
    metrics_override: Option<PathBuf>,
    /// Installed in `start`, before the first log line: a signal sent as soon as the daemon
    /// says it is up must not meet the default action (which ends the process).
    signals: Option<Signals>,
}

struct Signals {
    term: tokio::signal::unix::Signal,
    int: tokio::signal::unix::Signal,
    hup: tokio::signal::unix::Signal,
    usr1: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> Result<Signals, DaemonError> {
        let on = |kind| signal(kind).map_err(DaemonError::Signals);
        Ok(Signals {
            term: on(SignalKind::terminate())?,
            int: on(SignalKind::interrupt())?,
            hup: on(SignalKind::hangup())?,
            usr1: on(SignalKind::user_defined1())?,
        })
    }
}

impl Daemon {
    /// Loads the config, takes the output directory's lock and looks at what is installed.
    pub async fn start(
        config_path: &Path,
        metrics_file: Option<PathBuf>,
    ) -> Result<Daemon, DaemonError> {
        let signals = Some(Signals::install()?);
        let config = Config::load(config_path)?;
        crate::check::warn_about_config_file(config_path);
        let store = Store::new(
            &config.output.dir,
            config.output.keep.0,
            config.output.group.as_deref(),
        )?;
        store.check_safe()?;
        let lock = DirLock::acquire(store.dir())?;
        for note in store.repair_modes() {
            tracing::warn!("{note}");
        }
        let removed = store.clean_litter()?;
        if removed > 0 {
            tracing::info!(removed, "removed leftovers of an interrupted install");
        }
        if let Some(layout) = crate::swanctl::Layout::from_config(&config) {
            layout.ensure(&store)?;
        }
        // `auto` probes at the first request, not here: the daemon must start (and keep its
        // installed set) while the service is unreachable.
        let client = Client::connect(&config.metadata)?;
        let renewer = Renewer::new(config.clone(), client, store)?;
        let state = State::load(renewer.store().dir());
        let mut daemon = Daemon {
            config_path: config_path.to_path_buf(),
            keys: KeySource::new(config.certificate.key_bits.0),
            config,
            renewer,
            state,
            _lock: lock,
            next_attempt: OffsetDateTime::now_utc(),
            hook_retry_at: None,
            hook_rounds: 0,
            events: None,
            notifier: Notifier::from_env(),
            ready_sent: false,
            metrics_override: metrics_file,
            signals,
        };
        daemon.reschedule_from_disk();
        daemon.owe_hooks_of_unrecorded_install();
        let ca = crate::ca_expiry::installed(daemon.renewer.store(), daemon.renewer.anchors());
        for warning in ca.warnings(OffsetDateTime::now_utc()) {
            tracing::warn!("{warning}");
        }
        // With time to spare, the first renewal's key is made now, at low priority; when a
        // renewal is due at once it generates its own key at normal priority instead.
        if daemon.next_attempt > OffsetDateTime::now_utc() + Duration::from_secs(60) {
            daemon.keys.prepare(&daemon.config, daemon.renewer.store());
        }
        Ok(daemon)
    }

    /// Subscribes to [`Event`]s.
    pub fn events(&mut self) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.events = Some(tx);
        rx
    }

    fn policy(&self) -> Policy {
        Policy::from(&self.config.certificate)
    }

    fn backoff(&self) -> Backoff {
        Backoff {
            initial: self.config.retry.initial.0,
            cap: self.config.retry.max.0,
        }
    }

    fn emit(&self, event: Event) {
        if let Some(tx) = &self.events {
            let _ = tx.send(event);
        }
    }

    /// Points the timer at the installed set's renewal time, or at now when there is no usable
    /// set (missing, unreadable, expired, key mismatch, or `current` is not ours).
    fn reschedule_from_disk(&mut self) {
        let now = OffsetDateTime::now_utc();
        match self.renewer.store().read_current() {
            Ok(Some(set)) if set.is_usable(now) => {
                let leaf = &set.leaf;
                let due = self
                    .policy()
                    .next_renewal(leaf.not_before, leaf.not_after, unit());
                self.next_attempt = self.policy().rate_limited(due, self.state.last_success).0;
                self.announce_valid(leaf);
                tracing::info!(
                    serial = %leaf.serial_hex,
                    not_after = %rfc3339(leaf.not_after),
                    next_renewal = %rfc3339(self.next_attempt),
                    "installed certificate is valid"
                );
            }
            Ok(Some(set)) => {
                let why = if set.key_matches() {
                    "has expired"
                } else {
                    "does not match its key"
                };
                // An expired set that we installed ourselves moments ago is what a service
                // issuing near-expired certificates leaves: the rate floor still applies.
                let (at, held) = if set.key_matches() {
                    self.policy().rate_limited(now, self.state.last_success)
                } else {
                    (now, false)
                };
                if held {
                    tracing::warn!(dir = %set.dir.display(), next_renewal = %rfc3339(at), "the installed certificate {why}; renewing once certificate.min_interval has passed since the last renewal");
                } else {
                    tracing::warn!(dir = %set.dir.display(), "the installed certificate {why}; renewing now");
                }
                self.next_attempt = at;
            }
            Ok(None) => {
                tracing::info!(dir = %self.renewer.store().dir().display(), "no certificate installed; renewing now");
                self.next_attempt = now;
            }
            Err(e) => {
                tracing::warn!("{e}; renewing now");
                self.next_attempt = now;
            }
        }
        self.state.next_renewal = Some(self.next_attempt);
    }

    /// Tells systemd a valid set is in place (READY once) and when it is renewed next.
    fn announce_valid(&mut self, leaf: &LeafInfo) {
        if !self.ready_sent {
            self.notifier.ready();
            self.ready_sent = true;
        }
        self.notifier.status(&format!(
            "serial {} valid until {}; next renewal {}",
            leaf.serial_hex,
            rfc3339(leaf.not_after),
            rfc3339(self.next_attempt)
        ));
    }

    /// Runs until `shutdown` resolves (or SIGTERM/SIGINT arrive).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
        let Signals {
            mut term,
            mut int,
            mut hup,
            mut usr1,
        } = match self.signals.take() {
            Some(signals) => signals,
            None => Signals::install()?,
        };
        let (fs_tx, mut fs_rx) = mpsc::channel::<notify::Result<notify::Event>>(64);
        let mut watcher = self.watch(fs_tx.clone());
        let watchdog = self.notifier.watchdog_interval();
        let mut next_watchdog = watchdog.map(|w| Instant::now() + w);
        let mut debounce: Option<Instant> = None;
        let wall = WallTimer::new();
        let (mut reload_pending, mut check_pending) = (false, false);
        tokio::pin!(shutdown);
        self.persist();

        loop {
            let now = OffsetDateTime::now_utc();
            if now >= self.next_attempt {
                // An attempt can take a while (key generation, timeouts, hooks): keep the
                // watchdog fed meanwhile, and stay responsive to a stop.
                let notifier = self.notifier.clone();
                let feed_watchdog = async move {
                    match watchdog {
                        Some(every) => loop {
                            tokio::time::sleep(every).await;
                            notifier.watchdog();
                        },
                        None => std::future::pending().await,
                    }
                };
                let attempt = self.attempt();
                tokio::select! {
                    () = attempt => {}
                    () = feed_watchdog => {}
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    () = &mut shutdown => break,
                }
                next_watchdog = watchdog.map(|w| Instant::now() + w);
                continue;
            }
            if self.hook_retry_at.is_some_and(|at| now >= at) {
                // Hooks can take their whole timeout: a stop must not wait for them (a hook
                // cut short stays owed and runs after the restart).
                tokio::select! {
                    () = self.retry_hooks() => {}
                    _ = term.recv() => break,
                    _ = int.recv() => break,
                    () = &mut shutdown => break,
                }
                continue;
            }

            let mut wake_at = self.next_attempt.min(now + MAX_SLEEP);
            if let Some(at) = self.hook_retry_at {
                wake_at = wake_at.min(at);
            }
            tokio::select! {
                () = wall.sleep_until(wake_at) => {}
                () = sleep_until_some(debounce) => {}
                () = sleep_until_some(next_watchdog) => {}
                _ = term.recv() => break,
                _ = int.recv() => break,
                () = &mut shutdown => break,
                _ = hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    if self.reload() {
                        watcher = self.watch(fs_tx.clone());
                    }
                }
                _ = usr1.recv() => {
                    tracing::info!("SIGUSR1: renewing now");
                    self.next_attempt = OffsetDateTime::now_utc();
                }
                Some(event) = fs_rx.recv() => {
                    let (config, store) = self.classify(event);
                    reload_pending |= config;
                    check_pending |= store;
                    if (config || store) && debounce.is_none() {
                        debounce = Some(Instant::now() + DEBOUNCE);
                    }
                }
            }
            if next_watchdog.is_some_and(|w| Instant::now() >= w) {
                self.notifier.watchdog();
                next_watchdog = watchdog.map(|w| Instant::now() + w);
            }
            if debounce.is_some_and(|d| Instant::now() >= d) {
                debounce = None;
                if std::mem::take(&mut reload_pending) {
                    tracing::info!(path = %self.config_path.display(), "the configuration file changed; reloading");
                    if self.reload() {
                        watcher = self.watch(fs_tx.clone());
                    }
                }
                if std::mem::take(&mut check_pending) {
                    self.check_installed();
                }
            }
        }
        drop(watcher);
        self.notifier.stopping();
        tracing::info!("shutting down");
        Ok(())
    }

    /// One renewal attempt with its bookkeeping; never fails the daemon.
    async fn attempt(&mut self) {
        let result = self.renewer.attempt(&mut self.keys, &mut self.state).await;
        let now = OffsetDateTime::now_utc();
        match result {
            Ok(outcome) => {
                let leaf = &outcome.renewed.verified.leaf;
                let due = self
                    .policy()
                    .next_renewal(leaf.not_before, leaf.not_after, unit());
                let (at, held) = self.policy().rate_limited(due, Some(now));
                if held {
                    tracing::warn!(
                        not_before = %rfc3339(leaf.not_before),
                        not_after = %rfc3339(leaf.not_after),
                        "the new certificate is due for renewal at once; waiting \
                         certificate.min_interval ({}) so as not to renew in a loop",
                        humantime::format_duration(self.policy().min_interval)
                    );
                }
                self.next_attempt = at;
                self.state.next_renewal = Some(self.next_attempt);
                tracing::info!(next_renewal = %rfc3339(self.next_attempt), "next renewal scheduled");
                self.emit(Event::Installed {
                    serial: leaf.serial_hex.clone(),
                    not_after: leaf.not_after,
                    generation: outcome.renewed.generation.dir.clone(),
                    next_renewal: self.next_attempt,
                });
                for result in &outcome.hooks {
                    self.emit(Event::HookFinished(result.clone()));
                }
                self.hook_rounds = 1;
                self.hook_retry_at = self.state.hooks_owed.as_ref().map(|_| {
                    now + self.backoff().delay(
                        self.hook_rounds,
                        Failure::Transient { retry_after: None },
                        unit(),
                    )
                });
                self.announce_valid(leaf);
                self.keys.prepare(&self.config, self.renewer.store());
            }
            Err(error) => {
                let failure = if error.is_permanent() {
                    Failure::Permanent
                } else {
                    Failure::Transient {
                        retry_after: error.retry_after(),
                    }
                };
                let delay = self
                    .backoff()
                    .delay(self.state.consecutive_failures, failure, unit());
                self.next_attempt = now + delay;
                self.state.next_renewal = Some(self.next_attempt);
                if failure == Failure::Permanent {
                    tracing::error!(
                        retry_in = %humantime::format_duration(delay),
                        "renewal failed and will keep failing until the configuration is fixed: {error}"
                    );
                } else {
                    tracing::warn!(
                        retry_in = %humantime::format_duration(delay),
                        failures = self.state.consecutive_failures,
                        "renewal failed: {error}"
                    );
                }
                self.notifier.status(&format!(
                    "renewal failed ({} in a row), retrying at {}: {error}",
                    self.state.consecutive_failures,
                    rfc3339(self.next_attempt)
                ));
                self.emit(Event::Failed {
                    error: error.to_string(),
                    retry_in: delay,
                });
            }
        }
        self.persist();
    }

    /// Runs the hooks still owed for the installed set (see `state::HooksOwed`).
    async fn retry_hooks(&mut self) {
        self.hook_retry_at = None;
        let Some(owed) = self.state.hooks_owed.clone() else {
            return;
        };
        let set = match self.renewer.store().read_current() {
            Ok(Some(set)) if set.leaf.serial_hex == owed.serial => set,
            // Another set is in place: its own install owes its own hooks.
            _ => {
                tracing::info!(serial = %owed.serial, "dropping hooks owed for a set that is no longer installed");
                self.state.hooks_owed = None;
                self.persist();
                return;
            }
        };
        let env = HookEnv::new(&set.dir, &set.leaf, owed.previous_serial.as_deref());
        for name in &owed.names {
            let Some(hook) = self.config.hooks.iter().find(|h| &h.name == name).cloned() else {
                self.state.hook_done(name, false);
                continue;
            };
            tracing::info!(hook = %hook.name, serial = %owed.serial, "running a hook owed for the installed set");
            let result = crate::hooks::run_one(&hook, &env).await;
            self.state.hook_done(&hook.name, !result.ok && hook.retry);
            self.state.record_hook(result.clone());
            self.emit(Event::HookFinished(result));
            // Recorded hook by hook: a stop during the next one must not rerun this one.
            self.persist();
        }
        if self.state.hooks_owed.is_some() {
            self.hook_rounds += 1;
            let delay = self.backoff().delay(
                self.hook_rounds,
                Failure::Transient { retry_after: None },
                unit(),
            );
            self.hook_retry_at = Some(OffsetDateTime::now_utc() + delay);
        }
        self.persist();
    }

    /// At start: hooks owed for the installed set run now. A set that no run recorded
    /// (installed by a run that died before it wrote state.json) owes all its hooks.
    fn owe_hooks_of_unrecorded_install(&mut self) {
        let now = OffsetDateTime::now_utc();
        let Ok(Some(set)) = self.renewer.store().read_current() else {
            return;
        };
        if !set.is_usable(now) || self.config.hooks.is_empty() {
            return;
        }
        let serial = &set.leaf.serial_hex;
        if self.state.installed_serial.as_deref() != Some(serial.as_str()) {
            tracing::info!(%serial, "the installed set was not recorded as installed by eit-certd; running its hooks to be sure its consumers use it");
            self.state.installed_serial = Some(serial.clone());
            self.state.hooks_owed = crate::state::HooksOwed::all(serial, None, &self.config.hooks);
        }
        if self.state.hooks_owed.is_some() {
            self.hook_retry_at = Some(now);
        }
    }

    /// After file-system activity in the output directory: if the set is gone or damaged,
    /// renew now. Our own writes end here too and find the set intact.
    fn check_installed(&mut self) {
        let now = OffsetDateTime::now_utc();
        match self.renewer.store().read_current() {
            Ok(Some(set)) if set.is_usable(now) => {}
            // Expired, yet ours and whole: the schedule (with its rate floor) has it in hand.
            Ok(Some(set)) if set.key_matches() => {}
            Ok(_) | Err(_) => {
                tracing::warn!(
                    "the installed certificate set was removed or damaged; repairing it now"
                );
                self.next_attempt = now;
            }
        }
    }

    /// Loads the config file again. A bad file is logged and the running config kept.
    /// Returns whether the new config was taken (the watcher must then be renewed).
    fn reload(&mut self) -> bool {
        let config = match Config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("keeping the running configuration: {e}");
                return false;
            }
        };
        if config == self.config {
            // Also the answer after a bad file was fixed back: say so, or the fix looks ignored.
            tracing::info!(path = %self.config_path.display(), "configuration reloaded (unchanged)");
            match self.renewer.reload_anchors() {
                Ok(true) => {
                    tracing::info!("trust anchors reloaded");
                    self.reschedule_from_disk();
                }
                Ok(false) => {}
                Err(e) => tracing::error!("keeping the running trust anchors: {e}"),
            }
            return false;
        }
        if config.output.dir != self.config.output.dir {
            tracing::error!(
                "keeping the running configuration: output.dir changed from {} to {}; restart eit-certd to move",
                self.config.output.dir.display(),
                config.output.dir.display()
            );
            return false;
        }
        let store = match Store::new(
            &config.output.dir,
            config.output.keep.0,
            config.output.group.as_deref(),
        ) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!("keeping the running configuration: {e}");
                return false;
            }
        };
        // `auto` probes again at the next request, under the same rule as at start.
        let client = match Client::connect(&config.metadata) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("keeping the running configuration: {e}");
                return false;
            }
        };
        match Renewer::new(config.clone(), client, store) {
            Ok(renewer) => {
                self.renewer = renewer;
                self.keys = KeySource::new(config.certificate.key_bits.0);
                self.config = config;
                tracing::info!("configuration reloaded");
                self.reschedule_from_disk();
                self.persist();
                true
            }
            Err(e) => {
                tracing::error!("keeping the running configuration: {e}");
                false
            }
        }
    }

    fn watch(
        &self,
        tx: mpsc::Sender<notify::Result<notify::Event>>,
    ) -> Option<notify::RecommendedWatcher> {
        let watcher = notify::recommended_watcher(move |event| {
            // A full channel already holds an event that will trigger the same check.
            let _ = tx.try_send(event);
        });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::warn!(
                    "cannot watch files ({e}); changes are noticed only on SIGHUP and at renewal"
                );
                return None;
            }
        };
        let config_dir = self
            .config_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let anchor_dirs = crate::pki::anchors::watch_dirs(&self.config.certificate);
        let anchor_dirs = anchor_dirs.iter().filter(|d| d.as_path() != config_dir);
        for (dir, mode) in [
            (config_dir, notify::RecursiveMode::NonRecursive),
            (self.renewer.store().dir(), notify::RecursiveMode::Recursive),
        ]
        .into_iter()
        .chain(anchor_dirs.map(|d| (d.as_path(), notify::RecursiveMode::NonRecursive)))
        {
            if let Err(e) = watcher.watch(dir, mode) {
                tracing::warn!(dir = %dir.display(), "cannot watch ({e})");
            }
        }
        Some(watcher)
    }

    /// (config changed, output directory changed)
    fn classify(&self, event: notify::Result<notify::Event>) -> (bool, bool) {
        let Ok(event) = event else {
            // Lost events (queue overflow): check everything.
            return (true, true);
        };
        if event.kind.is_access() {
            return (false, false);
        }
        let config_name = self.config_path.file_name();
        let out = self.renewer.store().dir();
        let mut result = (false, false);
        for path in &event.paths {
            if path.file_name() == config_name
                && path
                    .parent()
                    .map(|p| p.ends_with(self.config_path.parent().unwrap_or(Path::new(""))))
                    .unwrap_or(false)
            {
                result.0 = true;
            } else if crate::pki::anchors::is_anchor_path(&self.config.certificate, path) {
                // Reloading an unchanged config reloads the trust anchors.
                result.0 = true;
            } else if path.starts_with(out.join(crate::spare::SPARE_DIR)) {
                // The spare is written and removed by us, and is no part of the set.
            } else if path.starts_with(out) {
                // Our bookkeeping files change on every attempt and say nothing about the set.
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default();
                if name != crate::state::STATE_FILE
                    && name != crate::lock::LOCK_FILE
                    && !name.starts_with(".tmp-")
                {
                    result.1 = true;
                }
            }
        }
        result
    }

    fn persist(&self) {
        let dir = self.renewer.store().dir();
        if let Err(e) = self.state.save(dir) {
            tracing::warn!("cannot write state.json: {e}");
        }
        let metrics = self.metrics_override.as_ref().or(self
            .config
            .output
            .metrics_file
            .as_ref()
            .map(|p| &p.0));
        if let Some(path) = metrics {
            let leaf: Option<LeafInfo> = self
                .renewer
                .store()
                .read_current()
                .ok()
                .flatten()
                .map(|s| s.leaf);
            let ca = crate::ca_expiry::installed(self.renewer.store(), self.renewer.anchors());
            if let Err(e) = crate::metrics::write(path, &self.state, leaf.as_ref(), &ca) {
                tracing::warn!("cannot write the metrics file: {e}");
            }
        }
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// A uniform draw from [0, 1) for jitter, from OpenSSL's CSPRNG (no extra dependency).
pub fn unit() -> f64 {
    let mut bytes = [0u8; 8];
    if openssl::rand::rand_bytes(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}
