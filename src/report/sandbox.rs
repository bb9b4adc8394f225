//! What the installed systemd unit lets the daemon write: `ProtectSystem=` and
//! `ReadWritePaths=`/`StateDirectory=` read from `eit-certd.service` and its drop-ins, the way
//! systemd finds them, so that `check` can say before the first renewal that a configured path
//! (the `[output.swanctl]` links, the metrics file) sits on a read-only mount under the unit.
//!
//! Only what decides writability is read; everything else in the unit is systemd's business.
//! Without an installed unit (a hand-run daemon, another init) nothing is known and nothing is
//! claimed.

use std::path::{Path, PathBuf};

/// The unit's name.
pub const UNIT: &str = "eit-certd.service";

/// Where systemd looks for units, most important first (`systemd.unit(5)`); `SYSTEMD_UNIT_PATH`
/// replaces the list, as it does for systemd.
fn search_path() -> Vec<PathBuf> {
    if let Some(custom) = std::env::var_os("SYSTEMD_UNIT_PATH") {
        return std::env::split_paths(&custom).collect();
    }
    [
        "/etc/systemd/system",
        "/run/systemd/system",
        "/usr/local/lib/systemd/system",
        "/usr/lib/systemd/system",
        "/lib/systemd/system",
    ]
    .iter()
    .map(PathBuf::from)
    .collect()
}

/// `ProtectSystem=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protect {
    No,
    /// `yes`: /usr, /boot, /efi read-only.
    Yes,
    /// `full`: /etc too.
    Full,
    /// `strict`: everything but the API file systems and the listed paths.
    Strict,
}

/// The unit's file-system sandbox, as far as writing goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sandbox {
    /// The unit file and the drop-ins that were read, in order.
    pub sources: Vec<PathBuf>,
    pub protect: Protect,
    /// `ReadWritePaths=`, without their `-`/`+` prefixes.
    pub writable: Vec<PathBuf>,
    /// `StateDirectory=`, under /var/lib.
    pub state: Vec<PathBuf>,
    /// `PrivateTmp=yes`: a private, writable /tmp and /var/tmp.
    pub private_tmp: bool,
}

impl Sandbox {
    /// The installed unit's sandbox, or `None` when no `eit-certd.service` is installed.
    pub fn installed() -> Option<Sandbox> {
        Sandbox::find(&search_path())
    }

