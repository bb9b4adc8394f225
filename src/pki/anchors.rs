//! The trust anchors a chain must end at: `certificate.trust_anchor` and
//! `certificate.trust_anchors`, each a file of PEM certificates (any number) or a directory.
//!
//! A directory contributes every `*.pem` and `*.crt` file directly in it (subdirectories are
//! not read, and a symbolic link inside it is skipped with a warning: whoever can plant one
//! could point it at any file). A path named in the configuration itself is followed, so a
//! link the administrator made works. Every file must be a regular file of at most
//! [`MAX_FILE_BYTES`]; a directory may hold at most [`MAX_FILES_PER_DIR`] such files, and
//! [`MAX_ANCHORS`] certificates are loaded in all.
//!
//! Anchors are matched by signature (see [`crate::pki::link`]), never by name alone. An anchor
//! that has already expired is ignored with a warning at load; when none is left, loading fails.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::link::{self, CanonicalName};
use super::validate::{hex_lower, rfc3339};
use crate::config::CertificateConfig;

/// Largest anchor file read (IBM's bundle of every region is about 30 KiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most `*.pem`/`*.crt` files read from one directory.
pub const MAX_FILES_PER_DIR: usize = 256;
/// Most anchors loaded in all.
pub const MAX_ANCHORS: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum AnchorError {
    #[error("{key}: cannot read {}: {source}; fix the path or remove it", path.display())]
    Read {
        key: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{key}: {} is {what}, not a regular file or a directory", path.display())]
    NotRegular {
        key: String,
        path: PathBuf,
        what: &'static str,
    },
    #[error(
        "{key}: {} is larger than {MAX_FILE_BYTES} bytes; a trust anchor file holds a few CA \
         certificates", path.display()
    )]
    TooLarge { key: String, path: PathBuf },
    #[error(
        "{key}: {} holds more than {MAX_FILES_PER_DIR} *.pem/*.crt files; point it at a \
         directory of CA certificates only", path.display()
    )]
    TooManyFiles { key: String, path: PathBuf },
    #[error("{key}: more than {MAX_ANCHORS} trust anchors in all; pin fewer CAs")]
    TooManyAnchors { key: String },
    #[error(
        "{key}: {} holds no certificate (no -----BEGIN CERTIFICATE----- block); point it at the \
         PEM CA certificates the chain must end at", path.display()
    )]
    NoCertificate { key: String, path: PathBuf },
    #[error("{key}: certificate {number} in {} is not readable: {reason}", path.display())]
    BadCertificate {
        key: String,
        path: PathBuf,
        number: usize,
        reason: String,
    },
    #[error("{key}: the directory {} holds no *.pem or *.crt file", path.display())]
    EmptyDirectory { key: String, path: PathBuf },
    #[error(
        "no usable trust anchor: {}; install current CA certificates (e.g. a newer release of \
         IBM's mount helper)",
        list(ignored)
    )]
    NoneUsable { ignored: Vec<AnchorRef> },
}

impl AnchorError {
    /// The configuration key the error is about.
    pub fn key(&self) -> &str {
        match self {
            AnchorError::Read { key, .. }
            | AnchorError::NotRegular { key, .. }
            | AnchorError::TooLarge { key, .. }
            | AnchorError::TooManyFiles { key, .. }
            | AnchorError::TooManyAnchors { key }
            | AnchorError::NoCertificate { key, .. }
            | AnchorError::BadCertificate { key, .. }
            | AnchorError::EmptyDirectory { key, .. } => key,
            AnchorError::NoneUsable { .. } => "certificate.trust_anchor",
        }
    }
}

/// One anchor, named the way messages name it: by fingerprint and file (names are shared).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnchorRef {
    /// Lower-case hex SHA-256 of the certificate's DER.
    pub fingerprint_sha256: String,
    /// The file it was read from.
    pub source: PathBuf,
    /// Why it is mentioned, when there is more to say ("expired at ...").
    pub note: Option<String>,
}

impl std::fmt::Display for AnchorRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sha256 {} from {}",
            self.fingerprint_sha256,
            self.source.display()
        )?;
        if let Some(note) = &self.note {
            write!(f, " ({note})")?;
        }
        Ok(())
    }
}

/// "a; b; c"
pub(crate) fn list(refs: &[AnchorRef]) -> String {
    refs.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("; ")
}

/// A configured CA certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Anchor {
    der: Vec<u8>,
    name: CanonicalName,
    ski: Option<Vec<u8>>,
    /// Its subject, on one line.
    pub subject: String,
    /// Lower-case hex SHA-256 of its DER.
    pub fingerprint_sha256: String,
    pub not_before: OffsetDateTime,
    pub not_after: OffsetDateTime,
    /// The file it was read from.
    pub source: PathBuf,
}

