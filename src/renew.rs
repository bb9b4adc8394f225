//! One renewal attempt, start to finish: token, CSR for a fresh key, certificate request,
//! validation, install. Anything short of a validated set is an error and writes nothing.
//!
//! Used by the one-shot `renew` command and by the daemon; neither knows the steps.

use std::path::PathBuf;
use std::time::Duration;

use time::OffsetDateTime;

use crate::config::Config;
use crate::hooks::{self, HookEnv};
use crate::metadata::client::{Client, ClientError};
use crate::pki::csr::{self, CsrError};
use crate::pki::validate::{self, Anchor, LeafInfo};
use crate::pki::{KeyError, PrivateKey, Rejection, Verified};
use crate::state::{HookResult, HooksOwed, State};
use crate::store::{Generation, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Csr(#[from] CsrError),
    #[error(transparent)]
    Service(#[from] ClientError),
    // These two put the cause into their own sentence, so it must not also be their
    // `source()`: `{:#}` (how errors reach stderr) would print it a second time.
    #[error("refused the certificate the service returned: {0}. Nothing was installed; the current set stays in place")]
    Rejected(Rejection),
    #[error("{0}. The current set stays in place")]
    Store(StoreError),
    #[error("cannot use certificate.trust_anchor {}: {reason}", path.display())]
    Anchor { path: PathBuf, reason: String },
    #[error(transparent)]
    Swanctl(#[from] crate::swanctl::SwanctlError),
}

impl From<Rejection> for RenewError {
    fn from(e: Rejection) -> Self {
        RenewError::Rejected(e)
    }
}

impl From<StoreError> for RenewError {
    fn from(e: StoreError) -> Self {
        RenewError::Store(e)
    }
}

impl RenewError {
    /// Retrying cannot help until the configuration changes.
    pub fn is_permanent(&self) -> bool {
        match self {
            RenewError::Service(e) => e.is_permanent(),
            RenewError::Anchor { .. } => true,
            RenewError::Swanctl(e) => e.is_config(),
            _ => false,
        }
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            RenewError::Service(e) => e.retry_after(),
            _ => None,
        }
    }
}

/// A successful renewal.
#[derive(Debug, Clone)]
pub struct Renewed {
    pub generation: Generation,
    pub verified: Verified,
    /// What `current` held before, if anything.
    pub previous: Option<LeafInfo>,
    /// The service's own `expires_at`, for the log only: the certificate's notAfter rules.
    pub claimed_expires_at: String,
    pub token_refreshed: bool,
}

/// A renewal followed by its hooks.
#[derive(Debug, Clone)]
pub struct AttemptOutcome {
    pub renewed: Renewed,
    pub hooks: Vec<HookResult>,
    /// What the hooks were told, kept to retry a failed hook with the same facts.
    pub hook_env: HookEnv,
}

pub struct Renewer {
    config: Config,
    client: Client,
    store: Store,
    anchor: Option<Anchor>,
}

impl Renewer {
    pub fn new(config: Config, client: Client, store: Store) -> Result<Renewer, RenewError> {
        let anchor = match &config.certificate.trust_anchor {
            None => None,
            Some(path) => {
                let pem = std::fs::read(path).map_err(|e| RenewError::Anchor {
                    path: path.clone(),
                    reason: e.to_string(),
                })?;
                Some(Anchor::from_pem(&pem).map_err(|e| RenewError::Anchor {
                    path: path.clone(),
                    reason: e.to_string(),
                })?)
            }
        };
        Ok(Renewer {
            config,
            client,
            store,
            anchor,
        })
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A key from `keys`, [`Renewer::renew`], then the hooks, with the outcome (a failed key
    /// generation included) recorded in `state` (not saved).
    pub async fn attempt(
        &self,
        keys: &mut KeySource,
        state: &mut State,
    ) -> Result<AttemptOutcome, RenewError> {
        let result = match keys.take(&self.config, &self.store).await {
            Ok(key) => self.renew(key).await,
            Err(e) => Err(e.into()),
        };
        let now = OffsetDateTime::now_utc();
        match result {
            Ok(renewed) => {
                let leaf = &renewed.verified.leaf;
                tracing::info!(
                    serial = %leaf.serial_hex,
                    not_after = %validate::rfc3339(leaf.not_after),
                    claimed_expires_at = %renewed.claimed_expires_at,
                    generation = %renewed.generation.dir.display(),
                    "installed a new certificate"
                );
                if renewed.verified.reordered {
                    tracing::warn!(
                        "the service sent the certificates out of order; installed them leaf first"
                    );
                }
                state.record_success(now, &leaf.serial_hex);
                let previous = renewed.previous.as_ref().map(|p| p.serial_hex.clone());
                let hook_env = HookEnv::new(
                    &renewed.generation.dir,
                    &renewed.verified.leaf,
                    previous.as_deref(),
                );
                // On disk before the first hook starts: a stop or a crash while hooks run must
                // not lose them (see `HooksOwed`).
                state.hooks_owed = (!self.config.hooks.is_empty()).then(|| HooksOwed {
                    serial: leaf.serial_hex.clone(),
                    previous_serial: previous,
                    names: self.config.hooks.iter().map(|h| h.name.clone()).collect(),
                });
                if let Err(e) = state.save(self.store.dir()) {
                    tracing::warn!("cannot record the install in state.json: {e}");
                }
                let mut results = Vec::with_capacity(self.config.hooks.len());
                for hook in &self.config.hooks {
                    let result = hooks::run_one(hook, &hook_env).await;
                    state.hook_done(&hook.name, !result.ok && hook.retry);
                    state.record_hook(result.clone());
                    results.push(result);
                }
                Ok(AttemptOutcome {
                    renewed,
                    hooks: results,
                    hook_env,
                })
            }
            Err(e) => {
                state.record_failure(now, &e.to_string());
                Err(e)
            }
        }
    }

    /// Requests a certificate for `key` and installs it. `key` is consumed: a key is used for
    /// one CSR only, and is wiped when the set is on disk (or the attempt failed).
    pub async fn renew(&self, key: PrivateKey) -> Result<Renewed, RenewError> {
        // A `current` that is not our symlink is refused before anything is requested, and so
        // is a swanctl path that is not ours.
        self.store.current_generation()?;
        let swanctl = crate::swanctl::Layout::from_config(&self.config);
        if let Some(layout) = &swanctl {
            layout.preflight()?;
        }
        let csr = csr::build(&key, &self.config.certificate.subject)?;
        let issued = self
            .client
            .request_certificate(&csr, self.config.certificate.lifetime.0)
            .await?;
        let verified = validate::validate(
            &issued.response.certificates,
            &key.public_key_der()?,
            self.anchor.as_ref(),
            OffsetDateTime::now_utc(),
            validate::DEFAULT_SKEW,
        )?;
        if let Some(warning) =
            expiry_claim_mismatch(&issued.response.expires_at, verified.leaf.not_after)
        {
            tracing::warn!("{warning}");
        }
        // A corrupt set is what a renewal repairs, so it is no reason to stop here.
        let previous = self.store.read_current().ok().flatten().map(|c| c.leaf);
        let store = self.store.clone();
        let generation = tokio::task::spawn_blocking({
            let verified = verified.clone();
            move || store.install(&key, &verified)
        })
        .await
        .map_err(|e| {
            RenewError::Store(StoreError::Io {
                action: "finish installing into",
                path: self.store.dir().to_path_buf(),
                source: std::io::Error::other(e.to_string()),
            })
        })??;
        if let Some(layout) = &swanctl {
            layout.link()?;
        }
        Ok(Renewed {
            generation,
            verified,
            previous,
            claimed_expires_at: issued.response.expires_at,
            token_refreshed: issued.token_refreshed,
        })
    }
}

/// Where the key for the next renewal comes from.
///
/// RSA-4096 generation takes seconds, so after each install the next key is generated ahead of
/// time on a low-priority thread and kept in memory only (zeroized on drop, never on disk
/// before it is used). A renewal takes it if it is ready, waits for it if it is underway, and
/// generates one otherwise. With `certificate.reuse_key` the installed key is used again.
pub struct KeySource {
    bits: u32,
    next: Option<tokio::sync::oneshot::Receiver<Result<PrivateKey, KeyError>>>,
}

impl KeySource {
    pub fn new(bits: u32) -> KeySource {
        KeySource { bits, next: None }
    }

    /// Starts generating the next key in the background, unless keys are reused.
    pub fn prepare(&mut self, config: &Config) {
        if config.certificate.reuse_key || self.next.is_some() {
            return;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let bits = self.bits;
        let spawned = std::thread::Builder::new()
            .name("eit-keygen".into())
            .spawn(move || {
                // Below everything else on the machine: the key is not needed for a while.
                // SAFETY: setpriority on our own thread id has no memory-safety preconditions.
                unsafe {
                    let tid = nix::libc::gettid() as nix::libc::id_t;
                    nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid, 19);
                }
                let key = PrivateKey::generate(bits);
                if key.is_ok() {
                    tracing::debug!(bits, "the next key is ready (generated ahead of time)");
                }
                let _ = tx.send(key);
            });
        match spawned {
            Ok(_) => self.next = Some(rx),
            Err(e) => {
                tracing::debug!("cannot start key pre-generation ({e}); generating on demand")
            }
        }
    }

    /// Whether a pre-generated key is waiting (for tests and the benchmark).
    pub fn is_prepared(&self) -> bool {
        self.next.is_some()
    }

    pub async fn take(&mut self, config: &Config, store: &Store) -> Result<PrivateKey, KeyError> {
        if config.certificate.reuse_key {
            if let Some(key) = installed_key(store) {
                tracing::debug!("reusing the installed key (certificate.reuse_key)");
                return Ok(key);
            }
        }
        if let Some(mut rx) = self.next.take() {
            match rx.try_recv() {
                Ok(Ok(key)) if key.bits() == self.bits => {
                    tracing::debug!(bits = self.bits, "using the pre-generated key");
                    return Ok(key);
                }
                Ok(Err(e)) => tracing::warn!("pre-generated key failed ({e}); generating again"),
                // Still being generated at idle priority, where a busy machine may leave it
                // for minutes: a due renewal does not wait for it, it makes its own at normal
                // priority (the idle one is dropped, and wiped, when it finishes).
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                    tracing::debug!("the pre-generated key is not ready; generating one now")
                }
                _ => {}
            }
        }
        tracing::debug!(bits = self.bits, "generating a key");
        PrivateKey::generate_blocking(self.bits).await
    }
}

/// The installed key, when it parses and matches the installed certificate.
fn installed_key(store: &Store) -> Option<PrivateKey> {
    let set = store.read_current().ok().flatten()?;
    if !set.key_matches() {
        return None;
    }
    let pem = zeroize::Zeroizing::new(std::fs::read(set.dir.join(crate::store::KEY_FILE)).ok()?);
    PrivateKey::from_pem(&pem).ok()
}

/// How far the service's `expires_at` may stray from the certificate's notAfter before it is
/// worth a warning (the service writes whole seconds, as certificates do).
const EXPIRY_CLAIM_TOLERANCE: time::Duration = time::Duration::seconds(60);

/// The certificate's own notAfter rules; the JSON `expires_at` is only logged. When the two
/// disagree, the warning says which one eit-certd goes by, so that someone reading the
/// service's JSON is not misled about when the certificate expires or is renewed.
fn expiry_claim_mismatch(claimed: &str, not_after: OffsetDateTime) -> Option<String> {
    let actual = validate::rfc3339(not_after);
    let Ok(claimed_at) =
        OffsetDateTime::parse(claimed, &time::format_description::well_known::Rfc3339)
    else {
        tracing::debug!(
            expires_at = claimed,
            "the service's expires_at is not RFC 3339"
        );
        return None;
    };
    tracing::debug!(expires_at = claimed, not_after = %actual, "the service's expires_at");
    ((claimed_at - not_after).abs() > EXPIRY_CLAIM_TOLERANCE).then(|| {
        format!(
            "the service claims the certificate expires at {claimed}, but its notAfter is \
             {actual}; going by the certificate (renewal is scheduled from notAfter)"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn a_rejection_is_told_once() {
        let e = RenewError::from(Rejection::KeyMismatch);
        let shown = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(shown.matches("different public key").count(), 1, "{shown}");
        assert!(shown.starts_with("refused the certificate the service returned: "));
        assert!(shown.ends_with("Nothing was installed; the current set stays in place"));
    }

    #[test]
    fn a_store_error_is_told_once() {
        let e = RenewError::from(StoreError::Io {
            action: "write",
            path: PathBuf::from("/x/cert.pem"),
            source: std::io::Error::other("disk full"),
        });
        let shown = format!("{:#}", anyhow::Error::from(e));
        assert_eq!(shown.matches("/x/cert.pem").count(), 1, "{shown}");
        assert_eq!(shown.matches("disk full").count(), 1, "{shown}");
        assert!(
            shown.ends_with(". The current set stays in place"),
            "{shown}"
        );
    }

    #[test]
    fn expiry_claims_that_disagree_with_not_after_are_flagged() {
        let not_after = datetime!(2025-06-10 12:08:39 UTC);
        assert_eq!(
            expiry_claim_mismatch("2025-06-10T12:08:39Z", not_after),
            None
        );
        assert_eq!(
            expiry_claim_mismatch("2025-06-10T12:09:30Z", not_after),
            None
        );
        assert_eq!(expiry_claim_mismatch("not a date", not_after), None);
        let w = expiry_claim_mismatch("2025-06-10T12:53:39Z", not_after).unwrap();
        assert!(
            w.contains("expires at 2025-06-10T12:53:39Z")
                && w.contains("its notAfter is 2025-06-10T12:08:39Z"),
            "{w}"
        );
        assert!(expiry_claim_mismatch("2025-06-10T11:00:00Z", not_after).is_some());
    }
}
