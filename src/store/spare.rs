//! The spare: the next certificate's key and its signed CSR, prepared after each install and
//! kept on disk, so that a start over an expired set (after a reboot, a stop/start, a crash)
//! renews with one round trip instead of waiting for an RSA prime search.
//!
//! ```text
//! output.dir/spare/key.pem     0600, PKCS#8, as the installed key.pem
//!                  csr.pem     the CSR for that key, signed
//!                  spare.json  key bits and subject the CSR was made for
//! ```
//!
//! Every file is written atomically with fsync. A spare is used for one certificate: it is
//! discarded (overwritten, then unlinked) once that certificate is installed, and a spare whose
//! key is already the installed key is refused. What is read back is not trusted: a file that
//! is a symlink, not a regular file, not owned by us or readable by others, or a key and CSR
//! that do not belong together, is refused and the spare removed, so a fresh one is made.
//! Only the holder of the output directory's `.lock` touches the spare.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use openssl::x509::X509Req;
use serde::{Deserialize, Serialize};

use crate::config::{Config, Subject};
use crate::files::{self, limit, Links, ReadError};
use crate::pki::csr::{self, CsrError};
use crate::pki::{KeyError, PrivateKey};
use crate::store::StoreError;

/// The spare's directory under `output.dir`.
pub const SPARE_DIR: &str = "spare";
const KEY: &str = "key.pem";
const CSR: &str = "csr.pem";
const META: &str = "spare.json";
/// `spare.json` is a few dozen bytes.
const META_LIMIT: u64 = 64 * 1024;

/// Writers in this process (the background preparer and the renewal) do not interleave: the
/// three files always come from one spare.
static WRITING: Mutex<()> = Mutex::new(());

#[derive(Debug, thiserror::Error)]
pub enum SpareError {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Csr(#[from] CsrError),
    #[error("{} is {problem}; refusing the spare key (a new one is made)", path.display())]
    Unsafe { path: PathBuf, problem: String },
    #[error("{} is not a usable spare ({problem}); a new one is made", path.display())]
    Invalid { path: PathBuf, problem: String },
}

/// A key with its signed CSR, ready to be sent.
pub struct Prepared {
    pub key: PrivateKey,
    /// The CSR for `key`, PEM.
    pub csr_pem: String,
    /// The subject `csr_pem` carries, as (attribute, value) pairs.
    pub subject: Vec<(String, String)>,
    /// This key is (also) the spare on disk, which must go once its certificate is installed.
    pub on_disk: bool,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared")
            .field("key", &self.key)
            .field("subject", &self.subject)
            .field("on_disk", &self.on_disk)
            .finish()
    }
}

impl Prepared {
    /// Signs a CSR for `key` with the configured subject.
    pub fn new(key: PrivateKey, subject: &Subject) -> Result<Prepared, CsrError> {
        let csr_pem = csr::build(&key, subject)?;
        Ok(Prepared {
            key,
            csr_pem,
            subject: subject_pairs(subject),
            on_disk: false,
        })
    }

    /// This spare, fitted to `config`: `None` when the key size changed (a new key is needed);
    /// a CSR signed again when only the subject changed.
    pub fn fit(mut self, config: &Config) -> Result<Option<Prepared>, CsrError> {
        if self.key.bits() != config.certificate.key_bits.0 {
            return Ok(None);
        }
        let want = subject_pairs(&config.certificate.subject);
        if self.subject != want {
            tracing::debug!("the spare's CSR has another subject; signing a new one");
            self.csr_pem = csr::build(&self.key, &config.certificate.subject)?;
            self.subject = want;
        }
        Ok(Some(self))
    }
}

/// The (attribute, value) pairs of a CSR's subject, as [`subject_pairs`] writes them; an entry
/// that is not text reads as a value no configured subject holds.
fn csr_subject(req: &openssl::x509::X509ReqRef) -> Vec<(String, String)> {
    req.subject_name()
        .entries()
        .map(|e| {
            let attr = e.object().nid().short_name().unwrap_or("?").to_string();
            let value = e
                .data()
                .to_string()
                .unwrap_or_else(|_| "\u{fffd}".to_string());
            (attr, value)
        })
        .collect()
}

fn subject_pairs(subject: &Subject) -> Vec<(String, String)> {
    subject
        .entries()
        .iter()
        .map(|(a, v)| (a.short_name().to_string(), v.clone()))
        .collect()
}

#[derive(Debug, Serialize, Deserialize)]
struct Meta {
    key_bits: u32,
    subject: Vec<(String, String)>,
}

/// Whether a spare is on disk, for `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SpareState {
    Ready,
    Absent,
    Disabled,
}