impl Anchor {
    fn from_der(der: Vec<u8>, source: &Path) -> Result<Anchor, String> {
        let (rest, cert) = X509Certificate::from_der(&der).map_err(|e| e.to_string())?;
        if !rest.is_empty() {
            return Err("trailing bytes after the certificate".into());
        }
        let anchor = Anchor {
            name: CanonicalName::of(cert.subject()),
            ski: link::subject_key_id(&cert).map(<[u8]>::to_vec),
            subject: crate::text::one_line(&cert.subject().to_string()),
            fingerprint_sha256: hex_lower(&openssl::sha::sha256(&der)),
            not_before: cert.validity().not_before.to_datetime(),
            not_after: cert.validity().not_after.to_datetime(),
            source: source.to_path_buf(),
            der: Vec::new(),
        };
        Ok(Anchor { der, ..anchor })
    }

    /// The certificate, DER.
    pub fn der(&self) -> &[u8] {
        &self.der
    }

    /// The parsed certificate (it parsed at load, so this cannot fail in practice).
    pub fn parsed(&self) -> Option<X509Certificate<'_>> {
        X509Certificate::from_der(&self.der).ok().map(|(_, c)| c)
    }

    pub fn reference(&self, note: Option<String>) -> AnchorRef {
        AnchorRef {
            fingerprint_sha256: self.fingerprint_sha256.clone(),
            source: self.source.clone(),
            note,
        }
    }
}

/// Every usable anchor, and those ignored at load (for the messages).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustAnchors {
    anchors: Vec<Anchor>,
    ignored: Vec<(CanonicalName, AnchorRef)>,
    /// Symbolic links found in anchor directories, not followed.
    skipped: Vec<PathBuf>,
}

impl TrustAnchors {
    /// Reads the configured anchors, logging each one it ignores. `Ok(None)`: none configured.
    pub fn load(config: &CertificateConfig) -> Result<Option<TrustAnchors>, AnchorError> {
        let loaded = TrustAnchors::load_at(config, OffsetDateTime::now_utc())?;
        if let Some(anchors) = &loaded {
            for (_, ignored) in &anchors.ignored {
                tracing::warn!("ignoring trust anchor {ignored}");
            }
            for link in &anchors.skipped {
                tracing::warn!(
                    "ignoring {}: a symbolic link inside a trust anchor directory is not \
                     followed; copy the file in, or list it in certificate.trust_anchors",
                    link.display()
                );
            }
            tracing::debug!(count = anchors.anchors.len(), "trust anchors loaded");
        }
        Ok(loaded)
    }

    /// [`TrustAnchors::load`] at `now`, without logging.
    pub fn load_at(
        config: &CertificateConfig,
        now: OffsetDateTime,
    ) -> Result<Option<TrustAnchors>, AnchorError> {
        let paths = configured(config);
        if paths.is_empty() {
            return Ok(None);
        }
        let mut all = TrustAnchors::default();
        for (key, path) in paths {
            read_path(&key, path, &mut all)?;
        }
        let (usable, expired): (Vec<Anchor>, Vec<Anchor>) =
            all.anchors.into_iter().partition(|a| now < a.not_after);
        all.ignored.extend(expired.into_iter().map(|a| {
            let note = format!("{}, expired at {}", a.subject, rfc3339(a.not_after));
            (a.name.clone(), a.reference(Some(note)))
        }));
        if usable.is_empty() {
            return Err(AnchorError::NoneUsable {
                ignored: all.ignored.into_iter().map(|(_, r)| r).collect(),
            });
        }
        Ok(Some(TrustAnchors {
            anchors: usable,
            ..all
        }))
    }

    /// Every certificate in `pem` (any number; at least one), read from `source`. Nothing is
    /// filtered out: validation judges each anchor it uses.
    pub fn from_pem(pem: &[u8], source: &Path) -> Result<TrustAnchors, AnchorError> {
        let mut all = TrustAnchors::default();
        add_file("anchors", source, pem, &mut all)?;
        Ok(all)
    }

    /// The usable anchors, in the order they were read.
    pub fn anchors(&self) -> &[Anchor] {
        &self.anchors
    }

    /// Anchors ignored at load, with the reason.
    pub fn ignored(&self) -> impl Iterator<Item = &AnchorRef> {
        self.ignored.iter().map(|(_, r)| r)
    }

