//! Linking: making each swanctl path eit-certd's symlink into the installed set, after
//! refusing what is not ours (`preflight`) or cannot be written (`writable`); a temporary
//! symlink renamed over the path, subdirectories created one level at a time, never through a
//! symlink.

use std::fs;
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use super::{io, Layout, PathState, Role, SwanctlError};
use crate::store::Store;

/// Temporary symlinks are created under this prefix and renamed over the path; a leftover
/// (a crash in between) is removed by the next link. Not [`crate::files::TMP_PREFIX`] on
/// purpose: that one marks unfinished files in eit-certd's own directories, while swanctl's
/// directories belong to strongSwan and its admin, so a temporary left there names its owner.
const TMP_PREFIX: &str = ".eit-certd-tmp-";

/// A change `link` made, for the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The swanctl path.
    pub path: PathBuf,
    /// What was there before.
    pub was: PathState,
}

impl Layout {
    pub(super) fn check_dir(&self) -> Result<(), SwanctlError> {
        match fs::metadata(&self.dir) {
            Err(e) if e.kind() == ErrorKind::NotFound => Err(SwanctlError::NoDir(self.dir.clone())),
            Err(e) => Err(io("inspect", &self.dir)(e)),
            Ok(m) if !m.is_dir() => Err(SwanctlError::NotADir(self.dir.clone())),
            Ok(_) => {
                // Every directory from each path's own up to `/`: another user who may rename
                // entries in one of them can swap a subdirectory for a link between our checks
                // and our writes, and have root replace a file outside swanctl's directory.
                for role in [Role::Key, Role::Cert, Role::Chain] {
                    if let Some(bad) = crate::files::unsafe_ancestor(&self.path(role)) {
                        return Err(SwanctlError::NotSafe(bad));
                    }
                }
                Ok(())
            }
        }
    }

    /// Refuses, without changing anything, what [`Layout::link`] would refuse: a missing
    /// `dir`, a path that is not ours (without `replace_existing`), a directory, a symlinked
    /// subdirectory.
    pub fn preflight(&self) -> Result<Vec<(Role, PathBuf, PathState)>, SwanctlError> {
        self.check_dir()?;
        let states = self.inspect();
        for (role, path, state) in &states {
            match state {
                PathState::UnsafeParent { path, what } => {
                    return Err(SwanctlError::UnsafeParent {
                        path: path.clone(),
                        what: what.clone(),
                    })
                }
                PathState::Directory => {
                    return Err(SwanctlError::IsDir {
                        path: path.clone(),
                        key: role.key(),
                    })
                }
                PathState::Foreign { what } if !self.replace_existing => {
                    return Err(SwanctlError::NotOurs {
                        path: path.clone(),
                        key: role.key(),
                        what: what.clone(),
                    })
                }
                _ => {}
            }
        }
        Ok(states)
    }

