//! The consumers of the installed set, as `status` and `check` see them: for each configured
//! hook that reloads a consumer (stunnel, charon, tlshd), the consumer's running processes,
//! whether each one's user can read the files it needs, and, where the consumer can be asked
//! (charon, through swanctl), which serial it holds.
//!
//! A consumer is found by its hook (the shipped hook's file name) and its processes by name in
//! /proc: nothing here depends on a consumer's configuration, so what is reported is what the
//! shipped examples configure (stunnel and tlshd read `current/fullchain.pem` and
//! `current/key.pem`; swanctl reads the `[output.swanctl]` links as root and hands charon the
//! result).

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::Serialize;

use crate::config::{Config, HookConfig};
use crate::report::access::Credentials;
use crate::store;

/// A consumer that eit-certd reloads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Stunnel,
    Charon,
    Tlshd,
}

impl Kind {
    /// The consumer a hook reloads, from the shipped hook's file name.
    pub fn of_hook(hook: &HookConfig) -> Option<Kind> {
        let program = Path::new(hook.command.0.first()?).file_name()?.to_str()?;
        match program {
            "stunnel-reload" => Some(Kind::Stunnel),
            "swanctl-reload" => Some(Kind::Charon),
            "tlshd-restart" => Some(Kind::Tlshd),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Kind::Stunnel => "stunnel",
            Kind::Charon => "charon",
            Kind::Tlshd => "tlshd",
        }
    }

    /// Whether a process name (`/proc/PID/comm`) is this consumer's.
    fn matches(self, comm: &str) -> bool {
        match self {
            Kind::Stunnel => comm.starts_with("stunnel"),
            Kind::Charon => comm == "charon" || comm == "charon-systemd",
            Kind::Tlshd => comm == "tlshd",
        }
    }

    /// The files the consumer's own user opens (stunnel re-reads them on SIGHUP as the user
    /// it dropped to; tlshd opens them for every handshake). charon gets its credentials from
    /// swanctl, which the hook runs as root: none.
    fn reads(self, output_dir: &Path) -> Vec<PathBuf> {
        let current = output_dir.join(store::CURRENT);
        match self {
            Kind::Stunnel | Kind::Tlshd => vec![
                current.join(store::FULLCHAIN_FILE),
                current.join(store::KEY_FILE),
            ],
            Kind::Charon => vec![],
        }
    }
}

/// One running process of a consumer.
#[derive(Debug, Clone, Serialize)]
pub struct Process {
    pub pid: u32,
    pub uid: u32,
    pub gid: u32,
    /// Whether its user can read every file it needs (`None` when there is nothing to read).
    pub can_read: Option<bool>,
    /// Why not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problem: Option<String>,
    /// What fixes it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// A consumer and what is known about it.
#[derive(Debug, Clone, Serialize)]
pub struct Consumer {
    pub kind: Kind,
    /// The `[[hooks]]` entry that reloads it.
    pub hook: String,
    /// Its running processes; empty when it is not running.
    pub processes: Vec<Process>,
    /// Whether it holds the installed certificate (charon, asked through swanctl); `None`
    /// where it cannot be asked or the answer is unknown (see `serial_unknown`).
    pub holds_current: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub serial_unknown: Option<String>,
}

impl Consumer {
    /// Something a person must fix: a process that cannot read the set, or a charon that
    /// does not hold it.
    pub fn problems(&self) -> Vec<String> {
        let mut problems: Vec<String> = self
            .processes
            .iter()
            .filter_map(|p| Some(format!("{}; fix: {}", p.problem.as_ref()?, p.fix.as_ref()?)))
            .collect();
        if self.holds_current == Some(false) {
            problems.push(format!(
                "{} does not hold the installed certificate: run `systemctl kill -s USR1 \
                 eit-certd` (a renewal runs the hook {} again), and see the hook's output in \
                 `eit-certd status`",
                self.kind.name(),
                self.hook
            ));
        }
        problems
    }
}

/// The consumers the configured hooks reload, looked at now. `serial` is the installed
/// certificate's, to compare with what a consumer holds.
pub fn survey(config: &Config, serial: Option<&str>) -> Vec<Consumer> {
    let procs = processes();
    config
        .hooks
        .iter()
        .filter_map(|hook| {
            let kind = Kind::of_hook(hook)?;
            let files = kind.reads(&config.output.dir.0);
            let processes = procs
                .iter()
                .filter(|(_, comm)| kind.matches(comm))
                .filter_map(|(pid, _)| {
                    let creds = Credentials::of_process(*pid).ok()?;
                    Some(process(*pid, &creds, &files, config))
                })
                .collect();
            let (holds_current, serial_unknown) = match (kind, serial) {
                (Kind::Charon, Some(serial)) => match charon_holds(hook, serial) {
                    Ok(holds) => (Some(holds), None),
                    Err(why) => (None, Some(why)),
                },
                _ => (None, None),
            };
            Some(Consumer {
                kind,
                hook: hook.name.clone(),
                processes,
                holds_current,
                serial_unknown,
            })
        })
        .collect()
}

fn process(pid: u32, creds: &Credentials, files: &[PathBuf], config: &Config) -> Process {
    let denied = files.iter().find_map(|f| creds.can_read(f).err());
    let fix = denied.as_ref().map(|_| {
        let group = nix::unistd::Group::from_gid(creds.gid.into())
            .ok()
            .flatten()
            .map_or_else(|| creds.gid.to_string(), |g| g.name);
        match &config.output.group {
            Some(g) if *g == group => {
                "the files' modes or a directory on the way changed: run `eit-certd renew \
                 --force`"
                    .to_string()
            }
            _ => format!(
                "set `group = \"{group}\"` under [output] (the key becomes 0640 root:{group}), \
                 then `systemctl reload eit-certd` and `eit-certd renew --force`"
            ),
        }
    });
    Process {
        pid,
        uid: creds.uid,
        gid: creds.gid,
        can_read: (!files.is_empty()).then_some(denied.is_none()),
        problem: denied.map(|e| format!("pid {pid}: {e}")),
        fix,
    }
}

/// Every process's pid and name (`/proc/PID/comm`).
fn processes() -> Vec<(u32, String)> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| {
            let pid = e.file_name().to_str()?.parse::<u32>().ok()?;
            let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
            Some((pid, comm.trim_end().to_string()))
        })
        .collect()
}

