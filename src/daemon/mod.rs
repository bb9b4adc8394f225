//! The daemon behind `eit-certd run`: keeps the certificate set fresh for as long as it runs.
//!
//! Decisions and I/O are apart. [`machine::Machine`] decides what to do next from what it is
//! told (the installed set, the last outcome, owed hooks, signals, file events) and the time;
//! it is pure and unit-tested with a made-up clock. [`Daemon::run`] is the thin loop around
//! it: read the clock, ask for the next [`machine::Step`], carry it out, report back.
//!
//! Between steps it waits on a wall-clock timer (a timerfd, see [`crate::daemon::wallclock`]) for
//! deadlines taken from certificates, and on the monotonic clock for retries: it wakes on time
//! after a suspend and early when the clock is set. It also wakes for signals (TERM/INT stop,
//! HUP reloads the config, USR1 renews now) and for file-system events on the config file,
//! the trust anchors and the output directory (debounced): a changed config is reloaded, a
//! deleted or corrupted set is repaired. While a renewal or hooks run, signals still arrive: a
//! stop cuts the work short (an install is atomic; hooks cut short stay owed), the others wait.
//!
//! A failed attempt never touches the installed set; the next one follows a capped exponential
//! backoff with full jitter ([`crate::renew::schedule::Backoff`]). Outcomes are reported as typed
//! [`Event`]s (after rustls-acme) to whoever listens: the demo, tests, the log.

pub mod machine;
pub mod systemd;
pub mod wallclock;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use notify::Watcher;
use time::OffsetDateTime;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::config::Config;
use crate::daemon::systemd::Notifier;
use crate::daemon::wallclock::WallTimer;
use crate::metadata::client::Client;
use crate::pki::validate::LeafInfo;
use crate::renew::hooks::HookEnv;
use crate::renew::schedule::{Backoff, FailureClass, Policy};
use crate::renew::{AttemptOutcome, KeySource, RenewError, Renewer};
use crate::store::lock::DirLock;
use crate::store::state::State;
use crate::store::{CurrentSet, Store, StoreError};
use crate::text::rfc3339;

use machine::{Input, Machine, Now, Phase, ReloadCause, SetView, Step};

