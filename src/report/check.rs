//! `eit-certd check`: finds what would make the daemon fail before it runs. Offline checks
//! look at the configuration and the file system; the online check talks to the service and
//! does a full certificate round trip without installing anything.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use time::OffsetDateTime;

use crate::config::problem::{Problem, Setting};
use crate::config::{Config, Endpoint};
use crate::metadata::client::Client;
use crate::pki::{PrivateKey, TrustAnchors};
use crate::renew::Renewer;
use crate::store::spare::Prepared;
use crate::store::{self, Store};

fn problem(
    setting: impl Into<Setting>,
    what: impl Into<String>,
    fix: impl Into<String>,
) -> Problem {
    Problem::new(setting, what, fix)
}

/// Everything that can be checked without the network.
pub fn offline(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    check_output_dir(&config.output.dir, &mut problems);
    if let Err(e) = Store::from_config(&config.output) {
        problems.push(problem(
            "output.group",
            e.to_string(),
            "create the group or remove output.group",
        ));
    }
    if let Some(path) = &config.metadata.ca_file {
        // The reader every other file goes through: a FIFO does not block it and /dev/zero
        // does not fill memory (`run` already read it this way).
        match crate::files::read(
            path,
            crate::files::Links::Follow,
            crate::files::limit::CERTIFICATES,
        ) {
            Err(e) => problems.push(problem(
                "metadata.ca_file",
                e.to_string(),
                "point it at the PEM CA bundle that signs the metadata service's certificate",
            )),
            Ok(pem)
                if reqwest::Certificate::from_pem_bundle(&pem).map_or(true, |c| c.is_empty()) =>
            {
                problems.push(problem(
                    "metadata.ca_file",
                    format!("{} holds no PEM certificate", path.display()),
                    "point it at a PEM CA bundle",
                ))
            }
            Ok(_) => {}
        }
    }
    if let (Some(_), Endpoint::Url(url)) = (&config.metadata.ca_file, &config.metadata.endpoint) {
        if url.starts_with("http://") {
            problems.push(problem(
                "metadata.ca_file",
                "is set but metadata.endpoint is plain http, so it is never used",
                "use an https:// endpoint, or remove ca_file",
            ));
        }
    }
    if let Err(e) = TrustAnchors::load_at(&config.certificate, OffsetDateTime::now_utc()) {
        problems.push(problem(
            e.key,
            e.problem.to_string(),
            "point it at the PEM CA certificates (a file or a directory) the chain must end at",
        ));
    }
    problems.extend(hook_programs(config));
    if let Some(metrics) = &config.output.metrics_file {
        let dir = metrics.0.parent().unwrap_or(Path::new("/"));
        if !dir.is_dir() {
            problems.push(problem(
                "output.metrics_file",
                format!(
                    "{} does not exist, so the metrics file can never be written",
                    dir.display()
                ),
                "install prometheus-node-exporter (its textfile directory is \
                 /var/lib/prometheus/node-exporter), or point metrics_file at an existing directory",
            ));
        }
    }
    check_installed_modes(config, &mut problems);
    problems.extend(crate::integrations::swanctl::check(config));
    if let Some(sandbox) = crate::report::sandbox::Sandbox::installed() {
        problems.extend(unit_may_write(config, &sandbox));
    }
    // A running consumer that cannot read the set fails at its next reload, whatever the
    // hook says (only processes that run now are known; the serial is not `check`'s business).
    for consumer in crate::report::consumers::survey(config, None) {
        for p in &consumer.processes {
            if let (Some(what), Some(fix)) = (&p.problem, &p.fix) {
                problems.push(problem(
                    Setting::Hook {
                        name: consumer.hook.clone(),
                        key: None,
                    },
                    format!("{} {what}", consumer.kind.name()),
                    fix.as_str(),
                ));
            }
        }
    }
    problems
}

/// The hook programs: absolute paths to executable files. `run` refuses to start with a
/// problem here (`check` reports it): a hook that cannot run fails at every install.
pub fn hook_programs(config: &Config) -> Vec<Problem> {
    let mut problems = Vec::new();
    for hook in &config.hooks {
        let program = Path::new(&hook.command.0[0]);
        let key = Setting::Hook {
            name: hook.name.clone(),
            key: Some("command"),
        };
        if !program.is_absolute() {
            problems.push(problem(
                key,
                format!("{} is not an absolute path", program.display()),
                "hooks run with a minimal PATH; give the full path",
            ));
            continue;
        }
        match std::fs::metadata(program) {
            Err(e) => problems.push(problem(
                key,
                format!("{}: {e}", program.display()),
                "install it or fix the path",
            )),
            Ok(m) if !m.is_file() || m.permissions().mode() & 0o111 == 0 => problems.push(problem(
                key,
                format!("{} is not an executable file", program.display()),
                format!("chmod +x {}", program.display()),
            )),
            Ok(_) => {}
        }
    }
    problems
}

