//! One renewal attempt, start to finish: token, CSR for a fresh key, certificate request,
//! validation, install. Anything short of a validated set is an error and writes nothing.
//!
//! Used by the one-shot `renew` command and by the daemon; neither knows the steps.

pub mod hooks;
pub mod schedule;

use std::sync::Arc;
use std::time::Duration;

use time::OffsetDateTime;

use self::hooks::HookEnv;
use crate::config::Config;
use crate::metadata::client::{Client, ClientError};
use crate::pki::ca_expiry::CaExpiry;
use crate::pki::csr::CsrError;
use crate::pki::validate::{self, LeafInfo};
use crate::pki::{AnchorError, KeyError, PrivateKey, Rejection, TrustAnchors, Verified};
use crate::store::spare::{Prepared, Spare};
use crate::store::state::{HookResult, HooksOwed, State};
use crate::store::{Generation, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum RenewError {
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Csr(#[from] CsrError),
    #[error(transparent)]
    Service(#[from] ClientError),
    // These two put the cause into their own sentence and, like every error here, do not
    // return it from `source()` (see the rule in lib.rs).
    #[error("refused the certificate the service returned: {0}. Nothing was installed; the current set stays in place")]
    Rejected(Rejection),
    #[error("{0}. The current set stays in place")]
    Store(StoreError),
    #[error(transparent)]
    Anchor(#[from] AnchorError),
    #[error("the certificate check did not finish: {0}")]
    ValidationAborted(String),
    #[error(transparent)]
    Swanctl(#[from] crate::integrations::swanctl::SwanctlError),
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
    /// Why the `[output.swanctl]` links could not be made after the install, if they could
    /// not: owed (see [`crate::store::state::SWANCTL_LINKS`]).
    pub links_owed: Option<String>,
    /// The service's own `expires_at`, for the log only: the certificate's notAfter rules.
    pub claimed_expires_at: String,
    pub token_refreshed: bool,
    /// How long each stage took, for the benchmark and the debug log.
    pub timings: Timings,
}

/// Per-stage durations of one renewal. `csr` is zero when the CSR was signed ahead of time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timings {
    /// Signing the CSR on the critical path.
    pub csr: Duration,
    /// Token (when not cached) and certificate request, one round trip each.
    pub request: Duration,
    /// Validating the leaf and chain.
    pub validation: Duration,
    /// Writing, fsyncing and swapping in the new generation.
    pub install: Duration,
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
    anchors: Option<Arc<TrustAnchors>>,
}

impl Renewer {
    pub fn new(config: Config, client: Client, store: Store) -> Result<Renewer, RenewError> {
        let anchors = TrustAnchors::load(&config.certificate)?.map(Arc::new);
        Ok(Renewer {
            config,
            client,
            store,
            anchors,
        })
    }

    /// Reads the trust anchors again (a file or directory changed, or SIGHUP with an unchanged
    /// config). Returns whether they changed; on error the running anchors stay.
    pub fn reload_anchors(&mut self) -> Result<bool, AnchorError> {
        let fresh = TrustAnchors::load(&self.config.certificate)?;
        let changed = match (&self.anchors, &fresh) {
            (Some(old), Some(new)) => !old.same_certificates(new),
            (None, None) => false,
            _ => true,
        };
        self.anchors = fresh.map(Arc::new);
        Ok(changed)
    }

    /// The configured trust anchors; `None` when none are configured.
    pub fn anchors(&self) -> Option<&TrustAnchors> {
        self.anchors.as_deref()
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

    /// A key from `keys`, [`Renewer::renew_prepared`], then the hooks, with the outcome (a failed key
    /// generation included) recorded in `state` (not saved). `installed` is called once the
    /// new set is live and before the first hook starts: the daemon tells systemd it is ready
    /// there, so that a hook that waits on a unit ordered after eit-certd (`systemctl restart
    /// tlshd`) never waits on eit-certd's own start job.
    pub async fn attempt(
        &self,
        keys: &mut KeySource,
        state: &mut State,
        installed: impl FnOnce(&Renewed),
    ) -> Result<AttemptOutcome, RenewError> {
        let (result, from_spare) = match keys.take(&self.config, &self.store).await {
            Ok(prepared) => {
                let on_disk = prepared.on_disk;
                (self.renew_prepared(prepared).await, on_disk)
            }
            Err(e) => (Err(e), false),
        };
        if from_spare && result.is_ok() {
            // Used once: its certificate is installed, so it is no longer a spare.
            let spare = Spare::new(self.store.dir());
            let _ = tokio::task::spawn_blocking(move || spare.remove()).await;
            tracing::debug!("the spare key is now the installed key; removed the spare");
        }
        let now = OffsetDateTime::now_utc();
        match result {
            Ok(renewed) => {
                let leaf = &renewed.verified.leaf;
                let t = &renewed.timings;
                let ms =
                    |d: Duration| u64::try_from(d.as_micros()).unwrap_or(u64::MAX) as f64 / 1000.0;
                tracing::debug!(
                    csr_ms = ms(t.csr),
                    request_ms = ms(t.request),
                    validation_ms = ms(t.validation),
                    install_ms = ms(t.install),
                    "renewal stages"
                );
                tracing::info!(
                    serial = %leaf.serial_hex,
                    not_after = %crate::text::rfc3339(leaf.not_after),
                    claimed_expires_at = %renewed.claimed_expires_at,
                    generation = %renewed.generation.dir.display(),
                    "installed a new certificate"
                );
                if renewed.verified.reordered {
                    tracing::warn!(
                        "the service sent the certificates out of order; installed them leaf first"
                    );
                }
                for warning in CaExpiry::from_verified(&renewed.verified).warnings(now) {
                    tracing::warn!("{warning}");
                }
                state.record_success(now, &leaf.serial_hex);
                installed(&renewed);
                let previous = renewed.previous.as_ref().map(|p| p.serial_hex.clone());
                let hook_env = HookEnv::new(
                    &renewed.generation.dir,
                    &renewed.verified.leaf,
                    previous.as_deref(),
                );
                // On disk before the first hook starts: a stop or a crash while hooks run must
                // not lose them (see `HooksOwed`).
                state.hooks_owed = HooksOwed::all(&leaf.serial_hex, previous, &self.config.hooks);
                if let Some(why) = &renewed.links_owed {
                    tracing::warn!(
                        "the new set is installed, but the [output.swanctl] links are not: {why}; \
                         retrying them with the hooks, without a new certificate"
                    );
                    crate::store::state::owe_links(&mut state.hooks_owed, &leaf.serial_hex);
                }
                if let Err(e) = state.save(self.store.dir()) {
                    tracing::warn!("cannot record the install in state.json: {e}");
                }
                let results =
                    hooks::run_owed(&self.config.hooks, &hook_env, state, |_| {}, |_, _| {}).await;
                self.prune_after(&renewed.generation).await;
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

    /// The pipeline without the install, for `check --online`: the certificate request and
    /// the validation for `prepared`, exactly as a renewal makes them; nothing is written.
    pub async fn dry_run(&self, prepared: Prepared) -> Result<Verified, RenewError> {
        let mut timings = Timings::default();
        let (verified, _) = self
            .issue(&prepared.key, &prepared.csr_pem, &mut timings)
            .await?;
        Ok(verified)
    }

    /// Certificate request and validation: the steps a renewal and a dry run share.
    async fn issue(
        &self,
        key: &PrivateKey,
        csr_pem: &str,
        timings: &mut Timings,
    ) -> Result<(Verified, crate::metadata::client::Issued), RenewError> {
        let mut lap = std::time::Instant::now();
        let issued = self
            .client
            .request_certificate(csr_pem, self.config.certificate.lifetime.0)
            .await?;
        timings.request = lap.elapsed();
        lap = std::time::Instant::now();
        // Signature checks are CPU work: off the runtime's thread, so that a stop is
        // answered while a response is examined.
        let verified = tokio::task::spawn_blocking({
            let certificates = issued.response.certificates.clone();
            let our_key = key.public_key_der()?;
            let anchors = self.anchors.clone();
            move || {
                validate::validate(
                    &certificates,
                    &our_key,
                    anchors.as_deref(),
                    OffsetDateTime::now_utc(),
                    validate::DEFAULT_SKEW,
                )
            }
        })
        .await
        .map_err(|e| RenewError::ValidationAborted(e.to_string()))??;
        timings.validation = lap.elapsed();
        if let Some(warning) =
            expiry_claim_mismatch(&issued.response.expires_at, verified.leaf.not_after)
        {
            tracing::warn!("{warning}");
        }
        Ok((verified, issued))
    }

    /// Removes generations past `output.keep` ([`Store::prune_after`]). Not part of
    /// [`Renewer::renew_prepared`]: the new set is live without it, and a renewal prunes only
    /// once its hooks have moved the consumers off the old files.
    pub async fn prune_after(&self, installed: &Generation) {
        let store = self.store.clone();
        let installed = installed.clone();
        let _ = tokio::task::spawn_blocking(move || store.prune_after(&installed)).await;
    }

    /// Requests a certificate for `prepared` (a key and its signed CSR) and installs it: the
    /// critical path is the round trip. Returns once the new set is live; pruning is left to
    /// the caller ([`Renewer::prune_after`]). The key is consumed: a key is used for one CSR
    /// only, and is wiped when the set is on disk (or the attempt failed).
    pub async fn renew_prepared(&self, prepared: Prepared) -> Result<Renewed, RenewError> {
        let Prepared { key, csr_pem, .. } = prepared;
        let mut timings = Timings::default();
        // A `current` that is not our symlink is refused before anything is requested, and so
        // is a swanctl path that is not ours.
        self.store.current_generation()?;
        let swanctl = crate::integrations::swanctl::Layout::from_config(&self.config);
        if let Some(layout) = &swanctl {
            layout.preflight()?;
            layout.writable()?;
        }
        // The set being replaced, for the hooks (`EIT_PREVIOUS_SERIAL`): its certificate only,
        // read before the request. A corrupt set is what a renewal repairs, so it is no reason
        // to stop here.
        let previous = self.store.current_leaf();
        let (verified, issued) = self.issue(&key, &csr_pem, &mut timings).await?;
        let store = self.store.clone();
        let (generation, install) = tokio::task::spawn_blocking({
            let verified = verified.clone();
            move || {
                let lap = std::time::Instant::now();
                let generation = store.install_set(&key, &verified)?;
                Ok::<_, StoreError>((generation, lap.elapsed()))
            }
        })
        .await
        .map_err(|e| {
            RenewError::Store(StoreError::Io {
                action: "finish installing into",
                path: self.store.dir().to_path_buf(),
                cause: std::io::Error::other(e.to_string()),
            })
        })??;
        let lap = std::time::Instant::now();
        // `current` has moved: the renewal has succeeded, whatever happens to the links now.
        // A failure (a path turned into a file in flight, a directory made read-only) is
        // owed and retried with the hooks, never answered with another certificate.
        let links_owed = match &swanctl {
            Some(layout) => match layout.link() {
                Ok(_) => None,
                Err(e) => Some(e.to_string()),
            },
            None => None,
        };
        timings.install = install + lap.elapsed();
        Ok(Renewed {
            generation,
            verified,
            previous,
            links_owed,
            claimed_expires_at: issued.response.expires_at,
            token_refreshed: issued.token_refreshed,
            timings,
        })
    }
}

/// Where the key (and CSR) for the next renewal comes from.
///
/// RSA-4096 generation takes seconds, so after each install the next key is generated ahead of
/// time on a low-priority thread, its CSR signed, and (with `certificate.spare_key`, the
/// default) kept on disk as the spare (see [`crate::store::spare`]), so that a restart finds it too.
/// A renewal takes, in order: the installed key (`certificate.reuse_key`), the key prepared in
/// memory if it is finished, the spare on disk, and otherwise a key generated now at normal
/// priority, one attempt per core, the first one finished winning. It never waits for the
/// idle-priority thread, which next to busy processes can take minutes.
pub struct KeySource {
    bits: u32,
    next: Option<tokio::sync::oneshot::Receiver<Result<Prepared, RenewError>>>,
}

impl KeySource {
    pub fn new(bits: u32) -> KeySource {
        KeySource { bits, next: None }
    }

    /// Starts preparing the next key and CSR in the background (and persisting them as the
    /// spare), unless keys are reused. A usable spare already on disk is taken as it is.
    pub fn prepare(&mut self, config: &Config, store: &Store) {
        if !Spare::enabled(config) {
            // Turned off: a spare left from before is a private key at rest that nothing
            // will use (and `status` says the spare is off).
            let spare = Spare::new(store.dir());
            if std::fs::symlink_metadata(spare.dir()).is_ok() {
                spare.remove();
                tracing::info!(dir = %spare.dir().display(), "certificate.spare_key is off: removed the spare key left on disk");
            }
        }
        if config.certificate.reuse_key || self.next.is_some() {
            return;
        }
        let (tx, rx) = tokio::sync::oneshot::channel();
        let config = config.clone();
        let spare = Spare::enabled(&config).then(|| Spare::new(store.dir()));
        let used = store.used_public_keys();
        let spawned = std::thread::Builder::new()
            .name("eit-keygen".into())
            .spawn(move || {
                // Below everything else on the machine: the key is not needed for a while.
                // SAFETY: setpriority on our own thread id has no memory-safety preconditions.
                // The raw syscall, not libc's gettid(): glibc has the wrapper only since 2.30,
                // and the portable build links against glibc 2.28 (docs/portable.md).
                unsafe {
                    let tid = nix::libc::syscall(nix::libc::SYS_gettid) as nix::libc::id_t;
                    nix::libc::setpriority(nix::libc::PRIO_PROCESS, tid, 19);
                }
                let _ = tx.send(prepare_next(&config, spare.as_ref(), &used));
                // The last work before a long wait: give back what it took.
                crate::footprint::trim();
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

    /// The key and CSR for a renewal that is due now.
    pub async fn take(&mut self, config: &Config, store: &Store) -> Result<Prepared, RenewError> {
        if config.certificate.reuse_key {
            if let Some(key) = installed_key(store) {
                tracing::debug!("reusing the installed key (certificate.reuse_key)");
                return Ok(Prepared::new(key, &config.certificate.subject)?);
            }
        }
        if let Some(mut rx) = self.next.take() {
            match rx.try_recv() {
                Ok(Ok(prepared)) => {
                    if let Some(p) = prepared.fit(config)? {
                        tracing::debug!(bits = self.bits, "using the pre-generated key");
                        return Ok(p);
                    }
                }
                Ok(Err(e)) => tracing::warn!("pre-generated key failed ({e}); generating again"),
                // Still being generated at idle priority, where a busy machine may leave it
                // for minutes: a due renewal does not wait for it (it finishes as the spare).
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {
                    tracing::debug!("the pre-generated key is not ready")
                }
                _ => {}
            }
        }
        if Spare::enabled(config) {
            let spare = Spare::new(store.dir());
            let used = store.used_public_keys();
            let owned = config.clone();
            let loaded = tokio::task::spawn_blocking(move || spare.load(&owned, &used))
                .await
                .map_err(|e| KeyError::Join(e.to_string()))?;
            match loaded {
                Ok(Some(p)) => {
                    tracing::info!(
                        fingerprint = %fingerprint(&p.key),
                        "using the spare key and CSR prepared on disk"
                    );
                    return Ok(p);
                }
                Ok(None) => {}
                Err(e) => tracing::warn!("{e}"),
            }
        }
        tracing::debug!(bits = self.bits, "generating a key");
        let key = PrivateKey::generate_racing(self.bits).await?;
        Ok(Prepared::new(key, &config.certificate.subject)?)
    }
}
/// Generates the next key, or takes the spare on disk when it is usable, and persists it as
/// the spare. Runs on the idle-priority thread.
fn prepare_next(
    config: &Config,
    spare: Option<&Spare>,
    used: &[Vec<u8>],
) -> Result<Prepared, RenewError> {
    if let Some(spare) = spare {
        match spare.load(config, used) {
            Ok(Some(p)) => {
                tracing::debug!("the spare on disk is ready");
                return Ok(p);
            }
            Ok(None) => {}
            Err(e) => tracing::warn!("{e}"),
        }
    }
    let bits = config.certificate.key_bits.0;
    let mut prepared = Prepared::new(PrivateKey::generate(bits)?, &config.certificate.subject)?;
    if let Some(spare) = spare {
        match spare.save(&prepared) {
            Ok(()) => {
                prepared.on_disk = true;
                tracing::info!(
                    fingerprint = %fingerprint(&prepared.key),
                    "the spare key and CSR for the next renewal are ready on disk"
                );
            }
            Err(e) => tracing::warn!("cannot keep the spare key on disk ({e}); it stays in memory"),
        }
    } else {
        tracing::debug!(bits, "the next key is ready (generated ahead of time)");
    }
    Ok(prepared)
}

/// SHA-256 of the public key (SubjectPublicKeyInfo DER), hex: names a key in the log.
pub fn fingerprint(key: &PrivateKey) -> String {
    key.public_key_der()
        .map(|der| crate::text::hex_lower(&openssl::sha::sha256(&der)))
        .unwrap_or_default()
}

/// The installed key, when it parses and matches the installed certificate.
fn installed_key(store: &Store) -> Option<PrivateKey> {
    let set = store.read_current().ok().flatten()?;
    if !set.key_matches() {
        return None;
    }
    let pem = crate::files::read_secret(
        &set.dir.join(crate::store::KEY_FILE),
        crate::files::Links::Refuse,
        crate::files::limit::KEY,
    )
    .ok()?;
    PrivateKey::from_pem(&pem).ok()
}

/// How far the service's `expires_at` may stray from the certificate's notAfter before it is
/// worth a warning (the service writes whole seconds, as certificates do).
const EXPIRY_CLAIM_TOLERANCE: time::Duration = time::Duration::seconds(60);

/// The certificate's own notAfter rules; the JSON `expires_at` is only logged. When the two
/// disagree, the warning says which one eit-certd goes by, so that someone reading the
/// service's JSON is not misled about when the certificate expires or is renewed.
fn expiry_claim_mismatch(claimed: &str, not_after: OffsetDateTime) -> Option<String> {
    let actual = crate::text::rfc3339(not_after);
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
    use std::path::PathBuf;
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
            cause: std::io::Error::other("disk full"),
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