/// The spare's files in one output directory.
#[derive(Debug, Clone)]
pub struct Spare {
    dir: PathBuf,
}

impl Spare {
    /// The spare of the store at `output_dir`.
    pub fn new(output_dir: &Path) -> Spare {
        Spare {
            dir: output_dir.join(SPARE_DIR),
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether `config` keeps a spare: `certificate.spare_key`, and keys are not reused.
    pub fn enabled(config: &Config) -> bool {
        config.certificate.spare_key && !config.certificate.reuse_key
    }

    /// Whether a spare is on disk (not checked in depth: that happens when it is used).
    pub fn state(&self, config: &Config) -> SpareState {
        if !Spare::enabled(config) {
            return SpareState::Disabled;
        }
        let all = [KEY, CSR, META]
            .iter()
            .all(|n| fs::symlink_metadata(self.dir.join(n)).is_ok_and(|m| m.file_type().is_file()));
        if all {
            SpareState::Ready
        } else {
            SpareState::Absent
        }
    }

    /// Persists `prepared` as the spare (replacing any other).
    pub fn save(&self, prepared: &Prepared) -> Result<(), SpareError> {
        let _writing = WRITING.lock().unwrap_or_else(|e| e.into_inner());
        self.check_dir()?;
        match fs::DirBuilder::new().mode(0o700).create(&self.dir) {
            Ok(()) => {
                let parent = self.dir.parent().unwrap_or(Path::new("."));
                crate::files::fsync_dir(parent).map_err(|cause| StoreError::Io {
                    action: "fsync",
                    path: parent.to_path_buf(),
                    cause,
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(StoreError::Io {
                    action: "create",
                    path: self.dir.clone(),
                    cause: e,
                }
                .into())
            }
        }
        let meta = serde_json::to_vec_pretty(&Meta {
            key_bits: prepared.key.bits(),
            subject: prepared.subject.clone(),
        })
        .map_err(|e| SpareError::Invalid {
            path: self.dir.join(META),
            problem: e.to_string(),
        })?;
        // Temporary files a crash left mid-write (one may hold a key) go first.
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                if crate::files::is_temporary(&entry.file_name()) {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
        // The key last: a spare is complete only once its key is there (see `state`), and a
        // key beside another spare's CSR is refused on load.
        let _ = fs::remove_file(self.dir.join(KEY));
        crate::files::write_atomic(&self.dir.join(CSR), prepared.csr_pem.as_bytes(), 0o600)
            .map_err(StoreError::from)?;
        crate::files::write_atomic(&self.dir.join(META), &meta, 0o600).map_err(StoreError::from)?;
        crate::files::write_atomic(&self.dir.join(KEY), prepared.key.pem(), 0o600)
            .map_err(StoreError::from)?;
        Ok(())
    }

    /// The spare, checked and fitted to `config`; `Ok(None)` when there is none. A spare that
    /// fails a check is removed and the error returned (the caller logs it and makes a key).
    pub fn load(
        &self,
        config: &Config,
        used_keys: &[Vec<u8>],
    ) -> Result<Option<Prepared>, SpareError> {
        let _writing = WRITING.lock().unwrap_or_else(|e| e.into_inner());
        let result = self.load_checked(config, used_keys);
        if result.is_err() {
            self.remove_locked();
        }
        result
    }

    fn load_checked(
        &self,
        config: &Config,
        used_keys: &[Vec<u8>],
    ) -> Result<Option<Prepared>, SpareError> {
        self.check_dir()?;
        let key_path = self.dir.join(KEY);
        let key_pem = match read_private(&key_path) {
            Ok(k) => k,
            Err(SpareError::Read(e)) if e.is_not_found() => return Ok(None),
            Err(e) => return Err(e),
        };
        let key = PrivateKey::from_pem(&key_pem)?;
        let invalid = |name: &str, problem: &str| SpareError::Invalid {
            path: self.dir.join(name),
            problem: problem.to_string(),
        };
        let public = key.public_key_der()?;
        // Any generation's key on disk, not only the installed one: a key is used for one
        // certificate only.
        if used_keys.contains(&public) {
            return Err(invalid(
                KEY,
                "it is the key of a certificate already installed, used once",
            ));
        }
        let csr_pem =
            files::read_to_string(&self.dir.join(CSR), Links::Refuse, limit::CERTIFICATES)?;
        let req = X509Req::from_pem(csr_pem.as_bytes())
            .map_err(|e| invalid(CSR, &format!("not a CSR: {e}")))?;
        let csr_key = req
            .public_key()
            .map_err(|e| invalid(CSR, &format!("no public key: {e}")))?;
        if csr_key.public_key_to_der().ok().as_deref() != Some(public.as_slice())
            || !req.verify(&csr_key).unwrap_or(false)
        {
            return Err(invalid(CSR, "it is not signed by the spare key"));
        }
        let meta_bytes = files::read(&self.dir.join(META), Links::Refuse, META_LIMIT)?;
        let meta: Meta =
            serde_json::from_slice(&meta_bytes).map_err(|e| invalid(META, &e.to_string()))?;
        if meta.key_bits != key.bits() {
            return Err(invalid(META, "its key_bits are not the key's"));
        }
        // The subject the CSR really asks for, not the one spare.json claims: the certificate
        // carries the CSR's.
        if csr_subject(&req) != meta.subject {
            return Err(invalid(CSR, "its subject is not the one spare.json names"));
        }
        let prepared = Prepared {
            key,
            csr_pem,
            subject: meta.subject,
            on_disk: true,
        };
        match prepared.fit(config)? {
            Some(p) => Ok(Some(p)),
            None => Err(invalid(
                KEY,
                "the key size is no longer certificate.key_bits",
            )),
        }
    }

    /// A spare directory that is not our own 0700 directory is not used.
    fn check_dir(&self) -> Result<(), SpareError> {
        let meta = match fs::symlink_metadata(&self.dir) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => {
                return Err(StoreError::Io {
                    action: "inspect",
                    path: self.dir.clone(),
                    cause: e,
                }
                .into())
            }
        };
        let problem = if !meta.file_type().is_dir() {
            Some("not a directory".to_string())
        } else if meta.uid() != nix::unistd::geteuid().as_raw() {
            Some(format!("owned by uid {}, not by us", meta.uid()))
        } else if meta.mode() & 0o077 != 0 {
            Some(format!("mode {:o}, open to others", meta.mode() & 0o777))
        } else {
            None
        };
        match problem {
            Some(problem) => Err(SpareError::Unsafe {
                path: self.dir.clone(),
                problem,
            }),
            None => Ok(()),
        }
    }

    /// Discards the spare: the key is overwritten (best effort: a copy-on-write or journalling
    /// file system may keep the old blocks) and every file unlinked.
    pub fn remove(&self) {
        let _writing = WRITING.lock().unwrap_or_else(|e| e.into_inner());
        self.remove_locked();
    }

    fn remove_locked(&self) {
        let Ok(meta) = fs::symlink_metadata(&self.dir) else {
            return;
        };
        if !meta.file_type().is_dir() {
            // Someone else's: unlinked, never followed.
            let _ = fs::remove_file(&self.dir);
            return;
        }
        let key = self.dir.join(KEY);
        // Overwritten only when it is ours alone: a planted hard link to another file would
        // have that file zeroed. Whatever it is, it is unlinked below.
        if let Ok(mut f) = crate::files::open_ours(&key, true) {
            let len = f.metadata().map(|m| m.len()).unwrap_or(0) as usize;
            let _ = f.write_all(&vec![0u8; len]);
            let _ = f.sync_all();
        }
        // Anything else in there (a planted FIFO, a foreign file) goes too: the directory is
        // ours and a new spare starts from nothing.
        let _ = fs::remove_dir_all(&self.dir);
        if let Some(parent) = self.dir.parent() {
            let _ = crate::files::fsync_dir(parent);
        }
    }
}

/// Reads the spare key: a regular file, ours, 0600 or tighter, not a symlink.
fn read_private(path: &Path) -> Result<zeroize::Zeroizing<Vec<u8>>, SpareError> {
    let file = files::open_regular(path, Links::Refuse)?;
    let meta = file.metadata().map_err(|cause| ReadError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    if meta.uid() != nix::unistd::geteuid().as_raw() {
        return Err(SpareError::Unsafe {
            path: path.to_path_buf(),
            problem: format!("owned by uid {}, not by us", meta.uid()),
        });
    }
    if meta.mode() & 0o077 != 0 {
        return Err(SpareError::Unsafe {
            path: path.to_path_buf(),
            problem: format!("mode {:o}, readable by others", meta.mode() & 0o777),
        });
    }
    if meta.nlink() > 1 {
        return Err(SpareError::Unsafe {
            path: path.to_path_buf(),
            problem: format!(
                "{} hard links: another name reaches the same key",
                meta.nlink()
            ),
        });
    }
    Ok(files::read_secret_from(file, path, limit::KEY)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn config(bits: u32, subject: &str) -> Config {
        Config::parse(
            &format!("[certificate]\nkey_bits = {bits}\nsubject = {subject}\n"),
            Path::new("t.toml"),
        )
        .unwrap()
    }

    fn saved(dir: &Path, c: &Config) -> (Spare, Vec<u8>) {
        let spare = Spare::new(dir);
        let key = PrivateKey::generate(2048).unwrap();
        let public = key.public_key_der().unwrap();
        spare
            .save(&Prepared::new(key, &c.certificate.subject).unwrap())
            .unwrap();
        (spare, public)
    }

    #[test]
    fn a_saved_spare_loads_back_with_its_key_and_private_modes() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(2048, "{ C = \"US\" }");
        let (spare, public) = saved(tmp.path(), &c);
        assert_eq!(spare.state(&c), SpareState::Ready);
        for name in [KEY, CSR, META] {
            let mode = fs::metadata(spare.dir().join(name))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{name}");
        }
        let p = spare.load(&c, &[]).unwrap().unwrap();
        assert!(p.on_disk);
        assert_eq!(p.key.public_key_der().unwrap(), public);
        // Loading does not consume it: only an install does.
        assert!(spare.load(&c, &[]).unwrap().is_some());
        spare.remove();
        assert!(!spare.dir().exists());
        assert!(spare.load(&c, &[]).unwrap().is_none());
        assert_eq!(spare.state(&c), SpareState::Absent);
    }

    #[test]
    fn a_changed_subject_gets_a_new_csr_and_a_changed_size_a_new_key() {
        let tmp = tempfile::tempdir().unwrap();
        let (spare, public) = saved(tmp.path(), &config(2048, "{ C = \"US\" }"));
        let p = spare
            .load(&config(2048, "{ C = \"DE\", O = \"Acme\" }"), &[])
            .unwrap()
            .unwrap();
        assert_eq!(p.key.public_key_der().unwrap(), public);
        let req = X509Req::from_pem(p.csr_pem.as_bytes()).unwrap();
        let o: Vec<String> = req
            .subject_name()
            .entries()
            .map(|e| e.data().to_string().unwrap())
            .collect();
        assert_eq!(o, ["DE", "Acme"]);
        let e = spare
            .load(&config(3072, "{ C = \"US\" }"), &[])
            .unwrap_err();
        assert!(e.to_string().contains("key_bits"), "{e}");
        assert!(!spare.dir().exists(), "a refused spare is removed");
    }

    #[test]
    fn the_installed_key_is_never_a_spare() {
        let tmp = tempfile::tempdir().unwrap();
        let c = config(2048, "{ C = \"US\" }");
        let (spare, public) = saved(tmp.path(), &c);
        let e = spare.load(&c, &[public]).unwrap_err();
        assert!(e.to_string().contains("already installed"), "{e}");
        assert!(!spare.dir().exists());
    }

    #[test]
    fn loose_modes_links_and_mismatched_csrs_are_refused() {
        let c = config(2048, "{ C = \"US\" }");
        // Loose key mode.
        let tmp = tempfile::tempdir().unwrap();
        let (spare, _) = saved(tmp.path(), &c);
        fs::set_permissions(spare.dir().join(KEY), fs::Permissions::from_mode(0o644)).unwrap();
        let e = spare.load(&c, &[]).unwrap_err();
        assert!(matches!(e, SpareError::Unsafe { .. }), "{e}");
        // A symlink in place of the key.
        let (spare, _) = saved(tmp.path(), &c);
        let elsewhere = tmp.path().join("elsewhere.pem");
        fs::rename(spare.dir().join(KEY), &elsewhere).unwrap();
        std::os::unix::fs::symlink(&elsewhere, spare.dir().join(KEY)).unwrap();
        let e = spare.load(&c, &[]).unwrap_err();
        assert!(
            matches!(e, SpareError::Read(ReadError::Symlink { .. })),
            "{e}"
        );
        assert!(elsewhere.exists(), "the link's target is not touched");
        // Another spare's CSR beside this key.
        let other = tempfile::tempdir().unwrap();
        let (other_spare, _) = saved(other.path(), &c);
        let (spare, _) = saved(tmp.path(), &c);
        fs::copy(other_spare.dir().join(CSR), spare.dir().join(CSR)).unwrap();
        let e = spare.load(&c, &[]).unwrap_err();
        assert!(e.to_string().contains("not signed by the spare key"), "{e}");
        // A spare directory open to others.
        let (spare, _) = saved(tmp.path(), &c);
        fs::set_permissions(spare.dir(), fs::Permissions::from_mode(0o755)).unwrap();
        assert!(matches!(
            spare.load(&c, &[]).unwrap_err(),
            SpareError::Unsafe { .. }
        ));
    }
}
