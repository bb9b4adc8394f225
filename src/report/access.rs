//! Whether another process could read a file: the permission walk the kernel does at open(2),
//! done on its behalf from its credentials in `/proc/PID/status`.
//!
//! Consumers read the installed set as their own users (stunnel drops to `stunnel4` after it
//! starts), so "the file is there" is not "the consumer can use it": one directory on the way
//! without search permission and a reload fails in the consumer's log while we report success.
//! Hooks ask before they signal (`eit-certd can-read --pid PID PATH...`), and `status` and
//! `check` ask for each consumer they can find.
//!
//! The walk follows symbolic links as open(2) does (at most [`MAX_LINKS`]), needs search
//! permission on every directory and read permission on the file, and grants everything to
//! uid 0. It reads mode bits only: POSIX ACLs and capabilities other than root's are not
//! consulted, so a file readable only through an ACL is reported unreadable (the safe side:
//! the hook refuses to say "taken" when it is not sure).

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

/// What open(2) allows before it gives up with ELOOP.
pub const MAX_LINKS: usize = 40;

/// The identity a process opens files with (the filesystem ids, which are the effective ids
/// unless the process changed them with setfsuid).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub uid: u32,
    pub gid: u32,
    /// Supplementary groups.
    pub groups: Vec<u32>,
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("no process {pid} (or its /proc/{pid}/status cannot be read: {cause})")]
    NoProcess { pid: u32, cause: std::io::Error },
    #[error("/proc/{pid}/status has no usable {field} line")]
    BadStatus { pid: u32, field: &'static str },
    #[error("{} is not an absolute path", path.display())]
    Relative { path: PathBuf },
    #[error("{} cannot be read by uid {uid}: {reason} at {}", path.display(), at.display())]
    Denied {
        path: PathBuf,
        uid: u32,
        /// The component where the walk stopped.
        at: PathBuf,
        reason: Denial,
    },
}

/// Why the walk stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Denial {
    #[error("no search (x) permission on the directory")]
    NoSearch,
    #[error("no read permission on the file")]
    NoRead,
    #[error("it does not exist")]
    Missing,
    #[error("a directory was expected")]
    NotDirectory,
    #[error("too many levels of symbolic links")]
    Loop,
    #[error("it cannot be inspected")]
    Unreadable,
}

impl Credentials {
    /// The filesystem ids of process `pid`.
    pub fn of_process(pid: u32) -> Result<Credentials, AccessError> {
        let status = fs::read_to_string(format!("/proc/{pid}/status"))
            .map_err(|cause| AccessError::NoProcess { pid, cause })?;
        Credentials::from_status(&status).map_err(|field| AccessError::BadStatus { pid, field })
    }

    /// Parses the `Uid:`, `Gid:` and `Groups:` lines of a `/proc/PID/status` text. The fourth
    /// field of `Uid:`/`Gid:` is the filesystem id, the one permission checks use.
    pub fn from_status(status: &str) -> Result<Credentials, &'static str> {
        let line = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|rest| {
                    rest.split_whitespace()
                        .map(str::parse::<u32>)
                        .collect::<Result<Vec<u32>, _>>()
                })
        };
        let fs_id = |name: &'static str| match line(name) {
            Some(Ok(ids)) if ids.len() == 4 => Ok(ids[3]),
            _ => Err(name.trim_end_matches(':')),
        };
        let uid = fs_id("Uid:")?;
        let gid = fs_id("Gid:")?;
        let groups = match line("Groups:") {
            Some(Ok(ids)) => ids,
            _ => return Err("Groups"),
        };
        Ok(Credentials { uid, gid, groups })
    }

    fn in_group(&self, gid: u32) -> bool {
        self.gid == gid || self.groups.contains(&gid)
    }

    /// Whether the mode bits of `meta` grant `want` (4 read, 1 search) to these credentials:
    /// the owner class if we own it, else the group class if we are in its group, else other.
    fn granted(&self, meta: &fs::Metadata, want: u32) -> bool {
        if self.uid == 0 {
            return true;
        }
        let mode = meta.mode();
        let bits = if meta.uid() == self.uid {
            mode >> 6
        } else if self.in_group(meta.gid()) {
            mode >> 3
        } else {
            mode
        };
        bits & want == want
    }

    /// Whether these credentials could open `path` for reading; the first obstacle otherwise.
    pub fn can_read(&self, path: &Path) -> Result<(), AccessError> {
        if !path.is_absolute() {
            return Err(AccessError::Relative {
                path: path.to_path_buf(),
            });
        }
        let deny = |at: &Path, reason| AccessError::Denied {
            path: path.to_path_buf(),
            uid: self.uid,
            at: at.to_path_buf(),
            reason,
        };
        // Components still to walk, last first; `dir` is where we are.
        let mut todo: Vec<std::ffi::OsString> = Vec::new();
        push_components(&mut todo, path);
        let mut dir = PathBuf::from("/");
        let mut links = 0;
        while let Some(name) = todo.pop() {
            // Entering `dir` to look up `name` needs search permission on it.
            let meta = fs::metadata(&dir).map_err(|_| deny(&dir, Denial::Unreadable))?;
            if !meta.is_dir() {
                return Err(deny(&dir, Denial::NotDirectory));
            }
            if !self.granted(&meta, 1) {
                return Err(deny(&dir, Denial::NoSearch));
            }
            if name == ".." {
                dir.pop();
                continue;
            }
            let next = dir.join(&name);
            let meta = match fs::symlink_metadata(&next) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    return Err(deny(&next, Denial::Missing))
                }
                Err(_) => return Err(deny(&next, Denial::Unreadable)),
            };
            if meta.file_type().is_symlink() {
                links += 1;
                if links > MAX_LINKS {
                    return Err(deny(&next, Denial::Loop));
                }
                let target = fs::read_link(&next).map_err(|_| deny(&next, Denial::Unreadable))?;
                if target.is_absolute() {
                    dir = PathBuf::from("/");
                }
                push_components(&mut todo, &target);
                continue;
            }
            dir = next;
        }
        // `dir` is now the file itself.
        let meta = fs::metadata(&dir).map_err(|_| deny(&dir, Denial::Unreadable))?;
        if !self.granted(&meta, 4) {
            return Err(deny(&dir, Denial::NoRead));
        }
        Ok(())
    }
}