/// Every directory the daemon writes in, with the config key that puts it there: under the
/// installed unit's `ProtectSystem=strict` a path outside `ReadWritePaths=` fails at the first
/// renewal (or silently, for the metrics), long after `check` said OK.
pub fn unit_may_write(config: &Config, sandbox: &crate::report::sandbox::Sandbox) -> Vec<Problem> {
    let mut writes: Vec<(&'static str, std::path::PathBuf)> =
        vec![("output.dir", config.output.dir.0.clone())];
    if let Some(layout) = crate::integrations::swanctl::Layout::from_config(config) {
        for role in [
            crate::integrations::swanctl::Role::Key,
            crate::integrations::swanctl::Role::Cert,
            crate::integrations::swanctl::Role::Chain,
        ] {
            let path = layout.path(role);
            let dir = path.parent().unwrap_or(layout.dir()).to_path_buf();
            writes.push((role.config_key(), dir));
        }
    }
    if let Some(metrics) = &config.output.metrics_file {
        let dir = metrics.0.parent().unwrap_or(Path::new("/")).to_path_buf();
        writes.push(("output.metrics_file", dir));
    }
    let units = sandbox
        .sources
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    writes
        .into_iter()
        .filter(|(_, dir)| !sandbox.may_write_in(dir))
        .map(|(key, dir)| {
            let fix = if key.starts_with("output.swanctl.") {
                "install /usr/share/doc/eit-certd/examples/eit-certd-swanctl.conf as \
                 /etc/systemd/system/eit-certd.service.d/swanctl.conf (it lists swanctl's \
                 directories), then `systemctl daemon-reload`"
                    .to_string()
            } else {
                format!(
                    "add `ReadWritePaths={}` to a drop-in (`systemctl edit eit-certd`), or \
                     choose a path the unit may write",
                    dir.display()
                )
            };
            problem(
                key,
                format!(
                    "{} is read-only for the daemon under its systemd unit (ProtectSystem=strict \
                     and not in ReadWritePaths= of {units})",
                    dir.display()
                ),
                fix,
            )
        })
        .collect()
}

/// Who may change the config file: a file that others can write lets them choose the hooks a
/// root daemon runs and where it writes keys.
pub fn config_file(path: &Path) -> Vec<Problem> {
    use std::os::unix::fs::MetadataExt;
    let mut problems = Vec::new();
    let Ok(meta) = std::fs::metadata(path) else {
        return problems;
    };
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        problems.push(problem(
            Setting::File,
            format!(
                "{} is owned by uid {}, neither root nor this user (uid {me}): its owner decides which commands eit-certd runs",
                path.display(),
                meta.uid()
            ),
            format!("chown root {}", path.display()),
        ));
    }
    // Its directory (and every one above): whoever may rename files there replaces the
    // config file, whatever the file's own mode.
    if let Some(bad) = crate::files::unsafe_ancestor(path) {
        problems.push(problem(
            Setting::File,
            bad.to_string(),
            format!(
                "`chown root {0}` and `chmod go-w {0}`, or keep the config elsewhere",
                bad.dir.display()
            ),
        ));
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o022 != 0 {
        problems.push(problem(
            Setting::File,
            format!(
                "{} is writable by {} (mode {mode:o}): whoever can write it decides which commands eit-certd runs",
                path.display(),
                if mode & 0o002 != 0 { "everyone" } else { "its group" }
            ),
            format!("chmod 644 {}", path.display()),
        ));
    }
    problems
}

/// `check` reports [`config_file`]'s findings as problems; `run` and `renew` go on, saying
/// what is wrong.
pub fn warn_about_config_file(path: &Path) {
    for p in config_file(path) {
        tracing::warn!("{p}");
    }
}

fn check_output_dir(dir: &Path, problems: &mut Vec<Problem>) {
    if let Err(e) = Store::new(dir, 1, None).and_then(|store| store.check_safe()) {
        problems.push(problem(
            "output.dir",
            e.to_string(),
            "only the user eit-certd runs as may write there",
        ));
    }
    let existing = dir
        .ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"));
    match std::fs::metadata(existing) {
        Ok(m) if !m.is_dir() => problems.push(problem(
            "output.dir",
            format!("{} is not a directory", existing.display()),
            "point output.dir at a directory",
        )),
        Ok(_) => {
            if let Some(why) = unfit_file_system(existing) {
                problems.push(problem(
                    "output.dir",
                    format!("{} {why}", existing.display()),
                    "point output.dir at a directory on a real, writable file system, e.g. \
                     /etc/eit-certd/certs",
                ));
            } else if nix::unistd::access(existing, nix::unistd::AccessFlags::W_OK).is_err() {
                problems.push(problem(
                    "output.dir",
                    format!("{} is not writable by this user", existing.display()),
                    "run as root, or choose a directory this user can write",
                ));
            }
        }
        Err(e) => problems.push(problem(
            "output.dir",
            format!("{}: {e}", existing.display()),
            "create it",
        )),
    }
}

/// Why the file system holding `dir` cannot keep certificates: a kernel's virtual file system
/// (root may "write" to /proc, but nothing lands on disk) or one mounted read-only.
fn unfit_file_system(dir: &Path) -> Option<String> {
    use nix::sys::statfs::{self, FsType};
    const VIRTUAL: [(FsType, &str); 8] = [
        (statfs::PROC_SUPER_MAGIC, "proc"),
        (statfs::SYSFS_MAGIC, "sysfs"),
        (statfs::DEBUGFS_MAGIC, "debugfs"),
        (statfs::TRACEFS_MAGIC, "tracefs"),
        (statfs::SECURITYFS_MAGIC, "securityfs"),
        (statfs::CGROUP_SUPER_MAGIC, "cgroup"),
        (statfs::CGROUP2_SUPER_MAGIC, "cgroup2"),
        (statfs::DEVPTS_SUPER_MAGIC, "devpts"),
    ];
    let fs = statfs::statfs(dir).ok()?;
    if let Some((_, name)) = VIRTUAL.iter().find(|(t, _)| *t == fs.filesystem_type()) {
        return Some(format!("is on the kernel's virtual {name} file system"));
    }
    let vfs = nix::sys::statvfs::statvfs(dir).ok()?;
    vfs.flags()
        .contains(nix::sys::statvfs::FsFlags::ST_RDONLY)
        .then(|| "is on a file system mounted read-only".to_string())
}

/// Installed key files must not be readable by others.
fn check_installed_modes(config: &Config, problems: &mut Vec<Problem>) {
    // The store's own rule (an unknown output.group is reported above).
    let Ok(store) = Store::from_config(&config.output) else {
        return;
    };
    let allowed = store.key_mode();
    let current = config.output.dir.join(store::CURRENT);
    for name in store::KEY_FILES {
        let path = current.join(name);
        if let Ok(m) = std::fs::metadata(&path) {
            let mode = m.permissions().mode() & 0o777;
            if mode & !allowed != 0 {
                problems.push(problem(
                    "output.dir",
                    format!(
                        "{} has mode {mode:o}, readable beyond {allowed:o}",
                        path.display()
                    ),
                    format!(
                        "chmod {allowed:o} {} (eit-certd fixes it at its next start)",
                        path.display()
                    ),
                ));
            }
        }
    }
}

/// Token, CSR, certificate and validation against the live service, through the renewal
/// pipeline itself ([`Renewer::dry_run`]): the same requests and checks as a renewal, with
/// nothing installed.
pub async fn online(config: &Config) -> anyhow::Result<String> {
    let client = Client::connect(&config.metadata)?;
    client.token().await?;
    let store = Store::from_config(&config.output)?;
    let renewer = Renewer::new(config.clone(), client, store)?;
    let key = PrivateKey::generate_blocking(config.certificate.key_bits.0).await?;
    let prepared = Prepared::new(key, &config.certificate.subject)?;
    let verified = renewer.dry_run(prepared).await?;
    Ok(format!(
        "online: {} answered; a token and a test certificate (serial {}, lifetime {}) validated; nothing was installed",
        renewer.client().base_url(),
        verified.leaf.serial_hex,
        humantime::format_duration(verified.leaf.lifetime())
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str, dir: &Path) -> Config {
        Config::parse(
            &format!("[output]\ndir = \"{}\"\n{extra}", dir.display()),
            Path::new("t.toml"),
        )
        .unwrap()
    }

    #[test]
    fn a_clean_config_has_no_problems() {
        let tmp = tempfile::tempdir().unwrap();
        assert_eq!(offline(&config("", &tmp.path().join("out"))), vec![]);
    }

    #[test]
    fn each_problem_names_its_key_and_a_fix() {
        let tmp = tempfile::tempdir().unwrap();
        let not_exec = tmp.path().join("hook.sh");
        std::fs::write(&not_exec, "#!/bin/sh\n").unwrap();
        let extra = format!(
            "[metadata]\nca_file = \"/nonexistent/ca.pem\"\n\
             [certificate]\ntrust_anchor = \"{}\"\n\
             [[hooks]]\nname = \"a\"\ncommand = [\"/nonexistent/prog\"]\n\
             [[hooks]]\nname = \"b\"\ncommand = [\"relative\"]\n\
             [[hooks]]\nname = \"c\"\ncommand = [\"{}\"]\n",
            not_exec.display(),
            not_exec.display()
        );
        let problems = offline(&config(&extra, &tmp.path().join("out")));
        let keys: Vec<String> = problems.iter().map(|p| p.setting.to_string()).collect();
        assert_eq!(
            keys,
            [
                "metadata.ca_file",
                "metadata.ca_file",
                "certificate.trust_anchor",
                "hooks.a.command",
                "hooks.b.command",
                "hooks.c.command"
            ],
            "{problems:#?}"
        );
        assert!(problems.iter().all(|p| !p.fix.is_empty()));
        assert!(problems[5].fix.starts_with("chmod +x"));
    }

    #[test]
    fn output_dir_under_a_file_is_a_problem() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("f");
        std::fs::write(&file, "").unwrap();
        let problems = offline(&config("", &file.join("out")));
        assert_eq!(problems[0].setting, Setting::Key("output.dir"));
        assert!(problems[0].what.contains("not a directory"));
    }
}
