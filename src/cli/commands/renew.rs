//! `renew`: one attempt now (or nothing while the set is not due), `--dry-run`, and `--force`
//! through a running daemon; the attempt recorded in state.json and the metrics file, and the
//! hooks that failed named.

use std::io::Write;
use std::path::Path;

use time::OffsetDateTime;

use super::{failed, load_config, open_store, usage, CommandError, CommandResult};
use crate::cli::RenewArgs;
use crate::metadata::client::Client;
use crate::renew::schedule::Policy;
use crate::renew::{AttemptOutcome, KeySource, Renewed, Renewer};
use crate::store::lock::LockError;
use crate::store::state::State;
use crate::store::{OpenError, Store};
use crate::text::rfc3339;

pub(super) async fn renew(config_path: &Path, args: &RenewArgs) -> CommandResult {
    let config = load_config(config_path)?;
    crate::report::check::warn_about_config_file(config_path);
    if args.dry_run {
        // certbot's spelling of `check --online`: the pipeline, nothing installed.
        let report = crate::report::check::online(&config)
            .await
            .map_err(failed)?;
        out!("{report}");
        return Ok(0);
    }
    let (store, _lock) = match Store::open_exclusive(&config.output) {
        Ok(opened) => opened,
        Err(OpenError::Lock(LockError::Held {
            holder: Some(pid), ..
        })) if args.force => return renew_through_daemon(&open_store(&config)?, pid).await,
        Err(OpenError::Store(e)) => return Err(usage(e)),
        Err(e) => return Err(failed(e)),
    };
    // Before anything is requested: a swanctl path that is not ours is refused here.
    let swanctl = crate::integrations::swanctl::Layout::from_config(&config);
    let linked = match &swanctl {
        Some(layout) => {
            layout
                .ensure(&store)
                .map_err(|e| if e.is_config() { usage(e) } else { failed(e) })?
        }
        None => Vec::new(),
    };
    let policy = Policy::from(&config.certificate);
    let now = OffsetDateTime::now_utc();
    if !args.force {
        if let Ok(Some(current)) = store.read_current() {
            let leaf = &current.leaf;
            if current.is_usable(now) && !policy.is_due(leaf.not_before, leaf.not_after, now) {
                out!(
                    "nothing to do: serial {} is valid until {}, renewal due at {} (use --force to renew now)",
                    leaf.serial_hex,
                    rfc3339(leaf.not_after),
                    rfc3339(policy.renewal_point(leaf.not_before, leaf.not_after))
                );
                for change in &linked {
                    out!(
                        "linked {} to the installed set; have charon load it (swanctl --load-creds, or the swanctl-reload hook)",
                        change.path.display()
                    );
                }
                return Ok(0);
            }
        }
    }
    let client = Client::connect(&config.metadata).map_err(failed)?;
    let renewer = Renewer::new(config, client, store).map_err(usage)?;
    let outcome = renew_with_state(&renewer).await?;
    print_renewed(&outcome.renewed);
    Ok(report_failed_hooks(&outcome.hooks))
}

/// Names each hook that failed for the set just installed; the exit code: 1 when one did.
/// Installed, but a consumer may still present the old certificate: not a success for a
/// script that mounts next.
fn report_failed_hooks<'a>(
    hooks: impl IntoIterator<Item = &'a crate::store::state::HookResult>,
) -> u8 {
    let mut code = 0;
    for hook in hooks.into_iter().filter(|h| !h.ok) {
        tracing::warn!(
            hook = %hook.name,
            "hook {} failed (the new certificate is installed, but that consumer may not use \
             it): {}",
            hook.name,
            hook.detail
        );
        code = 1;
    }
    code
}

