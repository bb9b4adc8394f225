//! Where swanctl's credential paths are: the `[output.swanctl]` table resolved against the
//! configuration (`Layout`: swanctl's directory, the key, certificate and intermediate paths
//! in it, and what each should point at), and what is at each path now (`PathState`), read
//! without following any symlink inside swanctl's directory.

use std::fs;
use std::io::ErrorKind;
use std::path::{Component, Path, PathBuf};

use serde::Serialize;

use crate::config::Config;
use crate::store;

/// swanctl's directory, where it exists; RHEL and its rebuilds use the second.
pub const DEFAULT_DIRS: [&str; 2] = ["/etc/swanctl", "/etc/strongswan/swanctl"];

/// Which file of the set a path holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    Key,
    Cert,
    Chain,
}

impl Role {
    /// The config key under `output.swanctl`.
    pub fn key(self) -> &'static str {
        match self {
            Role::Key => "key",
            Role::Cert => "cert",
            Role::Chain => "chain",
        }
    }

    /// The whole config key, as `check` names it.
    pub fn config_key(self) -> &'static str {
        match self {
            Role::Key => "output.swanctl.key",
            Role::Cert => "output.swanctl.cert",
            Role::Chain => "output.swanctl.chain",
        }
    }

    /// The file in a generation directory.
    pub fn file(self) -> &'static str {
        match self {
            Role::Key => store::KEY_FILE,
            Role::Cert => store::CERT_FILE,
            Role::Chain => store::CHAIN_FILE,
        }
    }

    /// Mode of a subdirectory eit-certd creates for this path (strongSwan ships `private/`
    /// as 0700, the certificate directories as 0755).
    pub(super) fn dir_mode(self) -> u32 {
        match self {
            Role::Key => 0o700,
            Role::Cert | Role::Chain => 0o755,
        }
    }
}

/// What is at one swanctl path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathState {
    /// Nothing (or a subdirectory on the way is missing; eit-certd creates it).
    Missing,
    /// Our symlink to `<output.dir>/current/<file>`.
    Linked,
    /// Our symlink (into `output.dir`), to somewhere else; relinked at the next install.
    Stale { target: PathBuf },
    /// Not eit-certd's: replaced only with `replace_existing = true`.
    Foreign { what: String },
    /// A directory: never replaced.
    Directory,
    /// A component on the way inside `dir` is a symlink or not a directory.
    UnsafeParent { path: PathBuf, what: String },
}

impl PathState {
    /// The state in one word, as `status` prints it and its JSON gives it (`state`): an
    /// interface for operators and their scripts, so a name never changes once shipped.
    pub fn name(&self) -> &'static str {
        match self {
            PathState::Missing => "missing",
            PathState::Linked => "linked",
            PathState::Stale { .. } => "stale",
            PathState::Foreign { .. } => "not_ours",
            PathState::Directory => "directory",
            PathState::UnsafeParent { .. } => "unsafe_parent",
        }
    }
}

/// The resolved `[output.swanctl]` table.
#[derive(Debug, Clone)]
pub struct Layout {
    pub(super) dir: PathBuf,
    /// Absolute, so that link targets do not depend on anyone's working directory.
    pub(super) output_dir: PathBuf,
    pub(super) replace_existing: bool,
    pub(super) entries: [(Role, PathBuf); 3],
}

impl Layout {
    /// The layout `config` asks for; `None` when `[output.swanctl]` is absent.
    pub fn from_config(config: &Config) -> Option<Layout> {
        let s = config.output.swanctl.as_ref()?;
        let dir = match &s.dir {
            Some(dir) => dir.0.clone(),
            None => default_dir(&DEFAULT_DIRS.map(Path::new)),
        };
        // Absolute by construction (`config::OutputDir`).
        let output_dir = config.output.dir.0.clone();
        Some(Layout {
            dir,
            output_dir,
            replace_existing: s.replace_existing,
            entries: [
                (Role::Key, s.key.0.clone()),
                (Role::Cert, s.cert.0.clone()),
                (Role::Chain, s.chain.0.clone()),
            ],
        })
    }