    /// Symbolic links in anchor directories that were not followed.
    pub fn skipped_links(&self) -> &[PathBuf] {
        &self.skipped
    }

    /// Same certificates (in any order) as `other`: a reload that changes nothing.
    pub fn same_certificates(&self, other: &TrustAnchors) -> bool {
        let mut a: Vec<&str> = self
            .anchors
            .iter()
            .map(|x| x.fingerprint_sha256.as_str())
            .collect();
        let mut b: Vec<&str> = other
            .anchors
            .iter()
            .map(|x| x.fingerprint_sha256.as_str())
            .collect();
        a.sort_unstable();
        b.sort_unstable();
        a == b
    }

    /// The anchor whose DER is exactly `der`.
    pub fn find_der(&self, der: &[u8]) -> Option<&Anchor> {
        self.anchors.iter().find(|a| a.der == der)
    }

    /// Anchors that could have issued `child`: subject is `child`'s issuer and the key
    /// identifiers do not contradict each other. The signature is for the caller to check.
    pub fn candidates<'s>(&'s self, child: &X509Certificate<'_>) -> Vec<&'s Anchor> {
        let issuer = CanonicalName::of(child.issuer());
        self.anchors
            .iter()
            .filter(|a| a.name == issuer && link::key_ids_fit(child, a.ski.as_deref()))
            .collect()
    }

    /// Every anchor named `child`'s issuer, whatever its key identifier.
    pub fn named_as_issuer_of<'s>(&'s self, child: &X509Certificate<'_>) -> Vec<&'s Anchor> {
        let issuer = CanonicalName::of(child.issuer());
        self.anchors.iter().filter(|a| a.name == issuer).collect()
    }

    /// Ignored anchors named `child`'s issuer.
    pub fn ignored_named_as_issuer_of(&self, child: &X509Certificate<'_>) -> Vec<AnchorRef> {
        let issuer = CanonicalName::of(child.issuer());
        self.ignored
            .iter()
            .filter(|(n, _)| *n == issuer)
            .map(|(_, r)| r.clone())
            .collect()
    }

    /// The anchor that signed `cert` (or is `cert`), checked the way validation matches one.
    pub fn issuer_of(&self, cert: &X509Certificate<'_>) -> Option<&Anchor> {
        if let Some(a) = self.find_der(cert.as_raw()) {
            return Some(a);
        }
        self.candidates(cert).into_iter().find(|a| {
            a.parsed().is_some_and(|issuer| {
                super::policy::check_key(issuer.public_key()).is_ok()
                    && link::signed_by(cert, &issuer)
            })
        })
    }
}

/// The configured paths with the key each comes from.
fn configured(config: &CertificateConfig) -> Vec<(String, &Path)> {
    let mut paths = Vec::new();
    if let Some(p) = &config.trust_anchor {
        paths.push(("certificate.trust_anchor".to_string(), p.as_path()));
    }
    for (i, p) in config.trust_anchors.iter().enumerate() {
        paths.push((format!("certificate.trust_anchors[{i}]"), p.as_path()));
    }
    paths
}

/// Directories whose changes can change the anchors: each configured directory, and the one
/// holding each configured file (a file is usually replaced by renaming a new one over it).
pub fn watch_dirs(config: &CertificateConfig) -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    for (_, path) in configured(config) {
        let dir = if path.is_dir() {
            path.to_path_buf()
        } else {
            match path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
                _ => PathBuf::from("."),
            }
        };
        if !dirs.contains(&dir) {
            dirs.push(dir);
        }
    }
    dirs
}

/// Whether a file-system event on `path` may have changed the anchors.
pub fn is_anchor_path(config: &CertificateConfig, path: &Path) -> bool {
    configured(config)
        .into_iter()
        .any(|(_, p)| path == p || (path.parent() == Some(p) && has_anchor_extension(path)))
}

fn has_anchor_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("pem") || e.eq_ignore_ascii_case("crt"))
}

fn read_path(key: &str, path: &Path, into: &mut TrustAnchors) -> Result<(), AnchorError> {
    let read_error = |source| AnchorError::Read {
        key: key.to_string(),
        path: path.to_path_buf(),
        source,
    };
    // The configured path itself is followed: the administrator named it.
    let meta = std::fs::metadata(path).map_err(read_error)?;
    if meta.is_dir() {
        return read_dir(key, path, into);
    }
    match read_capped(key, path, false) {
        Ok(bytes) => add_file(key, path, &bytes, into),
        Err(Skipped::Error(e)) => Err(e),
        // Only directory entries are skipped.
        Err(Skipped::Link | Skipped::Directory) => Err(AnchorError::NotRegular {
            key: key.to_string(),
            path: path.to_path_buf(),
            what: "not a regular file",
        }),
    }
}

