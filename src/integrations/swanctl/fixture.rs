//! What the swanctl unit tests share: a configuration with an `[output.swanctl]` table, and a
//! swanctl directory as strongSwan ships it beside an output directory.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use super::Layout;
use crate::config::Config;

pub(super) fn config(extra: &str, out: &Path) -> Config {
    Config::parse(
        &format!(
            "[output]\ndir = \"{}\"\n[output.swanctl]\n{extra}\n",
            out.display()
        ),
        Path::new("/etc/eit-certd/config.toml"),
    )
    .unwrap()
}

/// A swanctl directory as strongSwan ships it, and an output dir, in a temp dir.
pub(super) struct Fixture {
    pub(super) tmp: tempfile::TempDir,
    pub(super) swanctl: PathBuf,
    pub(super) out: PathBuf,
}

impl Fixture {
    pub(super) fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let swanctl = tmp.path().join("swanctl");
        for (d, mode) in [
            ("", 0o755),
            ("private", 0o700),
            ("x509", 0o755),
            ("x509ca", 0o755),
        ] {
            let p = swanctl.join(d);
            fs::create_dir_all(&p).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        }
        let out = tmp.path().join("out");
        Fixture { tmp, swanctl, out }
    }

    pub(super) fn layout(&self, extra: &str) -> Layout {
        let text = format!("dir = \"{}\"\n{extra}", self.swanctl.display());
        Layout::from_config(&config(&text, &self.out)).unwrap()
    }
}