    fn find(dirs: &[PathBuf]) -> Option<Sandbox> {
        let unit = dirs.iter().map(|d| d.join(UNIT)).find(|p| p.is_file())?;
        // Drop-ins from every directory; a name in an earlier directory hides the same name in
        // later ones; all are applied in name order.
        let mut dropins: std::collections::BTreeMap<std::ffi::OsString, PathBuf> =
            Default::default();
        for dir in dirs.iter().rev() {
            let Ok(entries) = std::fs::read_dir(dir.join(format!("{UNIT}.d"))) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                if Path::new(&name).extension().is_some_and(|e| e == "conf") {
                    dropins.insert(name, entry.path());
                }
            }
        }
        let mut sandbox = Sandbox {
            sources: Vec::new(),
            protect: Protect::No,
            writable: Vec::new(),
            state: Vec::new(),
            private_tmp: false,
        };
        for file in std::iter::once(unit).chain(dropins.into_values()) {
            let Ok(text) = crate::files::read_to_string(
                &file,
                crate::files::Links::Follow,
                crate::files::limit::CONFIG,
            ) else {
                continue;
            };
            sandbox.apply(&text);
            sandbox.sources.push(file);
        }
        Some(sandbox)
    }

    /// Applies the `[Service]` settings of one unit file or drop-in.
    fn apply(&mut self, text: &str) {
        let mut in_service = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with('[') {
                in_service = line == "[Service]";
                continue;
            }
            if !in_service || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            let Some((key, value)) = line.split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "ProtectSystem" => {
                    self.protect = match value {
                        "strict" => Protect::Strict,
                        "full" => Protect::Full,
                        "yes" | "true" | "on" | "1" => Protect::Yes,
                        _ => Protect::No,
                    }
                }
                "PrivateTmp" => self.private_tmp = matches!(value, "yes" | "true" | "on" | "1"),
                // An empty assignment resets the list (systemd.exec(5)).
                "ReadWritePaths" if value.is_empty() => self.writable.clear(),
                "ReadWritePaths" => self.writable.extend(
                    value
                        .split_whitespace()
                        .map(|p| PathBuf::from(p.trim_start_matches(['-', '+']))),
                ),
                "StateDirectory" if value.is_empty() => self.state.clear(),
                "StateDirectory" => self.state.extend(
                    value
                        .split_whitespace()
                        .map(|d| Path::new("/var/lib").join(d.split(':').next().unwrap_or(d))),
                ),
                _ => {}
            }
        }
    }

    /// Whether the daemon, run by this unit, may create or replace files in `dir`.
    pub fn may_write_in(&self, dir: &Path) -> bool {
        if self
            .writable
            .iter()
            .chain(&self.state)
            .any(|w| dir.starts_with(w))
        {
            return true;
        }
        if self.private_tmp && (dir.starts_with("/tmp") || dir.starts_with("/var/tmp")) {
            return true;
        }
        let read_only: &[&str] = match self.protect {
            Protect::No => &[],
            Protect::Yes => &["/usr", "/boot", "/efi"],
            Protect::Full => &["/usr", "/boot", "/efi", "/etc"],
            Protect::Strict => return ["/dev", "/proc", "/sys"].iter().any(|p| dir.starts_with(p)),
        };
        !read_only.iter().any(|p| dir.starts_with(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHIPPED: &str = include_str!("../../examples/eit-certd.service");
    const SWANCTL_DROPIN: &str = include_str!("../../examples/eit-certd-swanctl.conf");

    fn sandbox(files: &[&str]) -> Sandbox {
        let mut s = Sandbox {
            sources: vec![],
            protect: Protect::No,
            writable: vec![],
            state: vec![],
            private_tmp: false,
        };
        for f in files {
            s.apply(f);
        }
        s
    }

    #[test]
    fn the_shipped_unit_writes_only_its_state_directory() {
        let s = sandbox(&[SHIPPED]);
        assert_eq!(s.protect, Protect::Strict);
        assert!(s.may_write_in(Path::new("/var/lib/eit-certd")));
        assert!(s.may_write_in(Path::new("/var/lib/eit-certd/generations")));
        assert!(!s.may_write_in(Path::new("/etc/swanctl/x509")));
        assert!(s.may_write_in(Path::new("/var/lib/prometheus/node-exporter")));
        assert!(!s.may_write_in(Path::new("/var/lib/prometheus")));
        assert!(!s.may_write_in(Path::new("/var/lib/eit-certd-other")));
        let s = sandbox(&[SHIPPED, SWANCTL_DROPIN]);
        assert!(s.may_write_in(Path::new("/etc/swanctl/x509")));
        assert!(s.may_write_in(Path::new("/etc/strongswan/swanctl/private")));
        assert!(!s.may_write_in(Path::new("/etc/swanctl/conf.d")));
    }

    #[test]
    fn an_empty_assignment_resets_and_other_sections_do_not_count() {
        let s = sandbox(&[
            SHIPPED,
            "[Service]\nReadWritePaths=\n[Install]\nReadWritePaths=/etc\n",
        ]);
        assert!(s.writable.is_empty());
        assert!(
            s.may_write_in(Path::new("/var/lib/eit-certd")),
            "StateDirectory stays"
        );
        assert!(!s.may_write_in(Path::new("/etc")));
        let s = sandbox(&["[Service]\nProtectSystem=full\n"]);
        assert!(!s.may_write_in(Path::new("/etc/swanctl")));
        assert!(s.may_write_in(Path::new("/srv/x")));
    }

    #[test]
    fn units_and_dropins_are_found_as_systemd_finds_them() {
        let tmp = tempfile::tempdir().unwrap();
        let (etc, lib) = (tmp.path().join("etc"), tmp.path().join("lib"));
        std::fs::create_dir_all(etc.join(format!("{UNIT}.d"))).unwrap();
        std::fs::create_dir_all(lib.join(format!("{UNIT}.d"))).unwrap();
        let dirs = [etc.clone(), lib.clone()];
        assert_eq!(Sandbox::find(&dirs), None);
        std::fs::write(lib.join(UNIT), SHIPPED).unwrap();
        std::fs::write(lib.join(format!("{UNIT}.d/swanctl.conf")), SWANCTL_DROPIN).unwrap();
        assert!(Sandbox::find(&dirs)
            .unwrap()
            .may_write_in(Path::new("/etc/swanctl/x509")));
        // The administrator's drop-in of the same name hides the vendor's.
        std::fs::write(etc.join(format!("{UNIT}.d/swanctl.conf")), "[Service]\n").unwrap();
        let s = Sandbox::find(&dirs).unwrap();
        assert!(!s.may_write_in(Path::new("/etc/swanctl/x509")));
        assert_eq!(s.sources.len(), 2);
    }
}