    /// Refuses, before a certificate is requested, a path that is not yet our link in a
    /// directory we cannot write (a read-only mount: what `ProtectSystem=strict` gives without
    /// the drop-in): linking it after the install would fail with the new set already live.
    pub fn writable(&self) -> Result<(), SwanctlError> {
        for (role, path, state) in self.inspect() {
            if state == PathState::Linked {
                continue;
            }
            // The deepest directory that exists: where the link or its subdirectory goes.
            let Some(dir) = path.ancestors().skip(1).find(|d| d.is_dir()) else {
                continue;
            };
            if let Err(errno) = nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK) {
                return Err(SwanctlError::Unwritable {
                    dir: dir.to_path_buf(),
                    key: role.key(),
                    cause: std::io::Error::from(errno),
                });
            }
        }
        Ok(())
    }

    /// Points every path at the current set: creates missing subdirectories inside `dir`,
    /// then replaces each path that is not yet our link with one (a temporary symlink renamed
    /// over it, so the path never disappears), and fsyncs. Returns what changed.
    pub fn link(&self) -> Result<Vec<Change>, SwanctlError> {
        let states = self.preflight()?;
        let mut changes = Vec::new();
        for ((role, rel), (_, path, state)) in self.entries.iter().zip(states) {
            if state == PathState::Linked {
                continue;
            }
            let parent = self.make_parents(*role, rel)?;
            let name = path.file_name().unwrap_or_default().to_string_lossy();
            let tmp = parent.join(format!("{TMP_PREFIX}{name}"));
            if fs::symlink_metadata(&tmp).is_ok_and(|m| m.file_type().is_symlink()) {
                fs::remove_file(&tmp).map_err(io("remove the leftover", &tmp))?;
            }
            let target = self.target(*role);
            std::os::unix::fs::symlink(&target, &tmp).map_err(io("create symlink", &tmp))?;
            if let Err(e) = fs::rename(&tmp, &path) {
                let _ = fs::remove_file(&tmp);
                return Err(io("replace", &path)(e));
            }
            crate::files::fsync_dir(&parent).map_err(io("fsync", &parent))?;
            match &state {
                PathState::Foreign { what } => tracing::warn!(
                    path = %path.display(),
                    target = %target.display(),
                    "took over {what} (output.swanctl.replace_existing)"
                ),
                _ => tracing::info!(path = %path.display(), target = %target.display(), "linked"),
            }
            changes.push(Change { path, was: state });
        }
        Ok(changes)
    }

    /// Creates the subdirectories of `rel` inside `dir` that are missing, one level at a
    /// time and never through a symlink; returns the file's directory.
    fn make_parents(&self, role: Role, rel: &Path) -> Result<PathBuf, SwanctlError> {
        let mut at = self.dir.clone();
        let parts: Vec<Component> = rel.components().collect();
        for part in &parts[..parts.len().saturating_sub(1)] {
            let parent = at.clone();
            at.push(part);
            match fs::DirBuilder::new().mode(role.dir_mode()).create(&at) {
                Ok(()) => {
                    // The umask may have narrowed the mode; the key's directory must be
                    // exactly 0700, the others are readable as strongSwan ships them.
                    fs::set_permissions(&at, fs::Permissions::from_mode(role.dir_mode()))
                        .map_err(io("chmod", &at))?;
                    crate::files::fsync_dir(&parent).map_err(io("fsync", &parent))?;
                }
                Err(e) if e.kind() == ErrorKind::AlreadyExists => {
                    let m = fs::symlink_metadata(&at).map_err(io("inspect", &at))?;
                    if !m.is_dir() {
                        return Err(SwanctlError::UnsafeParent {
                            path: at,
                            what: if m.file_type().is_symlink() {
                                "a symlink".into()
                            } else {
                                "not a directory".into()
                            },
                        });
                    }
                }
                Err(e) => return Err(io("create", &at)(e)),
            }
        }
        Ok(at)
    }

    /// [`Layout::preflight`], then [`Layout::link`] when a set is installed: what the daemon
    /// does at start and `renew` does every time. Returns what changed.
    pub fn ensure(&self, store: &Store) -> Result<Vec<Change>, SwanctlError> {
        self.preflight()?;
        match store.current_generation() {
            Ok(Some(_)) => self.link(),
            // Nothing installed, or a `current` the next install repairs: linking waits.
            Ok(None) | Err(_) => Ok(Vec::new()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::swanctl::fixture::Fixture;
    use std::os::unix::fs::symlink;

    #[test]
    fn link_creates_symlinks_into_current_and_missing_subdirs() {
        let f = Fixture::new();
        fs::remove_dir(f.swanctl.join("private")).unwrap();
        let l = f.layout("");
        let changes = l.link().unwrap();
        assert_eq!(changes.len(), 3);
        assert!(changes.iter().all(|c| c.was == PathState::Missing));
        for role in [Role::Key, Role::Cert, Role::Chain] {
            let p = l.path(role);
            assert!(fs::symlink_metadata(&p).unwrap().file_type().is_symlink());
            assert_eq!(
                fs::read_link(&p).unwrap(),
                f.out.join("current").join(role.file())
            );
        }
        let private = fs::metadata(f.swanctl.join("private")).unwrap();
        assert_eq!(private.permissions().mode() & 0o777, 0o700);
        assert!(l.inspect().iter().all(|(_, _, s)| *s == PathState::Linked));
        assert!(
            l.link().unwrap().is_empty(),
            "a second link changes nothing"
        );
        let leftovers: Vec<_> = fs::read_dir(f.swanctl.join("x509"))
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with(TMP_PREFIX))
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn a_foreign_file_is_refused_untouched_unless_replace_existing() {
        let f = Fixture::new();
        let key = f.swanctl.join("private/type_ibmshare.key");
        fs::write(&key, "IBM's key").unwrap();
        let e = f.layout("").link().unwrap_err();
        assert!(e.is_config());
        let text = e.to_string();
        assert!(
            text.contains(&key.display().to_string())
                && text.contains("a regular file")
                && text.contains("replace_existing = true")
                && text.contains("mount_helper.timer"),
            "{text}"
        );
        assert_eq!(fs::read(&key).unwrap(), b"IBM's key");
        assert!(
            !f.swanctl.join("x509/type_ibmshare.pem").exists(),
            "a refusal changes nothing, not even the other paths"
        );

        let changes = f.layout("replace_existing = true").link().unwrap();
        assert!(changes.contains(&Change {
            path: key.clone(),
            was: PathState::Foreign {
                what: "a regular file".into()
            }
        }));
        assert!(fs::symlink_metadata(&key).unwrap().file_type().is_symlink());
        // Ours now: recognised without replace_existing.
        assert!(f.layout("").preflight().is_ok());
    }

    #[test]
    fn directories_and_symlinked_subdirs_are_refused_even_with_replace_existing() {
        let f = Fixture::new();
        fs::create_dir(f.swanctl.join("x509/type_ibmshare.pem")).unwrap();
        let e = f.layout("replace_existing = true").link().unwrap_err();
        assert!(matches!(e, SwanctlError::IsDir { key: "cert", .. }), "{e}");
        assert_eq!(f.layout("").inspect()[1].2.name(), "directory");
        fs::remove_dir(f.swanctl.join("x509/type_ibmshare.pem")).unwrap();

        let outside = f.tmp.path().join("outside");
        fs::create_dir(&outside).unwrap();
        fs::remove_dir(f.swanctl.join("x509ca")).unwrap();
        symlink(&outside, f.swanctl.join("x509ca")).unwrap();
        let e = f.layout("replace_existing = true").link().unwrap_err();
        assert!(
            matches!(&e, SwanctlError::UnsafeParent { what, .. } if what == "a symlink"),
            "{e}"
        );
        assert_eq!(f.layout("").inspect()[2].2.name(), "unsafe_parent");
        assert_eq!(
            fs::read_dir(&outside).unwrap().count(),
            0,
            "nothing written outside"
        );
    }

    #[test]
    fn a_missing_dir_is_named_with_what_to_install() {
        let f = Fixture::new();
        let l = f.layout("");
        fs::remove_dir_all(&f.swanctl).unwrap();
        let e = l.link().unwrap_err().to_string();
        assert!(
            e.contains("does not exist") && e.contains("strongswan-swanctl"),
            "{e}"
        );
    }
}
