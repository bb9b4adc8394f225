//! One writer per output directory: an exclusive `flock` on `output.dir/.lock`, held for the
//! life of a `run` daemon or a one-shot `renew`. The holder's pid is written into the file so
//! that the refusal can say who holds it.

use std::fs::OpenOptions;
use std::io::{Read, Seek, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};

pub const LOCK_FILE: &str = ".lock";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "another eit-certd{} is already writing to {}; stop it first, or ask it to renew now with \
         `systemctl kill -s USR1 eit-certd`{}",
        holder.map(|p| format!(" (pid {p})")).unwrap_or_default(),
        dir.display(),
        holder.map(|p| format!(" or `kill -USR1 {p}`")).unwrap_or_default()
    )]
    Held { dir: PathBuf, holder: Option<u32> },
    #[error("lock file {} is {what}; refusing to use it (it was not made by eit-certd): remove it and try again", path.display())]
    NotOurs { path: PathBuf, what: String },
    #[error("cannot open lock file {}: {cause}{}", path.display(), lock_hint(cause))]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
}

fn lock_hint(e: &std::io::Error) -> &'static str {
    match e.raw_os_error() {
        Some(nix::libc::EROFS) => " (read-only file system: point output.dir at a writable place)",
        Some(nix::libc::EACCES) | Some(nix::libc::EPERM) => {
            " (permission denied: run as root, or make output.dir writable by this user)"
        }
        _ => "",
    }
}

/// Who holds an output directory's lock, as `status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum Holder {
    /// A process holds the lock: a daemon (or a one-shot `renew` just now).
    Held { pid: u32 },
    /// Nobody holds it: nothing will renew until a daemon runs.
    Free,
    /// No lock file yet: nothing has ever run here.
    NoLockFile,
}

/// Who holds `dir`'s lock, found in the kernel's table of locks (`/proc/locks`) by the lock
/// file's device and inode: taking the lock to test it would race a daemon starting, and
/// a pid written into the file may be stale (a daemon that was killed).
pub fn holder(dir: &Path) -> Holder {
    let Ok(meta) = std::fs::symlink_metadata(dir.join(LOCK_FILE)) else {
        return Holder::NoLockFile;
    };
    let dev = meta.dev();
    let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
    let want = format!("{major:02x}:{minor:02x}:{}", meta.ino());
    let locks = std::fs::read_to_string("/proc/locks").unwrap_or_default();
    locks
        .lines()
        .filter_map(|line| {
            // "1: FLOCK  ADVISORY  WRITE 1234 fe:00:5578896 0 EOF"
            let fields: Vec<&str> = line.split_whitespace().collect();
            let (kind, access, pid, id) = (
                fields.get(1)?,
                fields.get(3)?,
                fields.get(4)?,
                fields.get(5)?,
            );
            (*kind == "FLOCK" && *access == "WRITE" && *id == want)
                .then(|| pid.parse().ok())
                .flatten()
        })
        .next()
        .map_or(Holder::Free, |pid| Holder::Held { pid })
}

/// Released when dropped (the kernel drops the flock with the descriptor).
#[derive(Debug)]
pub struct DirLock {
    _lock: Flock<std::fs::File>,
}

impl DirLock {
    /// Takes the lock without waiting; `dir` is created if missing.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let path = dir.join(LOCK_FILE);
        let io = |cause| LockError::Io {
            path: path.clone(),
            cause,
        };
        let created = !dir.exists();
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(dir)
            .map_err(io)?;
        if created {
            // Exactly 0755 whatever the umask (the unit's is 0077): consumers that run as
            // another user reach `current/` through it.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o755)).map_err(io)?;
        }
        // Never follow a planted link: a root daemon would truncate whatever it points at.
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .mode(0o644)
            .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC)
            .open(&path)
            .map_err(|cause| {
                if cause.raw_os_error() == Some(nix::libc::ELOOP) {
                    LockError::NotOurs {
                        path: path.clone(),
                        what: "a symlink".into(),
                    }
                } else {
                    io(cause)
                }
            })?;
        let meta = file.metadata().map_err(io)?;
        let me = nix::unistd::geteuid().as_raw();
        let not_ours = if !meta.is_file() {
            Some("not a regular file".to_string())
        } else if meta.nlink() != 1 {
            // A hard link to another file (same file system) would be truncated through it.
            Some(format!("a file with {} hard links", meta.nlink()))
        } else if meta.uid() != me {
            Some(format!("owned by uid {}, not by uid {me}", meta.uid()))
        } else {
            None
        };
        if let Some(what) = not_ours {
            return Err(LockError::NotOurs {
                path: path.clone(),
                what,
            });
        }
        let mut lock = match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => lock,
            Err((mut file, _)) => {
                let mut text = String::new();
                let _ = file.read_to_string(&mut text);
                return Err(LockError::Held {
                    dir: dir.to_path_buf(),
                    holder: text.trim().parse().ok(),
                });
            }
        };
        lock.set_len(0).map_err(io)?;
        lock.rewind().map_err(io)?;
        writeln!(lock, "{}", std::process::id()).map_err(io)?;
        Ok(DirLock { _lock: lock })
    }
}

use std::os::unix::fs::DirBuilderExt;

#[cfg(test)]
mod tests {
    #[test]
    fn the_holder_is_found_in_the_kernels_lock_table() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(super::holder(tmp.path()), super::Holder::NoLockFile);
        let lock = DirLock::acquire(tmp.path()).unwrap();
        assert_eq!(
            super::holder(tmp.path()),
            super::Holder::Held {
                pid: std::process::id()
            }
        );
        drop(lock);
        // The pid stays in the file; the kernel knows better.
        assert_eq!(super::holder(tmp.path()), super::Holder::Free);
    }

    use super::*;

    #[test]
    fn second_holder_is_refused_with_the_first_pid() {
        let tmp = tempfile::tempdir().unwrap();
        let first = DirLock::acquire(tmp.path()).unwrap();
        // flock locks belong to the open file description, so a second open in the same
        // process conflicts just as another process would.
        let e = DirLock::acquire(tmp.path()).unwrap_err().to_string();
        assert!(e.contains(&format!("pid {}", std::process::id())), "{e}");
        assert!(e.contains("USR1"), "{e}");
        drop(first);
        assert!(DirLock::acquire(tmp.path()).is_ok());
    }

    #[test]
    fn a_planted_lock_file_is_refused_and_its_target_untouched() {
        let tmp = tempfile::tempdir().unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let dir = tmp.path().join("out");
        std::fs::create_dir(&dir).unwrap();
        std::os::unix::fs::symlink(&victim, dir.join(LOCK_FILE)).unwrap();
        let e = DirLock::acquire(&dir).unwrap_err();
        assert!(matches!(e, LockError::NotOurs { .. }), "{e}");
        assert!(e.to_string().contains("a symlink"), "{e}");
        std::fs::remove_file(dir.join(LOCK_FILE)).unwrap();
        std::fs::hard_link(&victim, dir.join(LOCK_FILE)).unwrap();
        let e = DirLock::acquire(&dir).unwrap_err();
        assert!(e.to_string().contains("2 hard links"), "{e}");
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
    }
}