    /// swanctl's directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The absolute path of `role`'s file.
    pub fn path(&self, role: Role) -> PathBuf {
        let rel = &self
            .entries
            .iter()
            .find(|(r, _)| *r == role)
            .expect("all roles")
            .1;
        self.dir.join(rel)
    }

    /// What each path should point at.
    pub fn target(&self, role: Role) -> PathBuf {
        self.output_dir.join(store::CURRENT).join(role.file())
    }

    /// What is at each path now (read-only; follows no symlink inside `dir`).
    pub fn inspect(&self) -> Vec<(Role, PathBuf, PathState)> {
        self.entries
            .iter()
            .map(|(role, rel)| (*role, self.dir.join(rel), self.state_of(*role, rel)))
            .collect()
    }

    fn state_of(&self, role: Role, rel: &Path) -> PathState {
        // Every directory between `dir` and the file must be a real directory: a symlinked
        // one could lead the link (and eit-certd's writes) outside `dir`.
        let mut at = self.dir.clone();
        let parts: Vec<Component> = rel.components().collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            at.push(part);
            match fs::symlink_metadata(&at) {
                Err(e) if e.kind() == ErrorKind::NotFound => return PathState::Missing,
                Err(e) => {
                    return PathState::UnsafeParent {
                        path: at,
                        what: format!("unreadable ({e})"),
                    }
                }
                Ok(m) if m.file_type().is_symlink() => {
                    return PathState::UnsafeParent {
                        path: at,
                        what: "a symlink".into(),
                    }
                }
                Ok(m) if !m.is_dir() => {
                    return PathState::UnsafeParent {
                        path: at,
                        what: "not a directory".into(),
                    }
                }
                Ok(_) => {}
            }
        }
        let path = self.dir.join(rel);
        let meta = match fs::symlink_metadata(&path) {
            Err(e) if e.kind() == ErrorKind::NotFound => return PathState::Missing,
            Err(e) => {
                return PathState::Foreign {
                    what: format!("unreadable ({e})"),
                }
            }
            Ok(m) => m,
        };
        if meta.file_type().is_symlink() {
            let target = match fs::read_link(&path) {
                Ok(t) => t,
                Err(e) => {
                    return PathState::Foreign {
                        what: format!("an unreadable symlink ({e})"),
                    }
                }
            };
            if target == self.target(role) {
                PathState::Linked
            } else if self.is_inside_output_dir(&target) {
                PathState::Stale { target }
            } else {
                PathState::Foreign {
                    what: format!("a symlink to {}", target.display()),
                }
            }
        } else if meta.is_dir() {
            PathState::Directory
        } else if meta.is_file() {
            PathState::Foreign {
                what: "a regular file".into(),
            }
        } else {
            PathState::Foreign {
                what: "a special file".into(),
            }
        }
    }

    /// Lexically inside `output.dir` (absolute, no `..`): a link eit-certd made, possibly by
    /// an older layout.
    fn is_inside_output_dir(&self, target: &Path) -> bool {
        target.is_absolute()
            && target.starts_with(&self.output_dir)
            && target != self.output_dir
            && !target.components().any(|c| c == Component::ParentDir)
    }
}