/// Pushes the normal and `..` components of `path` onto `todo` so that the first is popped
/// first.
fn push_components(todo: &mut Vec<std::ffi::OsString>, path: &Path) {
    let parts: Vec<_> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    todo.extend(parts.into_iter().rev());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn nobody() -> Credentials {
        Credentials {
            uid: 65534,
            gid: 65534,
            groups: vec![],
        }
    }

    fn chmod(path: &Path, mode: u32) {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    /// A tree the way the store lays it out: out/generations/g1/{cert.pem,key.pem}, `current`.
    fn tree() -> (tempfile::TempDir, PathBuf) {
        let tmp = tempfile::tempdir().unwrap();
        chmod(tmp.path(), 0o755);
        let gen = tmp.path().join("generations/g1");
        fs::create_dir_all(&gen).unwrap();
        chmod(&tmp.path().join("generations"), 0o755);
        chmod(&gen, 0o755);
        fs::write(gen.join("cert.pem"), "c").unwrap();
        chmod(&gen.join("cert.pem"), 0o644);
        fs::write(gen.join("key.pem"), "k").unwrap();
        chmod(&gen.join("key.pem"), 0o600);
        std::os::unix::fs::symlink("generations/g1", tmp.path().join("current")).unwrap();
        let root = tmp.path().to_path_buf();
        (tmp, root)
    }

    #[test]
    fn status_lines_give_the_filesystem_ids() {
        let status =
            "Name:\tstunnel4\nUid:\t0\t105\t105\t106\nGid:\t0\t110\t110\t111\nGroups:\t4 110 \n";
        assert_eq!(
            Credentials::from_status(status).unwrap(),
            Credentials {
                uid: 106,
                gid: 111,
                groups: vec![4, 110]
            }
        );
        assert_eq!(
            Credentials::from_status("Uid:\t0\t0\t0\t0\nGroups:\t\n"),
            Err("Gid")
        );
        assert_eq!(
            Credentials::from_status("Uid:\t0\t0\t0\nGid:\t0\t0\t0\t0\nGroups:\n"),
            Err("Uid")
        );
    }

    #[test]
    fn a_closed_directory_on_the_way_is_named() {
        // The bug stunnel hit: generations/ 0700 under UMask=0077.
        let (_tmp, root) = tree();
        let cert = root.join("current/cert.pem");
        nobody().can_read(&cert).unwrap();
        chmod(&root.join("generations"), 0o700);
        match nobody().can_read(&cert) {
            Err(AccessError::Denied { at, reason, .. }) => {
                assert_eq!(at, root.join("generations"));
                assert_eq!(reason, Denial::NoSearch);
            }
            other => panic!("{other:?}"),
        }
        // Root reads anyway.
        Credentials {
            uid: 0,
            gid: 0,
            groups: vec![],
        }
        .can_read(&cert)
        .unwrap();
    }

    #[test]
    fn file_modes_owner_group_and_other() {
        let (_tmp, root) = tree();
        let key = root.join("current/key.pem");
        assert!(matches!(
            nobody().can_read(&key),
            Err(AccessError::Denied {
                reason: Denial::NoRead,
                ..
            })
        ));
        // 0640 and a group the process holds as a supplementary group.
        chmod(&root.join("generations/g1/key.pem"), 0o640);
        let gid = fs::metadata(&key).unwrap().gid();
        let member = Credentials {
            groups: vec![gid],
            ..nobody()
        };
        member.can_read(&key).unwrap();
        // The owner class decides for the owner, even when "other" would allow more.
        let owner = Credentials {
            uid: fs::metadata(&key).unwrap().uid(),
            gid: 65534,
            groups: vec![],
        };
        chmod(&root.join("generations/g1/key.pem"), 0o044);
        if owner.uid != 0 {
            assert!(owner.can_read(&key).is_err());
        }
    }

    #[test]
    fn links_are_followed_as_open_would_and_loops_end() {
        let (_tmp, root) = tree();
        std::os::unix::fs::symlink(root.join("current"), root.join("abs")).unwrap();
        std::os::unix::fs::symlink("../current/cert.pem", root.join("generations/rel")).unwrap();
        nobody().can_read(&root.join("abs/cert.pem")).unwrap();
        nobody().can_read(&root.join("generations/rel")).unwrap();
        std::os::unix::fs::symlink("loop", root.join("loop")).unwrap();
        assert!(matches!(
            nobody().can_read(&root.join("loop")),
            Err(AccessError::Denied {
                reason: Denial::Loop,
                ..
            })
        ));
        assert!(matches!(
            nobody().can_read(&root.join("current/missing.pem")),
            Err(AccessError::Denied {
                reason: Denial::Missing,
                ..
            })
        ));
        assert!(matches!(
            nobody().can_read(&root.join("current/cert.pem/x")),
            Err(AccessError::Denied {
                reason: Denial::NotDirectory,
                ..
            })
        ));
        assert!(nobody().can_read(Path::new("relative")).is_err());
    }

    #[test]
    fn our_own_process_reads_what_it_can_open() {
        let (_tmp, root) = tree();
        let me = Credentials::of_process(std::process::id()).unwrap();
        me.can_read(&root.join("current/key.pem")).unwrap();
    }
}