fn read_dir(key: &str, dir: &Path, into: &mut TrustAnchors) -> Result<(), AnchorError> {
    let read_error = |source| AnchorError::Read {
        key: key.to_string(),
        path: dir.to_path_buf(),
        source,
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        if !has_anchor_extension(&path) {
            continue;
        }
        if files.len() == MAX_FILES_PER_DIR {
            return Err(AnchorError::TooManyFiles {
                key: key.to_string(),
                path: dir.to_path_buf(),
            });
        }
        files.push(path);
    }
    if files.is_empty() {
        return Err(AnchorError::EmptyDirectory {
            key: key.to_string(),
            path: dir.to_path_buf(),
        });
    }
    files.sort();
    for path in files {
        match read_capped(key, &path, true) {
            Ok(bytes) => add_file(key, &path, &bytes, into)?,
            Err(Skipped::Link) => into.skipped.push(path),
            Err(Skipped::Directory) => {}
            Err(Skipped::Error(e)) => return Err(e),
        }
    }
    Ok(())
}

/// Why a file was not read.
enum Skipped {
    /// A symbolic link inside a directory.
    Link,
    /// A directory inside a directory.
    Directory,
    Error(AnchorError),
}

/// Reads a regular file of at most [`MAX_FILE_BYTES`]. Opened non-blocking (a FIFO cannot
/// hang us) and, for a directory `entry`, without following a symbolic link; the type is
/// checked on the open file, so nothing can be swapped in between the check and the read.
fn read_capped(key: &str, path: &Path, entry: bool) -> Result<Vec<u8>, Skipped> {
    let read_error = |source| {
        Skipped::Error(AnchorError::Read {
            key: key.to_string(),
            path: path.to_path_buf(),
            source,
        })
    };
    let mut flags = nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC;
    if entry {
        flags |= nix::libc::O_NOFOLLOW;
    }
    let file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
    {
        Ok(f) => f,
        Err(e) if entry && e.raw_os_error() == Some(nix::libc::ELOOP) => return Err(Skipped::Link),
        Err(e) => return Err(read_error(e)),
    };
    let kind = file.metadata().map_err(read_error)?.file_type();
    if kind.is_dir() && entry {
        return Err(Skipped::Directory);
    }
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_socket() {
            "a socket"
        } else if kind.is_char_device() || kind.is_block_device() {
            "a device"
        } else {
            "not a regular file"
        };
        return Err(Skipped::Error(AnchorError::NotRegular {
            key: key.to_string(),
            path: path.to_path_buf(),
            what,
        }));
    }
    let mut bytes = Vec::new();
    (&file as &File)
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(Skipped::Error(AnchorError::TooLarge {
            key: key.to_string(),
            path: path.to_path_buf(),
        }));
    }
    Ok(bytes)
}

/// Adds every certificate of one file: PEM blocks labelled CERTIFICATE (others are skipped),
/// or, without any PEM block, the whole file as one DER certificate.
fn add_file(
    key: &str,
    path: &Path,
    bytes: &[u8],
    into: &mut TrustAnchors,
) -> Result<(), AnchorError> {
    let bad = |number, reason: String| AnchorError::BadCertificate {
        key: key.to_string(),
        path: path.to_path_buf(),
        number,
        reason,
    };
    let mut ders = Vec::new();
    let has_pem = bytes.windows(11).any(|w| w == b"-----BEGIN ");
    if has_pem {
        for (i, block) in x509_parser::pem::Pem::iter_from_buffer(bytes).enumerate() {
            let block = block.map_err(|e| bad(i + 1, format!("unreadable PEM ({e})")))?;
            if block.label == "CERTIFICATE" {
                ders.push(block.contents);
            }
        }
    } else if bytes.first() == Some(&0x30) {
        ders.push(bytes.to_vec());
    }
    if ders.is_empty() {
        return Err(AnchorError::NoCertificate {
            key: key.to_string(),
            path: path.to_path_buf(),
        });
    }
    for (i, der) in ders.into_iter().enumerate() {
        let anchor = Anchor::from_der(der, path).map_err(|reason| bad(i + 1, reason))?;
        if into.anchors.iter().any(|a| a.der == anchor.der) {
            continue;
        }
        if into.anchors.len() == MAX_ANCHORS {
            return Err(AnchorError::TooManyAnchors {
                key: key.to_string(),
            });
        }
        into.anchors.push(anchor);
    }
    Ok(())
}