/// The first of `candidates` that exists, or the first one when none does (so that errors
/// name the usual place).
fn default_dir(candidates: &[&Path]) -> PathBuf {
    candidates
        .iter()
        .find(|d| d.is_dir())
        .or(candidates.first())
        .map(|d| d.to_path_buf())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::swanctl::fixture::Fixture;
    use std::os::unix::fs::symlink;

    fn err(extra: &str) -> String {
        Config::parse(
            &format!("[output.swanctl]\n{extra}\n"),
            Path::new("/etc/eit-certd/config.toml"),
        )
        .unwrap_err()
        .to_string()
    }

    #[test]
    fn absent_table_is_off_and_an_empty_one_means_ibms_names() {
        let c = Config::parse("", Path::new("c.toml")).unwrap();
        assert!(Layout::from_config(&c).is_none());
        let tmp = tempfile::tempdir().unwrap();
        let c = Config::parse(
            &format!(
                "[output]\ndir = \"{}\"\n[output.swanctl]\ndir = \"/etc/swanctl\"\n",
                tmp.path().display()
            ),
            Path::new("c.toml"),
        )
        .unwrap();
        let l = Layout::from_config(&c).unwrap();
        assert_eq!(
            l.path(Role::Key),
            Path::new("/etc/swanctl/private/type_ibmshare.key")
        );
        assert_eq!(
            l.path(Role::Cert),
            Path::new("/etc/swanctl/x509/type_ibmshare.pem")
        );
        assert_eq!(
            l.path(Role::Chain),
            Path::new("/etc/swanctl/x509ca/type_ibmshare_int.crt")
        );
        assert_eq!(l.target(Role::Key), tmp.path().join("current/key.pem"));
    }

    #[test]
    fn the_default_dir_is_the_one_that_exists() {
        let tmp = tempfile::tempdir().unwrap();
        let (a, b) = (
            tmp.path().join("swanctl"),
            tmp.path().join("strongswan/swanctl"),
        );
        assert_eq!(default_dir(&[&a, &b]), a, "neither exists: the usual one");
        fs::create_dir_all(&b).unwrap();
        assert_eq!(default_dir(&[&a, &b]), b, "only the RHEL one exists");
        fs::create_dir_all(&a).unwrap();
        assert_eq!(default_dir(&[&a, &b]), a, "both: the usual one");
    }

    #[test]
    fn paths_must_stay_inside_dir() {
        for bad in [
            "key = \"/etc/passwd\"",
            "cert = \"../x509/a.pem\"",
            "chain = \"x509ca/../../etc/a\"",
            "key = \"\"",
            "key = \"./private/a.key\"",
            "cert = \"x509/\"",
        ] {
            let e = err(bad);
            assert!(
                e.contains("output.swanctl paths") && e.contains(":2:"),
                "{bad}: {e}"
            );
        }
        let e = err("dir = \"etc/swanctl\"");
        assert!(
            e.contains("output.swanctl.dir") && e.contains("absolute"),
            "{e}"
        );
        let e = err("cert = \"x509/a.pem\"\nchain = \"x509/a.pem\"");
        assert!(
            e.contains("output.swanctl.cert and output.swanctl.chain are the same path"),
            "{e}"
        );
        let e = err("replace = true");
        assert!(e.contains("replace") && e.contains(":2:"), "{e}");
    }

    #[test]
    fn foreign_and_stale_symlinks_are_told_apart() {
        let f = Fixture::new();
        let cert = f.swanctl.join("x509/type_ibmshare.pem");
        symlink("/etc/ssl/certs/x.pem", &cert).unwrap();
        let e = f.layout("").preflight().unwrap_err().to_string();
        assert!(e.contains("a symlink to /etc/ssl/certs/x.pem"), "{e}");
        fs::remove_file(&cert).unwrap();
        let old = f.out.join("generations/000001-x/cert.pem");
        symlink(&old, &cert).unwrap();
        let l = f.layout("");
        let state = &l.inspect()[1].2;
        assert_eq!(state, &PathState::Stale { target: old });
        assert_eq!(state.name(), "stale");
        assert_eq!(l.link().unwrap().len(), 3);
        assert_eq!(
            fs::read_link(&cert).unwrap(),
            f.out.join("current/cert.pem")
        );
        // A path that escapes the output dir lexically is not ours.
        fs::remove_file(&cert).unwrap();
        symlink(f.out.join("../elsewhere/cert.pem"), &cert).unwrap();
        assert!(matches!(l.inspect()[1].2, PathState::Foreign { .. }));
        assert_eq!(l.inspect()[1].2.name(), "not_ours");
    }
}
