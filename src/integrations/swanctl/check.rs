//! `check`'s part for `[output.swanctl]`: whether swanctl's directory is there and safe, each
//! path can become eit-certd's link, and who may write where on the way (read-only).

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::{Layout, PathState, Role, SwanctlError};
use crate::config::problem::Problem;
use crate::config::Config;

/// `check`'s part: the table's directory, each path, and who may write where.
pub fn check(config: &Config) -> Vec<Problem> {
    let Some(layout) = Layout::from_config(config) else {
        return Vec::new();
    };
    let problem = |key: &'static str, what: String, fix: String| Problem::new(key, what, fix);
    let mut problems = Vec::new();
    if let Err(e) = layout.check_dir() {
        let fix = match &e {
            SwanctlError::NotSafe(bad) => format!(
                "`chown root {0}` and `chmod go-w {0}`, or set output.swanctl.dir",
                bad.dir.display()
            ),
            _ => "apt-get install strongswan-swanctl (dnf install strongswan on RHEL), or set \
                  output.swanctl.dir"
                .into(),
        };
        problems.push(problem("output.swanctl.dir", e.to_string(), fix));
        return problems;
    }
    if let Err(e) = layout.writable() {
        problems.push(problem(
            "output.swanctl.dir",
            e.to_string(),
            "make the directory writable for eit-certd (under systemd: the swanctl drop-in)".into(),
        ));
    }
    let mut dirs = vec![layout.dir.clone()];
    for (role, path, state) in layout.inspect() {
        let key = role.config_key();
        match state {
            PathState::Foreign { what } if !layout.replace_existing => problems.push(problem(
                key,
                format!("{} is {what}, not eit-certd's", path.display()),
                "stop IBM's renewals (systemctl disable --now mount_helper.timer) if its mount \
                 helper wrote it, then set output.swanctl.replace_existing = true"
                    .into(),
            )),
            PathState::Directory => problems.push(problem(
                key,
                format!("{} is a directory", path.display()),
                format!("move it away, or choose another output.swanctl.{key}"),
            )),
            PathState::UnsafeParent { path: p, what } => problems.push(problem(
                key,
                format!(
                    "{} is {what}; eit-certd does not write through it",
                    p.display()
                ),
                "make it a real directory inside output.swanctl.dir".into(),
            )),
            _ => {}
        }
        // The existing directories on the way: whoever may write there may swap the link.
        let mut at = layout.dir.clone();
        for part in path
            .strip_prefix(&layout.dir)
            .unwrap_or(&path)
            .parent()
            .into_iter()
            .flat_map(|p| p.components())
        {
            at.push(part);
            if fs::symlink_metadata(&at).is_ok_and(|m| m.is_dir()) && !dirs.contains(&at) {
                dirs.push(at.clone());
            }
        }
        if role == Role::Key {
            if let Some(parent) = path.parent() {
                if let Ok(m) = fs::symlink_metadata(parent) {
                    let mode = m.permissions().mode() & 0o777;
                    if m.is_dir() && mode & 0o077 != 0 {
                        problems.push(problem(
                            key,
                            format!(
                                "{} has mode {mode:o}: others can list or enter the key's directory",
                                parent.display()
                            ),
                            format!("chmod 700 {}", parent.display()),
                        ));
                    }
                }
            }
        }
    }
    for dir in dirs {
        let Ok(m) = fs::metadata(&dir) else { continue };
        let mode = m.permissions().mode() & 0o777;
        if mode & 0o022 != 0 {
            problems.push(problem(
                "output.swanctl.dir",
                format!(
                    "{} has mode {mode:o}: users other than its owner can replace files in it",
                    dir.display()
                ),
                format!("chmod go-w {}", dir.display()),
            ));
        }
        if nix::unistd::access(&dir, nix::unistd::AccessFlags::W_OK).is_err() {
            problems.push(problem(
                "output.swanctl.dir",
                format!("{} is not writable by this user", dir.display()),
                "run eit-certd as root; under systemd, allow the path with ReadWritePaths= \
                 (examples/eit-certd-swanctl.conf)"
                    .into(),
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::swanctl::fixture::{config, Fixture};

    #[test]
    fn check_passes_before_the_first_install_and_names_foreign_paths() {
        let f = Fixture::new();
        let text = format!("dir = \"{}\"", f.swanctl.display());
        let c = config(&text, &f.out);
        assert_eq!(check(&c), vec![], "a fresh swanctl dir");
        fs::write(f.swanctl.join("x509ca/type_ibmshare_int.crt"), "x").unwrap();
        fs::set_permissions(f.swanctl.join("private"), fs::Permissions::from_mode(0o755)).unwrap();
        let problems = check(&c);
        let keys: Vec<String> = problems.iter().map(|p| p.setting.to_string()).collect();
        assert_eq!(
            keys,
            ["output.swanctl.key", "output.swanctl.chain"],
            "{problems:#?}"
        );
        assert!(problems[0].fix.starts_with("chmod 700"));
        assert!(problems[1].fix.contains("replace_existing = true"));
        let missing = config("dir = \"/nonexistent/swanctl\"", &f.out);
        assert_eq!(
            check(&missing)[0].setting,
            crate::config::problem::Setting::Key("output.swanctl.dir")
        );
    }
}