/// Asks charon, through swanctl with the hook's own settings (`STRONGSWAN_CONF`,
/// `SWANCTL_DIR`, `SWANCTL`), whether it holds the certificate with `serial`.
fn charon_holds(hook: &HookConfig, serial: &str) -> Result<bool, String> {
    let swanctl = hook
        .env
        .get("SWANCTL")
        .cloned()
        .unwrap_or_else(|| "swanctl".into());
    let output = Command::new("timeout")
        .args([
            "5",
            &swanctl,
            "--list-certs",
            "--type",
            "x509",
            "--flag",
            "none",
        ])
        .env_clear()
        .env(
            "PATH",
            "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        )
        .envs(
            hook.env
                .iter()
                .filter(|(k, _)| *k == "STRONGSWAN_CONF" || *k == "SWANCTL_DIR"),
        )
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run swanctl: {e}"))?;
    if !output.status.success() {
        let why = crate::text::bounded(&String::from_utf8_lossy(&output.stderr), 200);
        return Err(format!(
            "swanctl --list-certs failed ({}): {why}",
            output.status
        ));
    }
    Ok(serials(&String::from_utf8_lossy(&output.stdout)).contains(&normalise(serial)))
}

/// The serials in `swanctl --list-certs` output (`serial:    0a:1b:...`), normalised.
fn serials(listing: &str) -> Vec<String> {
    listing
        .lines()
        .filter_map(|l| l.trim().strip_prefix("serial:"))
        .map(normalise)
        .collect()
}

/// Upper-case hex without colons or leading zeros.
fn normalise(serial: &str) -> String {
    let hex: String = serial
        .chars()
        .filter(char::is_ascii_hexdigit)
        .map(|c| c.to_ascii_uppercase())
        .collect();
    hex.trim_start_matches('0').to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serials_from_swanctl_match_ours_however_written() {
        let listing = "List of X.509 End Entity Certificates\n\n  subject:  \"CN=a\"\n  \
                       issuer:   \"CN=b\"\n  serial:    00:0a:1b:ff\n  pubkey:   RSA 2048 bits, \
                       has private key\n";
        assert_eq!(serials(listing), ["A1BFF"]);
        assert_eq!(normalise("0A1BFF"), "A1BFF");
    }

    #[test]
    fn consumers_are_known_by_their_shipped_hook() {
        let hook = |program: &str| HookConfig {
            name: "h".into(),
            command: crate::config::HookCommand(vec![program.into()]),
            timeout: crate::config::HookTimeout(std::time::Duration::from_secs(1)),
            retry: false,
            env: Default::default(),
        };
        assert_eq!(
            Kind::of_hook(&hook("/usr/lib/eit-certd/hooks/stunnel-reload")),
            Some(Kind::Stunnel)
        );
        assert_eq!(
            Kind::of_hook(&hook("/usr/lib/eit-certd/hooks/swanctl-reload")),
            Some(Kind::Charon)
        );
        assert_eq!(Kind::of_hook(&hook("/bin/true")), None);
        assert!(Kind::Stunnel.matches("stunnel4"));
        assert!(Kind::Charon.matches("charon-systemd"));
        assert!(!Kind::Tlshd.matches("tlshd-helper"));
    }
}
