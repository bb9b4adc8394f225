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

use std::path::{Path, PathBuf};

use time::OffsetDateTime;
use x509_parser::certificate::X509Certificate;
use x509_parser::prelude::FromDer;

use super::link::{self, CanonicalName};
use crate::config::problem::Setting;
use crate::config::CertificateConfig;
use crate::text::{hex_lower, rfc3339};

/// Largest anchor file read (IBM's bundle of every region is about 30 KiB).
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Most `*.pem`/`*.crt` files read from one directory.
pub const MAX_FILES_PER_DIR: usize = 256;
/// Most anchors loaded in all.
pub const MAX_ANCHORS: usize = 1024;

/// A trust anchor configuration that cannot be used: the key it is about and the problem.
#[derive(Debug, thiserror::Error)]
#[error("{key}: {problem}")]
pub struct AnchorError {
    /// The configuration key (`certificate.trust_anchor`, `certificate.trust_anchors[1]`).
    pub key: Setting,
    /// What is wrong, naming the file.
    pub problem: AnchorProblem,
}

impl AnchorError {
    fn new(key: &Setting, problem: AnchorProblem) -> AnchorError {
        AnchorError {
            key: key.clone(),
            problem,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum AnchorProblem {
    #[error("cannot read {}: {cause}; fix the path or remove it", path.display())]
    Read {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{} is {what}, not a regular file or a directory", path.display())]
    NotRegular { path: PathBuf, what: &'static str },
    #[error(
        "{} is larger than {MAX_FILE_BYTES} bytes; a trust anchor file holds a few CA \
         certificates", path.display()
    )]
    TooLarge { path: PathBuf },
    #[error(
        "{} holds more than {MAX_FILES_PER_DIR} *.pem/*.crt files; point it at a directory of \
         CA certificates only", path.display()
    )]
    TooManyFiles { path: PathBuf },
    #[error("more than {MAX_ANCHORS} trust anchors in all; pin fewer CAs")]
    TooManyAnchors,
    #[error(
        "{} holds no certificate (no -----BEGIN CERTIFICATE----- block); point it at the PEM CA \
         certificates the chain must end at", path.display()
    )]
    NoCertificate { path: PathBuf },
    #[error("certificate {number} in {} is not readable: {reason}", path.display())]
    BadCertificate {
        path: PathBuf,
        number: usize,
        reason: String,
    },
    #[error("the directory {} holds no *.pem or *.crt file", path.display())]
    EmptyDirectory { path: PathBuf },
    #[error(
        "no usable trust anchor: {}; install current CA certificates (e.g. from a newer release \
         of IBM's mount helper)",
        list(ignored)
    )]
    NoneUsable { ignored: Vec<AnchorRef> },
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
    /// Its validity window.
    pub not_before: OffsetDateTime,
    /// Its validity window; an anchor past it is ignored at load.
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
        // `cert` borrows `der`: take what is needed from it, then move `der` in.
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
            let key = if config.trust_anchor.is_some() {
                "certificate.trust_anchor"
            } else {
                "certificate.trust_anchors"
            };
            return Err(AnchorError::new(
                &Setting::Key(key),
                AnchorProblem::NoneUsable {
                    ignored: all.ignored.into_iter().map(|(_, r)| r).collect(),
                },
            ));
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
        add_file(
            &Setting::Key("certificate.trust_anchor"),
            source,
            pem,
            &mut all,
        )?;
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
fn configured(config: &CertificateConfig) -> Vec<(Setting, &Path)> {
    let mut paths = Vec::new();
    if let Some(p) = &config.trust_anchor {
        paths.push((Setting::Key("certificate.trust_anchor"), p.as_path()));
    }
    for (index, p) in config.trust_anchors.iter().enumerate() {
        let key = "certificate.trust_anchors";
        paths.push((Setting::Element { key, index }, p.as_path()));
    }
    paths
}

/// The configured anchor paths, as the daemon's file watch needs them: taken from the config
/// when the watch is made (again after each reload), so the watch holds no config of its own.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AnchorPaths(Vec<PathBuf>);

impl AnchorPaths {
    pub fn of(config: &CertificateConfig) -> AnchorPaths {
        AnchorPaths(
            configured(config)
                .into_iter()
                .map(|(_, p)| p.to_path_buf())
                .collect(),
        )
    }

