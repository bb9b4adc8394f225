//! Reading files that someone else could have planted or replaced: every read is bounded, only
//! regular files are read, and where a planted symlink could redirect us it is not followed.
//!
//! The output directory, the config file and the CA files are ordinary paths, but what sits at
//! them is not trusted: `cert.pem` may have become a link to `/dev/zero`, a FIFO that never
//! answers, or a symlink to a file we must not touch. Opening with `O_NONBLOCK` makes a FIFO
//! open return at once, `fstat` on the open descriptor (not the path, which could be swapped
//! in between) tells what it really is, and the read stops one byte past the cap.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use zeroize::Zeroizing;

/// Caps for what we read, by kind. Each is far above anything legitimate.
pub mod limit {
    /// A PEM file holding a certificate or a chain (the service sends two certificates).
    pub const CERTIFICATES: u64 = 1024 * 1024;
    /// A PEM private key (RSA-8192 in PKCS#8 is about 6.5 KiB).
    pub const KEY: u64 = 64 * 1024;
    /// The config file.
    pub const CONFIG: u64 = 1024 * 1024;
    /// `state.json`.
    pub const STATE: u64 = 1024 * 1024;
}

/// Whether a symlink at the final path component is followed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Links {
    /// The path is the administrator's (a config file managed as a symlink is normal).
    Follow,
    /// The path is inside a directory we own: a symlink there was planted.
    Refuse,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read {}: {cause}", path.display())]
    Io {
        path: PathBuf,
        cause: std::io::Error,
    },
    #[error("{} is a symlink; refusing to follow it (remove it; eit-certd writes a regular file there)", path.display())]
    Symlink { path: PathBuf },
    #[error("{} is {what}, not a regular file; refusing to read it", path.display())]
    NotRegular { path: PathBuf, what: &'static str },
    #[error("{} is larger than {limit} bytes; refusing to read it", path.display())]
    TooLarge { path: PathBuf, limit: u64 },
}

impl ReadError {
    /// The file does not exist (as opposed to existing and being unusable).
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io { cause, .. } if cause.kind() == std::io::ErrorKind::NotFound)
    }

    /// We may not open the file (its mode or owner keeps us out), as opposed to it being bad.
    pub fn is_permission_denied(&self) -> bool {
        matches!(self, ReadError::Io { cause, .. } if cause.kind() == std::io::ErrorKind::PermissionDenied)
    }

    pub fn path(&self) -> &Path {
        match self {
            ReadError::Io { path, .. }
            | ReadError::Symlink { path }
            | ReadError::NotRegular { path, .. }
            | ReadError::TooLarge { path, .. } => path,
        }
    }
}