/// `renew --force` while a daemon holds the lock: the daemon renews (SIGUSR1, as `systemctl
/// kill -s USR1 eit-certd`), and this waits for the attempt it records in state.json.
async fn renew_through_daemon(store: &Store, pid: u32) -> CommandResult {
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    if !comm.trim().starts_with("eit-certd") {
        return Err(failed(anyhow::anyhow!(
            "{} is locked by pid {pid}, which is not eit-certd ({}); not signalling it",
            store.dir().display(),
            comm.trim()
        )));
    }
    let before = State::load(store.dir()).last_attempt.map(|a| a.at);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .map_err(|e| {
        failed(anyhow::anyhow!(
            "cannot ask the daemon (pid {pid}) to renew: {e}"
        ))
    })?;
    tracing::info!(
        pid,
        "the daemon (pid {pid}) holds {}; asked it to renew now, waiting for its result",
        store.dir().display()
    );
    // Its attempt, hooks included, is bounded by the request timeout and the hooks' timeouts;
    // an hour covers any configuration, and a daemon that dies meanwhile is noticed.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        let state = State::load(store.dir());
        let done = state.last_attempt.as_ref().filter(|a| Some(a.at) != before);
        // A success is recorded before its hooks run: wait until each hook owed for the new
        // serial has a result for it (a failed one with `retry` stays owed, with a result).
        let hooks_running = |serial: &Option<String>| {
            state.hooks_owed.as_ref().is_some_and(|owed| {
                Some(&owed.serial) == serial.as_ref()
                    && owed.names.iter().any(|n| {
                        n != crate::store::state::SWANCTL_LINKS
                            && !state
                                .hooks
                                .iter()
                                .any(|h| &h.name == n && Some(&h.serial) == serial.as_ref())
                    })
            })
        };
        if let Some(attempt) = done.filter(|a| a.error.is_some() || !hooks_running(&a.serial)) {
            if let Some(error) = &attempt.error {
                return Err(failed(anyhow::anyhow!(
                    "the daemon's renewal failed: {error}"
                )));
            }
            let serial = attempt.serial.clone().unwrap_or_default();
            out!("installed serial {serial} (renewed by the daemon, pid {pid})");
            return Ok(report_failed_hooks(
                state.hooks.iter().filter(|h| h.serial == serial),
            ));
        }
        if tokio::time::Instant::now() > deadline || !Path::new(&format!("/proc/{pid}")).exists() {
            return Err(failed(anyhow::anyhow!(
                "the daemon (pid {pid}) did not record a renewal; see its log (journalctl -u \
                 eit-certd)"
            )));
        }
    }
}

/// One attempt with a fresh key and the hooks, recorded in `state.json` (and the metrics file)
/// whatever the outcome.
pub(super) async fn renew_with_state(renewer: &Renewer) -> Result<AttemptOutcome, CommandError> {
    let config = renewer.config();
    let dir = renewer.store().dir().to_path_buf();
    let mut state = State::load(&dir);
    let mut keys = KeySource::new(config.certificate.key_bits.0);
    let result = renewer.attempt(&mut keys, &mut state, |_| {}).await;
    if let Ok(outcome) = &result {
        let leaf = &outcome.renewed.verified.leaf;
        let policy = Policy::from(&config.certificate);
        state.next_renewal = Some(policy.next_renewal(leaf.not_before, leaf.not_after, 0.0));
    }
    // As the daemon records it: a failed attempt keeps the installed set's series.
    let metrics = config.output.metrics_file.as_ref().map(|p| p.0.as_path());
    crate::report::metrics::persist(&state, renewer, metrics);
    result.map_err(failed)
}

fn print_renewed(r: &Renewed) {
    let leaf = &r.verified.leaf;
    out!(
        "installed serial {} for {} (valid until {}, {}) in {}",
        leaf.serial_hex,
        leaf.subject,
        rfc3339(leaf.not_after),
        humantime::format_duration(leaf.lifetime()),
        r.generation.dir.display()
    );
    if let Some(prev) = &r.previous {
        out!("replaced serial {}", prev.serial_hex);
    }
}