    /// Directories whose changes can change the anchors: each configured directory, and the
    /// one holding each configured file (a file is usually replaced by renaming a new one over
    /// it).
    pub fn watch_dirs(&self) -> Vec<PathBuf> {
        let mut dirs: Vec<PathBuf> = Vec::new();
        for path in &self.0 {
            let dir = if path.is_dir() {
                path.clone()
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
    pub fn is_anchor_path(&self, path: &Path) -> bool {
        self.0.iter().any(|p| {
            path == p || (path.parent() == Some(p.as_path()) && has_anchor_extension(path))
        })
    }
}

fn has_anchor_extension(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| e.eq_ignore_ascii_case("pem") || e.eq_ignore_ascii_case("crt"))
}

fn read_path(key: &Setting, path: &Path, into: &mut TrustAnchors) -> Result<(), AnchorError> {
    let read_error = |cause| {
        AnchorError::new(
            key,
            AnchorProblem::Read {
                path: path.to_path_buf(),
                cause,
            },
        )
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
        Err(Skipped::Link | Skipped::Directory) => Err(AnchorError::new(
            key,
            AnchorProblem::NotRegular {
                path: path.to_path_buf(),
                what: "not a regular file",
            },
        )),
    }
}

fn read_dir(key: &Setting, dir: &Path, into: &mut TrustAnchors) -> Result<(), AnchorError> {
    let read_error = |cause| {
        AnchorError::new(
            key,
            AnchorProblem::Read {
                path: dir.to_path_buf(),
                cause,
            },
        )
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(read_error)? {
        let path = entry.map_err(read_error)?.path();
        if !has_anchor_extension(&path) {
            continue;
        }
        if files.len() == MAX_FILES_PER_DIR {
            return Err(AnchorError::new(
                key,
                AnchorProblem::TooManyFiles {
                    path: dir.to_path_buf(),
                },
            ));
        }
        files.push(path);
    }
    if files.is_empty() {
        return Err(AnchorError::new(
            key,
            AnchorProblem::EmptyDirectory {
                path: dir.to_path_buf(),
            },
        ));
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

/// Reads a regular file of at most [`MAX_FILE_BYTES`] (see [`crate::files`]: a FIFO cannot
/// hang us, and the type is checked on the open file); for a directory `entry`, a symbolic
/// link is not followed.
fn read_capped(key: &Setting, path: &Path, entry: bool) -> Result<Vec<u8>, Skipped> {
    use crate::files::{self, Links, ReadError};
    let links = if entry { Links::Refuse } else { Links::Follow };
    let error = |problem| Skipped::Error(AnchorError::new(key, problem));
    files::read(path, links, MAX_FILE_BYTES).map_err(|e| match e {
        ReadError::Symlink { .. } => Skipped::Link,
        ReadError::NotRegular {
            what: "a directory",
            ..
        } if entry => Skipped::Directory,
        ReadError::NotRegular { path, what } => error(AnchorProblem::NotRegular { path, what }),
        ReadError::TooLarge { path, .. } => error(AnchorProblem::TooLarge { path }),
        ReadError::Io { path, cause } => error(AnchorProblem::Read { path, cause }),
    })
}

/// Adds every certificate of one file: PEM blocks labelled CERTIFICATE (others are skipped),
/// or, without any PEM block, the whole file as one DER certificate.
fn add_file(
    key: &Setting,
    path: &Path,
    bytes: &[u8],
    into: &mut TrustAnchors,
) -> Result<(), AnchorError> {
    let bad = |number, reason: String| {
        AnchorError::new(
            key,
            AnchorProblem::BadCertificate {
                path: path.to_path_buf(),
                number,
                reason,
            },
        )
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
        return Err(AnchorError::new(
            key,
            AnchorProblem::NoCertificate {
                path: path.to_path_buf(),
            },
        ));
    }
    for (i, der) in ders.into_iter().enumerate() {
        let anchor = Anchor::from_der(der, path).map_err(|reason| bad(i + 1, reason))?;
        if into.anchors.iter().any(|a| a.der == anchor.der) {
            continue;
        }
        if into.anchors.len() == MAX_ANCHORS {
            return Err(AnchorError::new(key, AnchorProblem::TooManyAnchors));
        }
        into.anchors.push(anchor);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::testca::TestCa;

    fn config(trust_anchor: Option<&Path>, trust_anchors: &[&Path]) -> CertificateConfig {
        CertificateConfig {
            trust_anchor: trust_anchor.map(Path::to_path_buf),
            trust_anchors: trust_anchors.iter().map(|p| p.to_path_buf()).collect(),
            ..Default::default()
        }
    }

    fn now() -> OffsetDateTime {
        OffsetDateTime::now_utc()
    }

    fn load(c: &CertificateConfig) -> Result<TrustAnchors, AnchorError> {
        TrustAnchors::load_at(c, now()).map(|a| a.expect("configured"))
    }

    #[test]
    fn nothing_configured_is_none() {
        assert!(TrustAnchors::load_at(&config(None, &[]), now())
            .unwrap()
            .is_none());
    }

    #[test]
    fn a_file_holds_any_number_of_certificates_and_lists_add_up() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b, c) = (TestCa::new(), TestCa::new(), TestCa::new());
        let bundle = tmp.path().join("bundle.pem");
        // Text around the blocks and a key block are skipped; a duplicate is loaded once.
        std::fs::write(
            &bundle,
            format!(
                "# IBM roots\n{}{}-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n{}",
                a.root_pem(),
                b.root_pem(),
                a.root_pem()
            ),
        )
        .unwrap();
        let single = tmp.path().join("c.crt");
        std::fs::write(&single, c.root_pem()).unwrap();
        let anchors = load(&config(Some(&bundle), &[&single])).unwrap();
        assert_eq!(anchors.anchors().len(), 3);
        assert_eq!(anchors.anchors()[2].source, single);
    }

    #[test]
    fn a_directory_contributes_its_pem_and_crt_files_only() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("roots");
        std::fs::create_dir(&dir).unwrap();
        let roots: Vec<TestCa> = (0..4).map(|_| TestCa::new()).collect();
        std::fs::write(
            dir.join("type_ibmshare_root_us-south.crt"),
            roots[0].root_pem(),
        )
        .unwrap();
        std::fs::write(dir.join("b.pem"), roots[1].root_pem()).unwrap();
        std::fs::write(dir.join("UPPER.CRT"), roots[2].root_pem()).unwrap();
        std::fs::write(dir.join("README.md"), "not a certificate").unwrap();
        std::fs::write(dir.join("c.pem.disabled"), roots[3].root_pem()).unwrap();
        // Not read: subdirectories (even one named like a certificate file) ...
        std::fs::create_dir(dir.join("old")).unwrap();
        std::fs::write(dir.join("old/d.pem"), roots[3].root_pem()).unwrap();
        std::fs::create_dir(dir.join("dir.pem")).unwrap();
        // ... and symbolic links, which are reported.
        let outside = tmp.path().join("outside.pem");
        std::fs::write(&outside, roots[3].root_pem()).unwrap();
        std::os::unix::fs::symlink(&outside, dir.join("planted.pem")).unwrap();

        let anchors = load(&config(Some(&dir), &[])).unwrap();
        let mut sources: Vec<String> = anchors
            .anchors()
            .iter()
            .map(|a| a.source.file_name().unwrap().to_string_lossy().into_owned())
            .collect();
        sources.sort();
        assert_eq!(
            sources,
            ["UPPER.CRT", "b.pem", "type_ibmshare_root_us-south.crt"]
        );
        assert_eq!(anchors.skipped_links(), [dir.join("planted.pem")]);

        // The configured path itself may be a link.
        let link = tmp.path().join("link.pem");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        assert_eq!(load(&config(Some(&link), &[])).unwrap().anchors().len(), 1);
    }

    #[test]
    fn bad_files_are_errors_naming_key_and_file() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("missing.pem");
        let e = load(&config(Some(&missing), &[])).unwrap_err();
        assert!(matches!(e.problem, AnchorProblem::Read { .. }), "{e:?}");
        assert_eq!(e.key.to_string(), "certificate.trust_anchor");
        assert!(e.to_string().contains("missing.pem"), "{e}");

        let garbage = tmp.path().join("garbage.pem");
        std::fs::write(&garbage, "hello").unwrap();
        let e = load(&config(None, &[&missing, &garbage])).unwrap_err();
        assert_eq!(e.key.to_string(), "certificate.trust_anchors[0]", "{e}");
        let e = load(&config(None, &[&garbage])).unwrap_err();
        assert!(
            matches!(e.problem, AnchorProblem::NoCertificate { .. }),
            "{e:?}"
        );
        assert!(
            e.to_string().starts_with("certificate.trust_anchors[0]: "),
            "{e}"
        );
        assert!(e.to_string().contains("garbage.pem"), "{e}");

        let broken = tmp.path().join("broken.pem");
        std::fs::write(
            &broken,
            format!(
                "{}-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
                TestCa::new().root_pem()
            ),
        )
        .unwrap();
        let e = load(&config(Some(&broken), &[])).unwrap_err();
        assert!(
            matches!(e.problem, AnchorProblem::BadCertificate { number: 2, .. }),
            "{e:?}"
        );

        let fifo = tmp.path().join("fifo.pem");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = load(&config(Some(&fifo), &[])).unwrap_err();
        assert!(
            matches!(e.problem, AnchorProblem::NotRegular { what: "a FIFO", .. }),
            "{e:?}"
        );
        // Inside a directory too: opened non-blocking, so this does not hang.
        let dir = tmp.path().join("d");
        std::fs::create_dir(&dir).unwrap();
        nix::unistd::mkfifo(&dir.join("x.crt"), nix::sys::stat::Mode::S_IRWXU).unwrap();
        let e = load(&config(Some(&dir), &[])).unwrap_err();
        assert!(e.to_string().contains("x.crt"), "{e}");

        let empty = tmp.path().join("empty");
        std::fs::create_dir(&empty).unwrap();
        let e = load(&config(Some(&empty), &[])).unwrap_err();
        assert!(
            matches!(e.problem, AnchorProblem::EmptyDirectory { .. }),
            "{e:?}"
        );
    }

    #[test]
    fn sizes_and_counts_are_capped() {
        let tmp = tempfile::tempdir().unwrap();
        let big = tmp.path().join("big.pem");
        let mut text = TestCa::new().root_pem();
        text.push_str(&"#".repeat(MAX_FILE_BYTES as usize));
        std::fs::write(&big, text).unwrap();
        let e = load(&config(Some(&big), &[])).unwrap_err();
        assert!(matches!(e.problem, AnchorProblem::TooLarge { .. }), "{e:?}");
        assert!(e.to_string().contains("big.pem"), "{e}");

        let dir = tmp.path().join("many");
        std::fs::create_dir(&dir).unwrap();
        for i in 0..=MAX_FILES_PER_DIR {
            std::fs::write(dir.join(format!("{i}.pem")), "").unwrap();
        }
        let e = load(&config(Some(&dir), &[])).unwrap_err();
        assert!(
            matches!(e.problem, AnchorProblem::TooManyFiles { .. }),
            "{e:?}"
        );
    }

    #[test]
    fn expired_anchors_are_ignored_and_none_left_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("roots.pem");
        std::fs::write(&file, TestCa::new().root_pem()).unwrap();
        let c = config(Some(&file), &[]);
        // TestCa roots are valid for a day.
        let later = now() + time::Duration::days(2);
        let e = TrustAnchors::load_at(&c, later).unwrap_err();
        assert!(
            matches!(e.problem, AnchorProblem::NoneUsable { .. }),
            "{e:?}"
        );
        assert!(e.to_string().contains("expired at"), "{e}");

        let fresh = tmp.path().join("fresh.pem");
        std::fs::write(&fresh, self_signed_for_days(30)).unwrap();
        let both = config(Some(&file), &[&fresh]);
        let anchors = TrustAnchors::load_at(&both, later).unwrap().unwrap();
        assert_eq!(anchors.anchors().len(), 1);
        let ignored: Vec<&AnchorRef> = anchors.ignored().collect();
        assert_eq!(ignored.len(), 1);
        assert_eq!(ignored[0].source, file);
        assert!(
            ignored[0].to_string().contains("expired at"),
            "{}",
            ignored[0]
        );
    }

    /// A self-signed EC root valid from now for `days`, PEM.
    fn self_signed_for_days(days: u32) -> Vec<u8> {
        use openssl::{asn1::Asn1Time, ec, hash::MessageDigest, nid::Nid, pkey::PKey, x509};
        let group = ec::EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap();
        let key = PKey::from_ec_key(ec::EcKey::generate(&group).unwrap()).unwrap();
        let mut name = x509::X509Name::builder().unwrap();
        name.append_entry_by_text("CN", "fresh").unwrap();
        let name = name.build();
        let mut b = x509::X509::builder().unwrap();
        b.set_version(2).unwrap();
        b.set_subject_name(&name).unwrap();
        b.set_issuer_name(&name).unwrap();
        b.set_pubkey(&key).unwrap();
        b.set_not_before(&Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        b.set_not_after(&Asn1Time::days_from_now(days).unwrap())
            .unwrap();
        b.sign(&key, MessageDigest::sha256()).unwrap();
        b.build().to_pem().unwrap()
    }

    #[test]
    fn watched_paths_cover_files_and_directories() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("roots");
        std::fs::create_dir(&dir).unwrap();
        let file = tmp.path().join("etc/root.pem");
        let c = AnchorPaths::of(&config(Some(&file), &[&dir]));
        assert_eq!(c.watch_dirs(), [tmp.path().join("etc"), dir.clone()]);
        assert!(c.is_anchor_path(&file));
        assert!(c.is_anchor_path(&dir.join("type_ibmshare_root_eu-de.crt")));
        assert!(!c.is_anchor_path(&dir.join("notes.txt")));
        assert!(!c.is_anchor_path(&tmp.path().join("etc/other.pem")));
    }
}