/// Opens `path` for reading and checks that it is a regular file.
pub fn open_regular(path: &Path, links: Links) -> Result<File, ReadError> {
    let mut flags = nix::libc::O_NONBLOCK | nix::libc::O_CLOEXEC | nix::libc::O_NOCTTY;
    if links == Links::Refuse {
        flags |= nix::libc::O_NOFOLLOW;
    }
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(flags)
        .open(path)
        .map_err(|cause| {
            if links == Links::Refuse && cause.raw_os_error() == Some(nix::libc::ELOOP) {
                ReadError::Symlink {
                    path: path.to_path_buf(),
                }
            } else {
                ReadError::Io {
                    path: path.to_path_buf(),
                    cause,
                }
            }
        })?;
    let meta = file.metadata().map_err(|cause| ReadError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    let kind = meta.file_type();
    if !kind.is_file() {
        let what = if kind.is_dir() {
            "a directory"
        } else if kind.is_fifo() {
            "a FIFO"
        } else if kind.is_char_device() {
            "a character device"
        } else if kind.is_block_device() {
            "a block device"
        } else if kind.is_socket() {
            "a socket"
        } else {
            "not a regular file"
        };
        return Err(ReadError::NotRegular {
            path: path.to_path_buf(),
            what,
        });
    }
    Ok(file)
}

/// Why a file inside a directory we own cannot be changed through [`open_ours`].
#[derive(Debug, thiserror::Error)]
pub enum NotOurs {
    #[error(transparent)]
    Read(#[from] ReadError),
    #[error("{} has {links} hard links; changing it would change another file too", path.display())]
    HardLinked { path: PathBuf, links: u64 },
    #[error("{} is owned by uid {uid}, not by eit-certd (uid {me}); check who wrote it", path.display())]
    Owner { path: PathBuf, uid: u32, me: u32 },
}

/// The one way to open a file inside a directory we own before writing, chmodding or
/// wiping it: never through a symlink, only a regular file, with no other hard link (a
/// planted hard link to `/etc/shadow` would otherwise be zeroed or chmodded), owned by us.
pub fn open_ours(path: &Path, write: bool) -> Result<File, NotOurs> {
    use std::os::unix::fs::MetadataExt;
    let file = if write {
        OpenOptions::new()
            .write(true)
            .custom_flags(
                nix::libc::O_NOFOLLOW
                    | nix::libc::O_NONBLOCK
                    | nix::libc::O_CLOEXEC
                    | nix::libc::O_NOCTTY,
            )
            .open(path)
            .map_err(|cause| ReadError::Io {
                path: path.to_path_buf(),
                cause,
            })?
    } else {
        open_regular(path, Links::Refuse)?
    };
    let meta = file.metadata().map_err(|cause| ReadError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    if !meta.file_type().is_file() {
        return Err(NotOurs::Read(ReadError::NotRegular {
            path: path.to_path_buf(),
            what: "not a regular file",
        }));
    }
    if meta.nlink() > 1 {
        return Err(NotOurs::HardLinked {
            path: path.to_path_buf(),
            links: meta.nlink(),
        });
    }
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me {
        return Err(NotOurs::Owner {
            path: path.to_path_buf(),
            uid: meta.uid(),
            me,
        });
    }
    Ok(file)
}

/// A directory on the way to something we write or trust that someone else could change.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{} is {why}: whoever controls it can replace what lies below it", dir.display())]
pub struct UnsafeAncestor {
    pub dir: PathBuf,
    pub why: String,
}

/// The first directory above `path` (its parent, then up to `/`, after resolving links in
/// the part that exists) that is owned by neither root nor us, or that its group or everyone
/// may write without the sticky bit. As OpenSSH's `safe_path` judges it: in a sticky
/// directory such as /tmp others cannot rename or remove what we own; in a directory they
/// may write (or own), they can replace `path`'s parent with a link of their choosing.
pub fn unsafe_ancestor(path: &Path) -> Option<UnsafeAncestor> {
    use std::os::unix::fs::MetadataExt;
    let parent = path.parent()?;
    // The part that exists, resolved: what lies beyond it will be created by us.
    let existing = parent.ancestors().find(|p| p.exists())?;
    let real = std::fs::canonicalize(existing).ok()?;
    let me = nix::unistd::geteuid().as_raw();
    for dir in real.ancestors() {
        let Ok(meta) = std::fs::metadata(dir) else {
            continue;
        };
        let mode = meta.mode() & 0o7777;
        let why = if meta.uid() != 0 && meta.uid() != me {
            format!("owned by uid {}, neither root nor uid {me}", meta.uid())
        } else if mode & 0o022 != 0 && mode & 0o1000 == 0 {
            let who = if mode & 0o002 != 0 {
                "everyone"
            } else {
                "its group"
            };
            format!("writable by {who} (mode {mode:o}) and not sticky")
        } else {
            continue;
        };
        return Some(UnsafeAncestor {
            dir: dir.to_path_buf(),
            why,
        });
    }
    None
}

/// Reads all of `path`, at most `limit` bytes.
pub fn read(path: &Path, links: Links, limit: u64) -> Result<Vec<u8>, ReadError> {
    let file = open_regular(path, links)?;
    let mut data = Vec::new();
    read_into(file, path, limit, &mut data)?;
    Ok(data)
}

/// [`read`] into a buffer that is wiped when dropped, for key material. Reserved up front so
/// that growing it leaves no stale copies behind.
pub fn read_secret(path: &Path, links: Links, limit: u64) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    read_secret_from(open_regular(path, links)?, path, limit)
}

/// [`read_secret`] of a file already opened with [`open_regular`], for callers that check
/// more (owner, mode) on the open descriptor before reading it.
pub fn read_secret_from(
    file: File,
    path: &Path,
    limit: u64,
) -> Result<Zeroizing<Vec<u8>>, ReadError> {
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let mut data = Zeroizing::new(Vec::with_capacity(size.min(limit) as usize + 1));
    read_into(file, path, limit, &mut data)?;
    Ok(data)
}

/// [`read`] as UTF-8 text; an invalid byte is an `InvalidData` error naming the offset.
pub fn read_to_string(path: &Path, links: Links, limit: u64) -> Result<String, ReadError> {
    let bytes = read(path, links, limit)?;
    String::from_utf8(bytes).map_err(|e| ReadError::Io {
        path: path.to_path_buf(),
        cause: std::io::Error::new(std::io::ErrorKind::InvalidData, e.utf8_error()),
    })
}

fn read_into(file: File, path: &Path, limit: u64, data: &mut Vec<u8>) -> Result<(), ReadError> {
    // One byte past the cap tells "exactly at the cap" from "larger".
    let mut taken = file.take(limit + 1);
    taken.read_to_end(data).map_err(|cause| ReadError::Io {
        path: path.to_path_buf(),
        cause,
    })?;
    if data.len() as u64 > limit {
        return Err(ReadError::TooLarge {
            path: path.to_path_buf(),
            limit,
        });
    }
    Ok(())
}

/// What every file eit-certd writes is named while it is being written, before a rename
/// gives it its real name: a name that starts with it is ours and unfinished (a crash between
/// the two leaves one behind, which the next install removes, and which the daemon's watch
/// ignores).
pub const TMP_PREFIX: &str = ".tmp-";

/// Whether `name` is a file being written (see [`TMP_PREFIX`]).
pub fn is_temporary(name: &std::ffi::OsStr) -> bool {
    name.as_encoded_bytes().starts_with(TMP_PREFIX.as_bytes())
}

/// A write that failed: which step, on which file, and why.
#[derive(Debug, thiserror::Error)]
#[error("cannot {action} {}: {cause}{}", path.display(), write_hint(path, cause))]
pub struct WriteError {
    /// The step that failed (`create`, `write`, `fsync`, `replace`, ...).
    pub action: &'static str,
    pub path: PathBuf,
    pub cause: std::io::Error,
}

fn write_hint(path: &Path, e: &std::io::Error) -> String {
    let dir = path.parent().unwrap_or(Path::new("/")).display();
    match e.raw_os_error() {
        _ if e.kind() == std::io::ErrorKind::PermissionDenied => {
            format!(" (permission denied: run as root, or make {dir} writable by this user)")
        }
        Some(nix::libc::ENOSPC) => format!(" (the file system is full: free space under {dir})"),
        Some(nix::libc::EFBIG) => {
            " (a file size limit was hit: check `ulimit -f` / LimitFSIZE= for this service)".into()
        }
        Some(nix::libc::EROFS) => format!(" (read-only file system: {dir} cannot be written)"),
        _ => String::new(),
    }
}

fn write_error(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> WriteError {
    let path = path.to_path_buf();
    move |cause| WriteError {
        action,
        path,
        cause,
    }
}

/// Creates `path` (which must not exist) holding `data` with `mode` (and `group`, if given)
/// set before the first byte is written, and fsyncs it.
pub fn write_new(
    path: &Path,
    data: &[u8],
    mode: u32,
    group: Option<nix::unistd::Gid>,
) -> Result<(), WriteError> {
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode & 0o600)
        .open(path)
        .map_err(write_error("create", path))?;
    if let Some(gid) = group {
        nix::unistd::fchown(&f, None, Some(gid))
            .map_err(|e| write_error("chown", path)(e.into()))?;
    }
    f.set_permissions(std::fs::Permissions::from_mode(mode))
        .map_err(write_error("chmod", path))?;
    f.write_all(data).map_err(write_error("write", path))?;
    f.sync_all().map_err(write_error("fsync", path))
}

/// Makes a rename, a new entry or a removal in `dir` durable.
pub fn fsync_dir(dir: &Path) -> std::io::Result<()> {
    File::open(dir).and_then(|d| d.sync_all())
}

/// Replaces `path` with `data` atomically (temp file, fsync, rename, fsync of the directory).
/// Used for `state.json` and the metrics textfile.
pub fn write_atomic(path: &Path, data: &[u8], mode: u32) -> Result<(), WriteError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!("{TMP_PREFIX}{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&tmp);
    let result = write_new(&tmp, data, mode, None)
        .and_then(|()| std::fs::rename(&tmp, path).map_err(write_error("replace", path)))
        .and_then(|()| fsync_dir(dir).map_err(write_error("fsync", dir)));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regular_files_are_read_up_to_the_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        std::fs::write(&p, b"12345").unwrap();
        assert_eq!(read(&p, Links::Refuse, 5).unwrap(), b"12345");
        let e = read(&p, Links::Refuse, 4).unwrap_err();
        assert!(matches!(e, ReadError::TooLarge { limit: 4, .. }), "{e}");
        assert!(read(&tmp.path().join("missing"), Links::Refuse, 4)
            .unwrap_err()
            .is_not_found());
    }

    #[test]
    fn devices_fifos_and_directories_are_refused_without_blocking() {
        let tmp = tempfile::tempdir().unwrap();
        let fifo = tmp.path().join("fifo");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        // Nobody writes to the FIFO: a blocking open would hang here forever.
        let e = read(&fifo, Links::Follow, 10).unwrap_err();
        assert!(
            matches!(e, ReadError::NotRegular { what: "a FIFO", .. }),
            "{e}"
        );
        let e = read(Path::new("/dev/zero"), Links::Follow, 10).unwrap_err();
        assert!(e.to_string().contains("a character device"), "{e}");
        let e = read(tmp.path(), Links::Follow, 10).unwrap_err();
        assert!(e.to_string().contains("a directory"), "{e}");
    }

    #[test]
    fn planted_symlinks_are_refused_where_asked() {
        let tmp = tempfile::tempdir().unwrap();
        let target = tmp.path().join("target");
        std::fs::write(&target, b"x").unwrap();
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        assert_eq!(read(&link, Links::Follow, 10).unwrap(), b"x");
        let e = read(&link, Links::Refuse, 10).unwrap_err();
        assert!(matches!(e, ReadError::Symlink { .. }), "{e}");
        // A link to /dev/zero is a device once followed, and is still not read.
        let zero = tmp.path().join("zero");
        std::os::unix::fs::symlink("/dev/zero", &zero).unwrap();
        assert!(matches!(
            read(&zero, Links::Follow, 10).unwrap_err(),
            ReadError::NotRegular { .. }
        ));
    }

    #[test]
    fn atomic_write_replaces_whole_file() {
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("state.json");
        super::write_atomic(&p, b"one", 0o644).unwrap();
        super::write_atomic(&p, b"two", 0o644).unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 1);
    }
}
