//! strongSwan's swanctl credential paths (`[output.swanctl]`), for zonal File Storage shares
//! mounted over IPsec: resolving the configured layout, taking ownership of its three paths
//! (key, certificate, intermediate), pointing them at the current set, and reporting their
//! state to `check` and `status`. The connection `swanctl-config` prints is here too.
//!
//! Each path becomes a symlink to the same file under `<output.dir>/current/`, so it follows
//! every install without being touched again: the store swaps `current` with one rename, and
//! each file behind it is complete and never rewritten. Two reads (key, then certificate) that
//! straddle a swap can still get different generations; what makes that harmless:
//! - charon never reads these files itself: `swanctl --load-creds` does, and the shipped hook
//!   runs it after every swap, while eit-certd holds the output directory's lock, so nothing
//!   swaps again until the hook has loaded one generation's key and certificate;
//! - charon picks the private key for a certificate by the certificate's public key, so a key
//!   and a certificate of different generations are never used together; a racing load by
//!   someone else can at worst leave a certificate without its key, which the next load fixes
//!   (the hook checks that the new certificate's key is loaded, and fails otherwise).
//!
//! Relinking the three paths to a generation directory at each install would not be stronger:
//! three renames have windows of their own.
//!
//! What is ours: a symlink whose (absolute) target lies inside `output.dir`. Anything else at a
//! path (e.g. a regular file IBM's mount helper wrote) is refused, before anything is
//! requested or installed, unless `replace_existing = true`. Nothing outside `dir` is touched,
//! and no symlinked subdirectory is written through.
//!
//! The rooms: `layout` (the paths and what is at each), `link` (making them our links),
//! `status` and `check` (what those commands report), `template` (the connection
//! `swanctl-config` prints); this file keeps the error they share.

mod check;
#[cfg(test)]
mod fixture;
mod layout;
mod link;
mod status;
mod template;

pub use check::check;
pub use layout::{Layout, PathState, Role, DEFAULT_DIRS};
pub use link::Change;
pub use status::PathStatus;
pub use template::{default_connection_name, validate_connection_name, Connection};

use std::path::{Path, PathBuf};

/// Why a swanctl path cannot be linked; [`SwanctlError::is_config`] tells a fix of the
/// configuration or the files from a failure a retry may get past.
#[derive(Debug, thiserror::Error)]
pub enum SwanctlError {
    #[error(
        "output.swanctl.dir {} does not exist; install strongSwan's swanctl (apt-get install \
         strongswan-swanctl) or point output.swanctl.dir at its directory",
        .0.display()
    )]
    NoDir(PathBuf),
    #[error("output.swanctl.dir {} is not a directory", .0.display())]
    NotADir(PathBuf),
    #[error(
        "{} (output.swanctl.{key}) is {what}, not eit-certd's; refusing to replace it. If IBM's \
         mount helper wrote it, stop its renewals first (systemctl disable --now \
         mount_helper.timer), then set output.swanctl.replace_existing = true to hand the path \
         over to eit-certd",
        path.display()
    )]
    NotOurs {
        path: PathBuf,
        key: &'static str,
        what: String,
    },
    #[error(
        "{} (output.swanctl.{key}) is a directory; eit-certd replaces only files and symlinks. \
         Move it away, or choose another output.swanctl.{key}",
        path.display()
    )]
    IsDir { path: PathBuf, key: &'static str },
    #[error(
        "{} is {what}; refusing to write through it (nothing outside output.swanctl.dir is \
         touched). Make it a real directory, or choose other output.swanctl paths",
        path.display()
    )]
    UnsafeParent { path: PathBuf, what: String },
    #[error(
        "{0}. eit-certd makes root write links there; give it to root (`chown root` and `chmod \
         go-w` it), or choose another output.swanctl.dir"
    )]
    NotSafe(crate::files::UnsafeAncestor),
    #[error(
        "cannot write in {} (for output.swanctl.{key}): {cause}. Under systemd, install \
         /usr/share/doc/eit-certd/examples/eit-certd-swanctl.conf as \
         /etc/systemd/system/eit-certd.service.d/swanctl.conf; nothing was requested",
        dir.display()
    )]
    Unwritable {
        dir: PathBuf,
        key: &'static str,
        cause: std::io::Error,
    },
    #[error("cannot {action} {}: {cause}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        cause: std::io::Error,
    },
}

impl SwanctlError {
    /// Only a change of the configuration or of the files fixes it (not a retry).
    pub fn is_config(&self) -> bool {
        !matches!(self, SwanctlError::Io { .. })
    }
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> SwanctlError {
    let path = path.to_path_buf();
    move |cause| SwanctlError::Io {
        action,
        path,
        cause,
    }
}