/// A wait at least this long after some work is idle time: memory is given back first.
const IDLE_AFTER: Duration = Duration::from_secs(60);
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Lock(#[from] crate::store::lock::LockError),
    #[error(transparent)]
    Renew(#[from] RenewError),
    #[error(transparent)]
    Client(#[from] crate::metadata::client::ClientError),
    #[error("cannot install signal handlers: {0}")]
    Signals(std::io::Error),
    #[error(transparent)]
    Swanctl(#[from] crate::integrations::swanctl::SwanctlError),
    /// A hook program that cannot run (what `check` reports), with the fix.
    #[error("{0}")]
    Hook(crate::config::problem::Problem),
}

impl From<crate::store::OpenError> for DaemonError {
    fn from(e: crate::store::OpenError) -> DaemonError {
        match e {
            crate::store::OpenError::Store(e) => DaemonError::Store(e),
            crate::store::OpenError::Lock(e) => DaemonError::Lock(e),
        }
    }
}

impl DaemonError {
    /// Configuration problems are usage errors (exit 2); the rest are failures (exit 1).
    pub fn is_usage(&self) -> bool {
        matches!(
            self,
            DaemonError::Config(_)
                | DaemonError::Hook(_)
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
    /// A new set is live (its hooks run next).
    Installed {
        serial: String,
        not_after: OffsetDateTime,
        generation: PathBuf,
        next_renewal: OffsetDateTime,
    },
    /// An attempt failed (the installed set is untouched); the next one is `retry_in` away.
    Failed {
        error: std::sync::Arc<crate::renew::RenewError>,
        retry_in: Duration,
    },
    /// A hook ran for the installed set (fresh or owed).
    HookFinished(crate::store::state::HookResult),
}

/// A running daemon: its decisions, and the I/O they are carried out with.
pub struct Daemon {
    /// What to do next (pure).
    machine: Machine,
    /// Everything the steps are carried out with.
    core: Core,
    /// The machine's monotonic clock.
    clock: Clock,
    /// Installed in `start`, before the first log line: a signal sent as soon as the daemon
    /// says it is up must not meet the default action (which ends the process).
    signals: Option<Signals>,
}

/// The I/O side: configuration, pipeline, bookkeeping, notifications.
struct Core {
    /// The config file, read again on reload.
    config_path: PathBuf,
    /// The renewal pipeline: client, store, trust anchors (rebuilt by a reload).
    renewer: Renewer,
    /// Where the next renewal's key and CSR come from (spare, pre-generated, or fresh).
    keys: KeySource,
    /// What state.json records: attempts, counters, hooks owed. Saved after every change.
    state: State,
    /// Held for the process's life: one daemon per output directory.
    _lock: DirLock,
    /// Listeners for [`Event`]s, if any.
    events: Option<mpsc::UnboundedSender<Event>>,
    /// systemd notifications (no-ops outside systemd).
    notifier: Notifier,
    /// READY=1 was sent (it is sent once, when a valid set is first known to be in place).
    ready_sent: bool,
    /// `run --metrics-file`, which wins over `output.metrics_file`.
    metrics_override: Option<PathBuf>,
}

/// The loop's reading of both clocks.
#[derive(Debug, Clone, Copy)]
struct Clock {
    /// What the machine's monotonic zero is.
    origin: Instant,
}

impl Clock {
    fn now(&self) -> Now {
        Now {
            wall: OffsetDateTime::now_utc(),
            mono: self.origin.elapsed(),
        }
    }

    fn instant(&self, mono: Duration) -> Instant {
        self.origin + mono
    }
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

/// Where the loop's [`Input`]s come from: signals, the caller's shutdown, file events, and
/// the one place the systemd watchdog is fed (whatever the loop is doing meanwhile).
struct Inputs<S> {
    signals: Signals,
    shutdown: Pin<Box<S>>,
    /// File events, sorted by `files.filter`.
    fs_rx: mpsc::Receiver<notify::Result<notify::Event>>,
    /// Kept to renew the watch after a reload.
    fs_tx: mpsc::Sender<notify::Result<notify::Event>>,
    files: Watch,
    notifier: Notifier,
    /// How often to feed the watchdog, if systemd asked for it.
    watchdog: Option<Duration>,
    /// When it is fed next.
    next_watchdog: Option<Instant>,
}

impl<S: Future<Output = ()>> Inputs<S> {
    /// The next input. Cancel-safe: it is raced against work and timers, and drops nothing
    /// when it loses.
    async fn next(&mut self) -> Input {
        loop {
            tokio::select! {
                _ = self.signals.term.recv() => return Input::Stop,
                _ = self.signals.int.recv() => return Input::Stop,
                () = &mut self.shutdown => return Input::Stop,
                _ = self.signals.hup.recv() => {
                    tracing::info!("SIGHUP: reloading the configuration");
                    return Input::Reload;
                }
                _ = self.signals.usr1.recv() => {
                    tracing::info!("SIGUSR1: renewing now (a renewal under way answers it)");
                    return Input::RenewNow;
                }
                Some(event) = self.fs_rx.recv() => {
                    let (config, output) = self.files.filter.classify(event);
                    if config || output {
                        return Input::Files { config, output };
                    }
                }
                () = sleep_until_some(self.next_watchdog) => {
                    self.notifier.watchdog();
                    self.next_watchdog = self.watchdog.map(|w| Instant::now() + w);
                }
            }
        }
    }

    /// Runs `work` while taking inputs: a stop cuts it short (`None`); the others go to the
    /// machine, which keeps them for after the work.
    async fn during<T>(
        &mut self,
        machine: &mut Machine,
        clock: Clock,
        work: impl Future<Output = T>,
    ) -> Option<T> {
        tokio::pin!(work);
        loop {
            tokio::select! {
                out = &mut work => return Some(out),
                input = self.next() => {
                    machine.input(clock.now(), input);
                    if machine.phase() == Phase::Stopped {
                        return None;
                    }
                }
            }
        }
    }
}

/// The file-system watch: the config file's directory, the trust anchors and the output
/// directory, and how to tell their events apart.
struct Watch {
    /// `None` where inotify is unavailable: changes are then noticed on SIGHUP and renewal.
    _watcher: Option<notify::RecommendedWatcher>,
    filter: FileFilter,
}

/// Sorts file events into "the config changed" and "the installed set may have changed".
struct FileFilter {
    config_path: PathBuf,
    /// The configured trust-anchor files and directories.
    anchors: crate::pki::anchors::AnchorPaths,
    out: PathBuf,
    /// The metrics textfile, which we rewrite after every attempt (it may live in `out`).
    metrics: Option<PathBuf>,
    /// Our own stderr, when it is a file (someone debugging with `2> log` next to the
    /// config): every line we log changes it, and it must not count as a change.
    own_log: Option<PathBuf>,
}

impl Watch {
    fn new(core: &Core, tx: mpsc::Sender<notify::Result<notify::Event>>) -> Watch {
        let filter = FileFilter {
            config_path: core.config_path.clone(),
            anchors: crate::pki::anchors::AnchorPaths::of(&core.config().certificate),
            out: core.renewer.store().dir().to_path_buf(),
            metrics: core.metrics_path().map(Path::to_path_buf),
            own_log: own_log_file(),
        };
        Watch {
            _watcher: filter.watch(tx),
            filter,
        }
    }
}

impl FileFilter {
    fn config_dir(&self) -> &Path {
        self.config_path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
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
        let config_dir = self.config_dir();
        let anchor_dirs = self.anchors.watch_dirs();
        let anchor_dirs = anchor_dirs.iter().filter(|d| d.as_path() != config_dir);
        for (dir, mode) in [
            (config_dir, notify::RecursiveMode::NonRecursive),
            (self.out.as_path(), notify::RecursiveMode::Recursive),
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
        let mut result = (false, false);
        for path in &event.paths {
            if self.own_log.as_deref() == Some(path.as_path()) {
                // Our own log lines: never a change.
            } else if path.file_name() == config_name
                && path
                    .parent()
                    .map(|p| p.ends_with(self.config_path.parent().unwrap_or(Path::new(""))))
                    .unwrap_or(false)
            {
                result.0 = true;
            } else if self.anchors.is_anchor_path(path) {
                // Reloading an unchanged config reloads the trust anchors.
                result.0 = true;
            } else if self.metrics.as_deref() == Some(path.as_path()) {
                // Ours, rewritten after every attempt, and no part of the set.
            } else if path.starts_with(self.out.join(crate::store::spare::SPARE_DIR)) {
                // The spare is written and removed by us, and is no part of the set.
            } else if path.starts_with(&self.out) {
                // Our bookkeeping files change on every attempt and say nothing about the set.
                let name = path
                    .file_name()
                    .map(|n| n.to_string_lossy())
                    .unwrap_or_default();
                if name != crate::store::state::STATE_FILE
                    && name != crate::store::lock::LOCK_FILE
                    && !name.starts_with(crate::files::TMP_PREFIX)
                {
                    result.1 = true;
                }
            }
        }
        result
    }
}

/// The file our stderr writes to, if it is a regular file.
fn own_log_file() -> Option<PathBuf> {
    let path = std::fs::read_link("/proc/self/fd/2").ok()?;
    std::fs::metadata(&path)
        .ok()
        .filter(|m| m.is_file())
        .map(|_| path)
}

/// What a reload did.
enum Reloaded {
    /// The file could not be taken (its error is logged): the running config stays.
    Kept,
    /// The file is as running; `anchors`: the trust anchors changed and were reloaded.
    Unchanged { anchors: bool },
    /// A new configuration runs.
    Taken,
}

impl Daemon {
    /// Loads the config, takes the output directory's lock and looks at what is installed.
    pub async fn start(
        config_path: &Path,
        metrics_file: Option<PathBuf>,
    ) -> Result<Daemon, DaemonError> {
        let signals = Some(Signals::install()?);
        let config = Config::load(config_path)?;
        crate::report::check::warn_about_config_file(config_path);
        // What `check` refuses about the hooks, `run` refuses too: a hook that cannot start
        // fails at every install, and the daemon would look healthy meanwhile.
        if let Some(problem) = crate::report::check::hook_programs(&config)
            .into_iter()
            .next()
        {
            return Err(DaemonError::Hook(problem));
        }
        let (store, lock) = Store::open_exclusive(&config.output)?;
        let removed = store.clean_litter()?;
        if removed > 0 {
            tracing::info!(removed, "removed leftovers of an interrupted install");
        }
        // A renewal prunes after its hooks; one stopped during them left that to here.
        if let Ok(Some(current)) = store.current_generation() {
            store.prune_after(&current);
        }
        // A path that is not ours is a configuration problem (refused here); a link that
        // cannot be made now (a read-only directory) is owed, and the daemon starts.
        let mut links_owed = false;
        if let Some(layout) = crate::integrations::swanctl::Layout::from_config(&config) {
            layout.preflight()?;
            if let Err(e) = layout.ensure(&store) {
                tracing::warn!("the [output.swanctl] links cannot be made now: {e}; retrying them with the hooks");
                links_owed = true;
            }
        }
        // `auto` probes at the first request, not here: the daemon must start (and keep its
        // installed set) while the service is unreachable.
        let client = Client::connect(&config.metadata)?;
        let renewer = Renewer::new(config.clone(), client, store)?;
        let state = State::load(renewer.store().dir());
        let mut daemon = Daemon {
            machine: Machine::new(policy(&config), backoff(&config), jitter_draw),
            core: Core {
                config_path: config_path.to_path_buf(),
                keys: KeySource::new(config.certificate.key_bits.0),
                renewer,
                state,
                _lock: lock,
                events: None,
                notifier: Notifier::from_env(),
                ready_sent: false,
                metrics_override: metrics_file,
            },
            clock: Clock {
                origin: Instant::now(),
            },
            signals,
        };
        let now = daemon.clock.now();
        let current = daemon.core.renewer.store().read_current();
        daemon.schedule_from(&current);
        let mut owed = daemon
            .core
            .owe_hooks_of_unrecorded_install(&current, now.wall);
        if let (true, Ok(Some(set))) = (links_owed, &current) {
            crate::store::state::owe_links(&mut daemon.core.state.hooks_owed, &set.leaf.serial_hex);
            owed = true;
        }
        if owed {
            daemon.machine.hooks_owed_at_start(now);
        }
        // The set read above: start-up reads it once.
        let ca = match &current {
            Ok(Some(set)) => set.ca_expiry(daemon.core.renewer.anchors()),
            _ => Default::default(),
        };
        for warning in ca.warnings(now.wall) {
            tracing::warn!("{warning}");
        }
        // With time to spare, the first renewal's key is made now, at low priority; when a
        // renewal is due at once it generates its own key at normal priority instead.
        if daemon.machine.next_renewal(now) > machine::later(now.wall, Duration::from_secs(60)) {
            daemon
                .core
                .keys
                .prepare(daemon.core.renewer.config(), daemon.core.renewer.store());
        }
        Ok(daemon)
    }

    /// Subscribes to [`Event`]s.
    pub fn events(&mut self) -> mpsc::UnboundedReceiver<Event> {
        let (tx, rx) = mpsc::unbounded_channel();
        self.core.events = Some(tx);
        rx
    }

    /// Runs until `shutdown` resolves (or SIGTERM/SIGINT arrive).
    pub async fn run(mut self, shutdown: impl Future<Output = ()>) -> Result<(), DaemonError> {
        let signals = match self.signals.take() {
            Some(signals) => signals,
            None => Signals::install()?,
        };
        let (fs_tx, fs_rx) = mpsc::channel(64);
        let watchdog = self.core.notifier.watchdog_interval();
        let mut inputs = Inputs {
            signals,
            shutdown: Box::pin(shutdown),
            files: Watch::new(&self.core, fs_tx.clone()),
            fs_rx,
            fs_tx,
            notifier: self.core.notifier.clone(),
            watchdog,
            next_watchdog: watchdog.map(|w| Instant::now() + w),
        };
        let wall = WallTimer::new();
        self.core.persist();
        // Work was done since memory was last given back (see `crate::footprint`).
        let mut worked = true;

        loop {
            let now = self.clock.now();
            let step = self.machine.next(now);
            if let Step::Wait { wall: at, mono } = step {
                let far = now.mono + IDLE_AFTER;
                if worked
                    && at >= machine::later(now.wall, IDLE_AFTER)
                    && mono.is_none_or(|m| m >= far)
                {
                    crate::footprint::trim();
                    worked = false;
                }
            } else {
                worked = true;
            }
            match step {
                Step::Stop => break,
                Step::Wait { wall: at, mono } => {
                    tokio::select! {
                        () = wall.sleep_until(at) => {}
                        () = sleep_until_some(mono.map(|m| self.clock.instant(m))) => {}
                        input = inputs.next() => self.machine.input(self.clock.now(), input),
                    }
                }
                Step::Renew => {
                    let Core {
                        renewer,
                        keys,
                        state,
                        notifier,
                        ready_sent,
                        ..
                    } = &mut self.core;
                    let work = renewer.attempt(keys, state, |renewed| {
                        announce_installed(notifier, ready_sent, &renewed.verified.leaf)
                    });
                    let Some(result) = inputs.during(&mut self.machine, self.clock, work).await
                    else {
                        break;
                    };
                    self.after_attempt(result);
                }
                Step::RunOwedHooks => {
                    let work = self.core.run_owed_hooks();
                    let Some(still_owed) = inputs.during(&mut self.machine, self.clock, work).await
                    else {
                        break;
                    };
                    let now = self.clock.now();
                    // The status line follows what is still owed (for a usable set only:
                    // this also sends READY when it was not sent yet).
                    if let (Ok(Some(set)), Some(next)) = (
                        self.core.renewer.store().read_current(),
                        self.core.state.next_renewal,
                    ) {
                        if set.is_usable(now.wall) {
                            self.core.announce_valid(&set.leaf, next);
                        }
                    }
                    if let Some(delay) = self.machine.hooks_ran(now, still_owed) {
                        tracing::info!(
                            retry_in_ms = duration_ms(delay),
                            "hooks still owed for the installed set; retrying them in {}",
                            humantime::format_duration(delay)
                        );
                    }
                }
                Step::Reload(cause) => {
                    if cause == ReloadCause::FileChanged {
                        tracing::info!(path = %self.core.config_path.display(), "the configuration file changed; reloading");
                    }
                    match self.core.reload() {
                        Reloaded::Kept => {}
                        Reloaded::Unchanged { anchors: false } => {}
                        Reloaded::Unchanged { anchors: true } => {
                            self.schedule_from_disk();
                            self.core.persist();
                        }
                        Reloaded::Taken => {
                            self.machine
                                .reloaded(policy(self.core.config()), backoff(self.core.config()));
                            self.schedule_from_disk();
                            self.core.persist();
                            inputs.files = Watch::new(&self.core, inputs.fs_tx.clone());
                        }
                    }
                }
                Step::CheckInstalled => {
                    let now = self.clock.now();
                    let current = self.core.renewer.store().read_current();
                    if self.machine.set_checked(view(&current, now.wall)) {
                        tracing::warn!(
                            "the installed certificate set was removed or damaged; repairing it now"
                        );
                        self.core.state.next_renewal = Some(now.wall);
                    }
                }
            }
        }
        drop(inputs);
        self.core.notifier.stopping();
        tracing::info!("shutting down");
        Ok(())
    }

    fn schedule_from_disk(&mut self) {
        let current = self.core.renewer.store().read_current();
        self.schedule_from(&current);
    }

    /// Schedules the next renewal from the installed set (at once when there is no usable
    /// set: missing, unreadable, expired, key mismatch, or `current` is not ours), and says so.
    fn schedule_from(&mut self, current: &Result<Option<CurrentSet>, StoreError>) {
        let now = self.clock.now();
        let scheduled =
            self.machine
                .set_read(now, view(current, now.wall), self.core.state.last_success);
        self.core.state.next_renewal = Some(scheduled.at);
        match current {
            Ok(Some(set)) if set.is_usable(now.wall) => {
                let leaf = &set.leaf;
                self.core.announce_valid(leaf, scheduled.at);
                tracing::info!(
                    serial = %leaf.serial_hex,
                    not_after = %rfc3339(leaf.not_after),
                    next_renewal = %rfc3339(scheduled.at),
                    "installed certificate is valid"
                );
            }
            Ok(Some(set)) => {
                let why = if set.key_matches() {
                    "has expired"
                } else {
                    "does not match its key"
                };
                if scheduled.held {
                    tracing::warn!(dir = %set.dir.display(), next_renewal = %rfc3339(scheduled.at), "the installed certificate {why}; renewing once certificate.min_interval has passed since the last renewal");
                } else {
                    tracing::warn!(dir = %set.dir.display(), "the installed certificate {why}; renewing now");
                }
            }
            Ok(None) => {
                tracing::info!(dir = %self.core.renewer.store().dir().display(), "no certificate installed; renewing now");
            }
            Err(e) => tracing::warn!("{e}; renewing now"),
        }
    }

    /// An attempt's bookkeeping; never fails the daemon.
    fn after_attempt(&mut self, result: Result<AttemptOutcome, RenewError>) {
        let now = self.clock.now();
        let core = &mut self.core;
        match result {
            Ok(outcome) => {
                let leaf = &outcome.renewed.verified.leaf;
                let scheduled = self.machine.renewed(
                    now,
                    leaf.not_before,
                    leaf.not_after,
                    core.state.hooks_owed.is_some(),
                );
                if scheduled.held {
                    tracing::warn!(
                        not_before = %rfc3339(leaf.not_before),
                        not_after = %rfc3339(leaf.not_after),
                        "the new certificate is due for renewal at once; waiting \
                         certificate.min_interval ({}) so as not to renew in a loop",
                        humantime::format_duration(self.machine.policy().min_interval)
                    );
                }
                core.state.next_renewal = Some(scheduled.at);
                tracing::info!(next_renewal = %rfc3339(scheduled.at), "next renewal scheduled");
                core.emit(Event::Installed {
                    serial: leaf.serial_hex.clone(),
                    not_after: leaf.not_after,
                    generation: outcome.renewed.generation.dir.clone(),
                    next_renewal: scheduled.at,
                });
                for result in &outcome.hooks {
                    core.emit(Event::HookFinished(result.clone()));
                }
                core.announce_valid(leaf, scheduled.at);
                core.keys
                    .prepare(core.renewer.config(), core.renewer.store());
            }
            Err(error) => {
                let failure = if error.is_permanent() {
                    FailureClass::Permanent
                } else {
                    FailureClass::Transient {
                        retry_after: error.retry_after(),
                    }
                };
                let failures = core.state.consecutive_failures;
                let delay = self.machine.renewal_failed(now, failure, failures);
                let retry_at = machine::later(now.wall, delay);
                core.state.next_renewal = Some(retry_at);
                if failure == FailureClass::Permanent {
                    tracing::error!(
                        retry_in_ms = duration_ms(delay),
                        "renewal failed and will keep failing until the configuration is fixed \
                         (retrying in {}): {error}",
                        humantime::format_duration(Duration::from_secs(delay.as_secs()))
                    );
                } else {
                    tracing::warn!(
                        retry_in_ms = duration_ms(delay),
                        failures,
                        "renewal failed (retrying in {}): {error}",
                        humantime::format_duration(Duration::from_millis(delay.as_millis() as u64))
                    );
                }
                core.notifier.status(&format!(
                    "renewal failed ({failures} in a row), retrying at {}: {error}",
                    rfc3339(retry_at)
                ));
                core.emit(Event::Failed {
                    error: std::sync::Arc::new(error),
                    retry_in: delay,
                });
            }
        }
        core.persist();
    }
}

impl Core {
    fn emit(&self, event: Event) {
        if let Some(tx) = &self.events {
            let _ = tx.send(event);
        }
    }

    /// Tells systemd a valid set is in place (READY once) and when it is renewed next.
    fn announce_valid(&mut self, leaf: &LeafInfo, next_renewal: OffsetDateTime) {
        if !self.ready_sent {
            self.notifier.ready();
            self.ready_sent = true;
        }
        // The health model of `status`, in one line: what is still owed for this set makes
        // it degraded (`systemctl status` shows it without running anything).
        let owed = self
            .state
            .hooks_owed
            .as_ref()
            .filter(|o| o.serial == leaf.serial_hex)
            .map(|o| format!("; DEGRADED, still owed: {}", o.names.join(", ")))
            .unwrap_or_default();
        self.notifier.status(&format!(
            "serial {} valid until {}; next renewal {}{owed}",
            leaf.serial_hex,
            rfc3339(leaf.not_after),
            rfc3339(next_renewal)
        ));
    }

    /// Runs the hooks still owed for the installed set (see `state::HooksOwed`); returns
    /// whether some are still owed after this round.
    async fn run_owed_hooks(&mut self) -> bool {
        let Some(owed) = self.state.hooks_owed.clone() else {
            return false;
        };
        let set = match self.renewer.store().read_current() {
            Ok(Some(set)) if set.leaf.serial_hex == owed.serial => set,
            // Another set is in place: its own install owes its own hooks.
            _ => {
                tracing::info!(serial = %owed.serial, "dropping hooks owed for a set that is no longer installed");
                self.state.hooks_owed = None;
                self.persist();
                return false;
            }
        };
        let env = HookEnv::new(&set.dir, &set.leaf, owed.previous_serial.as_deref());
        // Owed first: a hook such as swanctl-reload loads what the links point at.
        if owed
            .names
            .iter()
            .any(|n| n == crate::store::state::SWANCTL_LINKS)
        {
            let linked = match crate::integrations::swanctl::Layout::from_config(self.config()) {
                Some(layout) => layout.link().map(|_| ()),
                None => Ok(()),
            };
            match &linked {
                Ok(()) => tracing::info!(
                    "the [output.swanctl] links owed for the installed set are in place"
                ),
                Err(e) => tracing::warn!("the [output.swanctl] links are still owed: {e}"),
            }
            self.state
                .hook_done(crate::store::state::SWANCTL_LINKS, linked.is_err());
            self.persist();
        }
        let metrics = self.metrics_path().map(Path::to_path_buf);
        let Core {
            state,
            renewer,
            events,
            ..
        } = self;
        crate::renew::hooks::run_owed(
            &renewer.config().hooks,
            &env,
            state,
            |hook| tracing::info!(hook = %hook.name, serial = %owed.serial, "running a hook owed for the installed set"),
            // Recorded hook by hook: a stop during the next one must not rerun this one.
            |state, result| {
                if let Some(tx) = events {
                    let _ = tx.send(Event::HookFinished(result.clone()));
                }
                crate::report::metrics::persist(state, renewer, metrics.as_deref());
            },
        )
        .await;
        self.persist();
        self.state.hooks_owed.is_some()
    }

    /// At start: whether hooks are owed for the installed set. A set that no run recorded
    /// (installed by a run that died before it wrote state.json) owes all its hooks.
    fn owe_hooks_of_unrecorded_install(
        &mut self,
        current: &Result<Option<CurrentSet>, StoreError>,
        now: OffsetDateTime,
    ) -> bool {
        let Ok(Some(set)) = current else {
            return false;
        };
        if !set.is_usable(now) {
            return false;
        }
        if self.config().hooks.is_empty() {
            // Whatever state.json still owes (the swanctl links, say) is run all the same.
            return self.state.hooks_owed.is_some();
        }
        let serial = &set.leaf.serial_hex;
        if self.state.installed_serial.as_deref() != Some(serial.as_str()) {
            tracing::info!(%serial, "the installed set was not recorded as installed by eit-certd; running its hooks to be sure its consumers use it");
            self.state.installed_serial = Some(serial.clone());
            self.state.hooks_owed =
                crate::store::state::HooksOwed::all(serial, None, &self.config().hooks);
        }
        self.state.hooks_owed.is_some()
    }

    /// Loads the config file again. A bad file is logged and the running config kept.
    fn reload(&mut self) -> Reloaded {
        let config = match Config::load(&self.config_path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("keeping the running configuration: {e}");
                return Reloaded::Kept;
            }
        };
        if config == *self.config() {
            // Also the answer after a bad file was fixed back: say so, or the fix looks ignored.
            tracing::info!(path = %self.config_path.display(), "configuration reloaded (unchanged)");
            let anchors = match self.renewer.reload_anchors() {
                Ok(true) => {
                    tracing::info!("trust anchors reloaded");
                    true
                }
                Ok(false) => false,
                Err(e) => {
                    tracing::error!("keeping the running trust anchors: {e}");
                    false
                }
            };
            return Reloaded::Unchanged { anchors };
        }
        if config.output.dir != self.config().output.dir {
            tracing::error!(
                "keeping the running configuration: output.dir changed from {} to {}; restart eit-certd to move",
                self.config().output.dir.display(),
                config.output.dir.display()
            );
            return Reloaded::Kept;
        }
        let renewer = Store::from_config(&config.output)
            .map_err(anyhow::Error::from)
            .and_then(|store| {
                // `auto` probes again at the next request, under the same rule as at start.
                let client = Client::connect(&config.metadata)?;
                Ok(Renewer::new(config.clone(), client, store)?)
            });
        match renewer {
            Ok(renewer) => {
                self.renewer = renewer;
                self.keys = KeySource::new(config.certificate.key_bits.0);
                tracing::info!("configuration reloaded");
                Reloaded::Taken
            }
            Err(e) => {
                tracing::error!("keeping the running configuration: {e}");
                Reloaded::Kept
            }
        }
    }

    /// The running configuration: the renewer's, replaced whole by a successful reload.
    fn config(&self) -> &Config {
        self.renewer.config()
    }

    /// `run --metrics-file`, else `output.metrics_file`.
    fn metrics_path(&self) -> Option<&Path> {
        self.metrics_override.as_deref().or(self
            .config()
            .output
            .metrics_file
            .as_ref()
            .map(|p| p.0.as_path()))
    }

    fn persist(&self) {
        crate::report::metrics::persist(&self.state, &self.renewer, self.metrics_path());
    }
}

/// A new set is live and its hooks are about to run: READY now, not after the hooks. The unit
/// is ordered before stunnel4 and tlshd; a hook that restarts one of them (`systemctl restart
/// tlshd`) queues a job that waits for our start job, so READY after the hooks was a deadlock
/// broken only by the hook's timeout. Consumers that start after READY read the new set.
fn announce_installed(notifier: &Notifier, ready_sent: &mut bool, leaf: &LeafInfo) {
    if !*ready_sent {
        notifier.ready();
        *ready_sent = true;
    }
    notifier.status(&format!(
        "serial {} installed, valid until {}; running its hooks",
        leaf.serial_hex,
        rfc3339(leaf.not_after)
    ));
}

/// A duration as a log field: whole milliseconds, a number in JSON logs (a humantime string
/// such as "5s 920ms 305us" is for people, in the message).
fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// The installed set as the machine sees it.
fn view(current: &Result<Option<CurrentSet>, StoreError>, now: OffsetDateTime) -> SetView {
    match current {
        Ok(Some(set)) if set.is_usable(now) => SetView::Valid {
            not_before: set.leaf.not_before,
            not_after: set.leaf.not_after,
        },
        Ok(Some(set)) if set.key_matches() => SetView::Expired,
        Ok(_) | Err(_) => SetView::Unusable,
    }
}

fn policy(config: &Config) -> Policy {
    Policy::from(&config.certificate)
}

fn backoff(config: &Config) -> Backoff {
    Backoff {
        initial: config.retry.initial.0,
        cap: config.retry.max.0,
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
fn jitter_draw() -> f64 {
    let mut bytes = [0u8; 8];
    if openssl::rand::rand_bytes(&mut bytes).is_err() {
        return 0.5;
    }
    (u64::from_le_bytes(bytes) >> 11) as f64 / (1u64 << 53) as f64
}
