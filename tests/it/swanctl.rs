//! Zonal shares over IPsec: `[output.swanctl]`, the `swanctl-reload` hook and `swanctl-config`.
//!
//! The first tests run the real binary against the emulator and look at the swanctl paths on
//! disk. The last one is the real thing: two network namespaces joined by a veth pair, one
//! charon as the mount target (responder, trusting only the emulator's root and requiring a
//! certificate) and one as the instance (initiator), whose swanctl directory eit-certd manages.
//! The data plane is strongSwan's userspace ESP (kernel-libipsec over a TUN device), because
//! this kernel's XFRM has no ESP/GCM; libipsec does tunnel mode only, so the test turns the
//! transport mode `swanctl-config` prints into tunnel mode, and it initiates explicitly
//! (libipsec sends no acquires). Each charon gets its own `/run` (a private mount namespace:
//! its pid file path is fixed) and its own strongswan.conf and swanctl directory.
//!
//! That test needs root, `ip netns`, /dev/net/tun and strongSwan (strongswan-charon,
//! strongswan-swanctl, libcharon-extra-plugins, libstrongswan-standard-plugins, which `.ci/run`
//! installs); without them it prints `SKIPPED: ...` and returns.

use std::collections::BTreeSet;
use std::fs;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::libc;

use crate::common::*;

fn hook() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks/swanctl-reload")
}

/// A swanctl directory as strongswan-swanctl ships it (minus the directories nobody uses here).
fn swanctl_dir(parent: &Path) -> PathBuf {
    let dir = parent.join("swanctl");
    for (sub, mode) in [
        ("", 0o755),
        ("private", 0o700),
        ("x509", 0o755),
        ("x509ca", 0o755),
        ("conf.d", 0o755),
    ] {
        let p = dir.join(sub);
        fs::create_dir_all(&p).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
    }
    dir
}

fn swanctl_table(dir: &Path, extra: &str) -> String {
    format!("[output.swanctl]\ndir = \"{}\"\n{extra}\n", dir.display())
}

const PATHS: [(&str, &str); 3] = [
    ("private/type_ibmshare.key", "key.pem"),
    ("x509/type_ibmshare.pem", "cert.pem"),
    ("x509ca/type_ibmshare_int.crt", "chain.pem"),
];

fn certificate_requests(emulator: &Emulator) -> usize {
    emulator
        .requests()
        .iter()
        .filter(|r| r["method"] == "POST" && r["path"] == "/identity/v1/certificates")
        .count()
}

#[test]
fn swanctl_paths_follow_the_current_set_and_the_key_stays_private() {
    let emulator = Emulator::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = swanctl_dir(tmp.path());
    fs::remove_dir(dir.join("private")).unwrap();
    let setup = Setup::new(&emulator, 2048, "", &swanctl_table(&dir, ""));

    let o = setup.run(&["check"]);
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("configuration OK"), "{}", stdout(&o));

    assert_exit(&setup.run(&["renew"]), 0);
    let first = current_serial(&setup).unwrap();
    for (rel, file) in PATHS {
        let path = dir.join(rel);
        let meta = fs::symlink_metadata(&path).unwrap();
        assert!(meta.file_type().is_symlink(), "{rel} is not a symlink");
        assert_eq!(fs::read_link(&path).unwrap(), setup.current().join(file));
        assert_eq!(
            fs::read(&path).unwrap(),
            fs::read(setup.current().join(file)).unwrap()
        );
    }
    // The key behind the swanctl path is the installed 0600 file, owned by us; no copy of it
    // exists anywhere in swanctl's directory, and the directory eit-certd created is 0700.
    let key = dir.join(PATHS[0].0);
    assert_eq!(mode(&key), 0o600);
    use std::os::unix::fs::MetadataExt;
    assert_eq!(
        fs::metadata(&key).unwrap().uid(),
        nix::unistd::geteuid().as_raw()
    );
    assert_eq!(mode(&dir.join("private")), 0o700);
    assert_eq!(fs::read_dir(dir.join("private")).unwrap().count(), 1);

    let o = setup.run(&["status"]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    assert!(
        text.contains(&format!(
            "swanctl       key {} (current set): linked",
            key.display()
        )),
        "{text}"
    );
    let o = setup.run(&["status", "--json"]);
    let json: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let paths = json["swanctl"].as_array().unwrap();
    assert_eq!(paths.len(), 3);
    assert!(
        paths.iter().all(|p| p["resolves_to_current"] == true),
        "{json}"
    );

    // A renewal changes nothing in swanctl's directory, yet the paths now give the new set.
    let before = snapshot(&dir);
    assert_exit(&setup.run(&["renew", "--force"]), 0);
    let second = current_serial(&setup).unwrap();
    assert_ne!(first, second);
    assert_eq!(snapshot(&dir), before);
    let (ok, out) = run_tool(
        "openssl",
        &[
            "x509",
            "-noout",
            "-serial",
            "-in",
            dir.join(PATHS[1].0).to_str().unwrap(),
        ],
    );
    assert!(ok && out.trim() == format!("serial={second}"), "{out}");
    assert_eq!(
        pubkey_of_key(&key),
        pubkey_of_cert(&dir.join(PATHS[1].0)),
        "the key and certificate paths give one set"
    );
}

#[test]
fn a_path_that_is_not_ours_is_refused_before_anything_is_installed_and_handed_over_on_request() {
    let emulator = Emulator::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = swanctl_dir(tmp.path());
    let key = dir.join(PATHS[0].0);
    fs::write(&key, "a key IBM's mount helper wrote").unwrap();
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let setup = Setup::new(&emulator, 2048, "", &swanctl_table(&dir, ""));

    let o = setup.run(&["check"]);
    assert_exit(&o, 2);
    assert!(
        stdout(&o).contains("problem: output.swanctl.key:")
            && stdout(&o).contains("replace_existing = true"),
        "{}",
        stdout(&o)
    );

    let before = snapshot(&dir);
    let o = setup.run(&["renew"]);
    assert_exit(&o, 2);
    let err = stderr(&o);
    assert!(
        err.contains(&key.display().to_string())
            && err.contains("a regular file")
            && err.contains("output.swanctl.replace_existing = true")
            && err.contains("mount_helper.timer"),
        "{err}"
    );
    assert_eq!(
        certificate_requests(&emulator),
        0,
        "asked for a certificate"
    );
    assert!(setup.generations().is_empty(), "installed something");
    assert_eq!(snapshot(&dir), before);

    // The daemon refuses to start the same way (a configuration error: exit 2).
    let mut daemon = DaemonProc::start(&setup);
    assert_eq!(daemon.wait_exit(Duration::from_secs(10)), Some(2));
    assert!(
        daemon.log_text().contains("replace_existing"),
        "{}",
        daemon.log_text()
    );
    assert!(setup.generations().is_empty());

    // Handed over: the file becomes our link; later renewals need no replace_existing.
    let text = fs::read_to_string(&setup.config).unwrap();
    fs::write(&setup.config, format!("{text}replace_existing = true\n")).unwrap();
    assert_exit(&setup.run(&["renew"]), 0);
    assert!(fs::symlink_metadata(&key).unwrap().file_type().is_symlink());
    assert_eq!(
        pubkey_of_key(&key),
        pubkey_of_key(&setup.current().join("key.pem"))
    );
    fs::write(&setup.config, text).unwrap();
    assert_exit(&setup.run(&["check"]), 0);
    assert_exit(&setup.run(&["renew", "--force"]), 0);
    assert_eq!(setup.generations().len(), 2);
}

#[test]
fn the_daemon_links_the_paths_at_start_when_a_set_is_already_installed() {
    let emulator = Emulator::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = swanctl_dir(tmp.path());
    let setup = Setup::new(&emulator, 2048, "", "");
    assert_exit(&setup.run(&["renew"]), 0);
    let requests = certificate_requests(&emulator);
    // The table is added to a running installation: the daemon links at start, without
    // waiting for the next renewal (the set is valid for an hour).
    let text = fs::read_to_string(&setup.config).unwrap();
    fs::write(&setup.config, format!("{text}{}", swanctl_table(&dir, ""))).unwrap();
    let daemon = DaemonProc::start(&setup);
    let key = dir.join(PATHS[0].0);
    wait_for(
        Duration::from_secs(10),
        "the daemon to link the paths",
        || fs::read_link(dir.join(PATHS[2].0)).ok(),
    );
    assert_eq!(
        fs::read_link(&key).unwrap(),
        setup.current().join("key.pem")
    );
    wait_for(
        Duration::from_secs(10),
        "the daemon to say it is valid",
        || {
            daemon
                .log_text()
                .contains("installed certificate is valid")
                .then_some(())
        },
    );
    assert_eq!(
        certificate_requests(&emulator),
        requests,
        "it renewed instead"
    );
}

#[test]
fn swanctl_paths_outside_the_directory_are_configuration_errors() {
    let emulator = Emulator::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = swanctl_dir(tmp.path());
    let setup = Setup::new(
        &emulator,
        2048,
        "",
        &swanctl_table(&dir, "cert = \"../../etc/x.pem\""),
    );
    let o = setup.run(&["renew"]);
    assert_exit(&o, 2);
    let err = stderr(&o);
    assert!(
        err.contains("config.toml:")
            && err.contains("output.swanctl paths")
            && err.contains("../../etc/x.pem"),
        "{err}"
    );
    assert_eq!(certificate_requests(&emulator), 0);
}

#[test]
fn swanctl_config_prints_a_connection_for_the_configured_certificate() {
    let emulator = Emulator::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = swanctl_dir(tmp.path());
    let setup = Setup::new(
        &emulator,
        2048,
        "",
        &swanctl_table(&dir, "cert = \"x509/instance.pem\""),
    );
    let o = setup.run(&["swanctl-config", "--remote", "10.240.64.5"]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    for line in [
        "    ibmshare-ipsec-to-10-240-64-5 {",
        "        remote_addrs = 10.240.64.5",
        "        proposals = aes256-sha384-ecp384",
        "        encap = yes",
        &format!(
            "            certs = {}",
            dir.join("x509/instance.pem").display()
        ),
        "            id = %any",
        "                esp_proposals = aes256gcm16",
        "                mode = transport",
        "                start_action = trap",
        "                remote_ts = 10.240.64.5[any/any]",
        "                local_ts = 0.0.0.0/0[any/any]",
        &format!(
            "#   {}/conf.d/ibmshare-ipsec-to-10-240-64-5.conf",
            dir.display()
        ),
        "#   swanctl --load-conns",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "no line {line:?} in\n{text}"
        );
    }
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));

    let o = setup.run(&[
        "swanctl-config",
        "--remote",
        "2001:db8::5",
        "--name",
        "share.v6",
    ]);
    assert_exit(&o, 0);
    let text = stdout(&o);
    assert!(text.contains("    share.v6 {\n") && text.contains("local_ts = ::/0[any/any]\n"));

    for (args, says) in [
        (vec!["--remote", "10.240.64"], "invalid IP address"),
        (
            vec!["--remote", "10.0.0.1", "--name", "a b"],
            "invalid connection name",
        ),
        (
            vec!["--remote", "10.0.0.1", "--name", "x}"],
            "invalid connection name",
        ),
        (vec![], "--remote"),
    ] {
        let o = setup.run(&[&["swanctl-config"][..], &args].concat());
        assert_exit(&o, 2);
        assert!(stderr(&o).contains(says), "{args:?}: {}", stderr(&o));
    }

    // Without a config file: the defaults, and a note that nothing maintains the path yet.
    let o = Command::new(bin())
        .args([
            "--config",
            "/nonexistent/eit.toml",
            "swanctl-config",
            "--remote",
            "10.0.0.9",
        ])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    assert!(stdout(&o).contains("certs = /etc/"), "{}", stdout(&o));
    assert!(stderr(&o).contains("[output.swanctl]"), "{}", stderr(&o));
}

#[test]
fn swanctl_reload_says_when_charon_cannot_be_reached_and_refuses_bad_arguments() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = tmp.path().join("strongswan.conf");
    let socket = tmp.path().join("nobody-listens.vici");
    fs::write(
        &conf,
        format!(
            "swanctl {{\n  load = random openssl pem pkcs1 pkcs8 x509\n  socket = unix://{}\n}}\n",
            socket.display()
        ),
    )
    .unwrap();
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let started = Instant::now();
        let o = Command::new(hook())
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("STRONGSWAN_CONF", &conf)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (o, started.elapsed())
    };
    let (o, took) = run(&["--reauth"], &[("EIT_SERIAL", "0A")]);
    assert_eq!(o.status.code(), Some(3), "{}", stderr(&o));
    assert!(took < Duration::from_secs(10), "took {took:?}");
    let err = stderr(&o);
    if swanctl_program().is_some() {
        assert!(
            err.contains("charon does not answer on its VICI socket")
                && err.contains(&socket.display().to_string()),
            "{err}"
        );
    } else {
        assert!(err.contains("swanctl is not installed"), "{err}");
    }
    for (args, env) in [
        (vec!["--bogus"], vec![]),
        (vec!["--pattern"], vec![]),
        (vec!["--pattern="], vec![]),
        (vec![], vec![("SWANCTL_REAUTH", "yes")]),
        (vec![], vec![("SWANCTL_TIMEOUT", "0")]),
    ] {
        let (o, _) = run(&args, &env);
        assert_eq!(o.status.code(), Some(2), "{args:?} {env:?}: {}", stderr(&o));
    }
}

// ---------------------------------------------------------------------------------------------
// The end-to-end test with two real charons.
// ---------------------------------------------------------------------------------------------

fn swanctl_program() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("swanctl"))
        .find(|p| p.is_file())
}

/// What the test needs from the machine, or why it cannot run here.
struct Prerequisites {
    charon: PathBuf,
    swanctl: PathBuf,
}

fn prerequisites() -> Result<Prerequisites, String> {
    if !nix::unistd::geteuid().is_root() {
        return Err("needs root (network namespaces, TUN devices, mounts)".into());
    }
    let charon = ["/usr/lib/ipsec/charon", "/usr/libexec/ipsec/charon"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
        .ok_or("charon is not installed (apt-get install strongswan-charon)")?;
    let libipsec = charon
        .parent()
        .unwrap()
        .join("plugins/libstrongswan-kernel-libipsec.so");
    if !libipsec.is_file() {
        return Err(format!(
            "{} is missing (apt-get install libcharon-extra-plugins)",
            libipsec.display()
        ));
    }
    let swanctl =
        swanctl_program().ok_or("swanctl is not installed (apt-get install strongswan-swanctl)")?;
    for program in ["ip", "unshare", "openssl"] {
        let found = std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()));
        if !found {
            return Err(format!("{program} is not on PATH"));
        }
    }
    if !Path::new("/dev/net/tun").exists() {
        return Err("/dev/net/tun is missing (kernel-libipsec needs a TUN device)".into());
    }
    Ok(Prerequisites { charon, swanctl })
}

/// A network namespace of our own, deleted (with its end of the veth pair) when dropped.
struct Netns {
    name: String,
}

impl Netns {
    fn add(role: &str) -> Result<Netns, String> {
        let name = format!("eit-{role}-{}", std::process::id());
        let (ok, out) = run_tool("ip", &["netns", "add", &name]);
        if !ok {
            return Err(format!("ip netns add failed: {}", out.trim()));
        }
        Ok(Netns { name })
    }

    fn ip(&self, args: &str) {
        let mut argv = vec!["-n", self.name.as_str()];
        argv.extend(args.split(' '));
        let (ok, out) = run_tool("ip", &argv);
        assert!(ok, "ip -n {} {args}: {out}", self.name);
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = run_tool("ip", &["netns", "delete", &self.name]);
    }
}

/// One charon in a network namespace, with its own /run, strongswan.conf and swanctl
/// directory; stopped (SIGTERM, then SIGKILL) when dropped.
struct Charon {
    child: Child,
    conf: PathBuf,
    dir: PathBuf,
    log: PathBuf,
    swanctl: PathBuf,
}

impl Charon {
    /// Writes strongswan.conf (explicit plugin list with kdf, which 5.9.8 needs; kernel-libipsec
    /// with allow_peer_ts, so that the peer's own address can be routed into the TUN device,
    /// and distinct fwmarks so that IKE and the UDP-encapsulated ESP packets bypass it), then
    /// starts charon and waits until it answers on its VICI socket.
    fn start(p: &Prerequisites, ns: &Netns, root: &Path, swanctl_dir: &Path) -> Charon {
        let vici = root.join("charon.vici");
        let log = root.join("charon.log");
        let conf = root.join("strongswan.conf");
        fs::write(
            &conf,
            format!(
                "charon {{
  load_modular = no
  load = random nonce openssl pem pkcs1 pkcs8 x509 constraints pubkey kdf kernel-libipsec kernel-netlink socket-default vici
  plugins {{
    kernel-libipsec {{
      allow_peer_ts = yes
    }}
    kernel-netlink {{
      fwmark = !0x42
    }}
    socket-default {{
      fwmark = 0x42
    }}
    vici {{
      socket = unix://{vici}
    }}
  }}
  filelog {{
    test {{
      path = {log}
      default = 1
      time_format = %H:%M:%S
    }}
  }}
}}
swanctl {{
  load = random openssl pem pkcs1 pkcs8 x509
  socket = unix://{vici}
}}
",
                vici = vici.display(),
                log = log.display()
            ),
        )
        .unwrap();
        // `ip netns exec` and `unshare` exec (no fork): the child is charon itself.
        let child = Command::new("ip")
            .args([
                "netns",
                "exec",
                &ns.name,
                "unshare",
                "--mount",
                "--propagation",
                "private",
            ])
            .args([
                "sh",
                "-c",
                "mount -t tmpfs -o size=1m,mode=0755 tmpfs /run && exec \"$0\"",
            ])
            .arg(&p.charon)
            .env("STRONGSWAN_CONF", &conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(fs::File::create(root.join("charon.stderr")).unwrap())
            .spawn()
            .unwrap();
        let mut charon = Charon {
            child,
            conf,
            dir: swanctl_dir.to_path_buf(),
            log,
            swanctl: p.swanctl.clone(),
        };
        wait_for(Duration::from_secs(15), "charon to answer on VICI", || {
            if let Ok(Some(status)) = charon.child.try_wait() {
                panic!(
                    "charon exited ({status}): {}{}",
                    fs::read_to_string(root.join("charon.stderr")).unwrap_or_default(),
                    charon.log_text()
                );
            }
            charon.swanctl(&["--stats"]).0.then_some(())
        });
        let comm = fs::read_to_string(format!("/proc/{}/comm", charon.child.id())).unwrap();
        assert_eq!(comm.trim(), "charon");
        charon
    }

    /// `swanctl ARGS` against this charon: (success, stdout + stderr).
    fn swanctl(&self, args: &[&str]) -> (bool, String) {
        let o = Command::new(&self.swanctl)
            .args(args)
            .env("STRONGSWAN_CONF", &self.conf)
            .env("SWANCTL_DIR", &self.dir)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (o.status.success(), format!("{}{}", stdout(&o), stderr(&o)))
    }

    fn ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.swanctl(args);
        assert!(
            ok,
            "swanctl {args:?}:\n{out}\ncharon log:\n{}",
            self.log_text()
        );
        out
    }

    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// (name, unique id, state) of each IKE SA.
    fn ike_sas(&self) -> Vec<(String, u32, String)> {
        let out = self.ok(&["--list-sas"]);
        out.lines()
            .filter(|l| !l.starts_with(char::is_whitespace))
            .filter_map(|l| {
                let (name, rest) = l.split_once(": #")?;
                let mut parts = rest.split(", ");
                let id = parts.next()?.parse().ok()?;
                Some((name.to_string(), id, parts.next()?.to_string()))
            })
            .collect()
    }

    fn established(&self, name: &str) -> Vec<u32> {
        self.ike_sas()
            .into_iter()
            .filter(|(n, _, state)| n == name && state == "ESTABLISHED")
            .map(|(_, id, _)| id)
            .collect()
    }

    /// Bytes through the CHILD_SAs: (in, out).
    fn esp_bytes(&self) -> (u64, u64) {
        let out = self.ok(&["--list-sas"]);
        let (mut inbound, mut outbound) = (0, 0);
        for line in out.lines().map(str::trim_start) {
            let counter = |l: &str| -> u64 {
                l.split(',')
                    .nth(1)
                    .and_then(|b| b.trim().strip_suffix(" bytes"))
                    .and_then(|n| n.trim().parse().ok())
                    .unwrap_or(0)
            };
            if line.starts_with("in ") {
                inbound += counter(line);
            } else if line.starts_with("out ") {
                outbound += counter(line);
            }
        }
        (inbound, outbound)
    }

    /// Serials of the peers' end-entity certificates charon holds (those without a private
    /// key here: for the responder, the ones it received and verified since the last
    /// `--flush-certs`), normalised.
    fn peer_serials(&self) -> BTreeSet<String> {
        let out = self.ok(&["--list-certs", "--type", "x509", "--flag", "none"]);
        let mut serials = BTreeSet::new();
        // One block per certificate, each starting with its "subject:" line.
        for block in out.split("\n  subject:").skip(1) {
            let serial = block
                .lines()
                .find_map(|l| l.trim().strip_prefix("serial:"))
                .map(norm_serial);
            if let (Some(serial), false) = (serial, block.contains("has private key")) {
                serials.insert(serial);
            }
        }
        serials
    }
}

impl Charon {
    /// Serials of the end-entity certificates charon holds with their private key (ours).
    fn own_serials(&self) -> BTreeSet<String> {
        let out = self.ok(&["--list-certs", "--type", "x509", "--flag", "none"]);
        out.split("\n  subject:")
            .skip(1)
            .filter(|block| block.contains("has private key"))
            .filter_map(|block| {
                block
                    .lines()
                    .find_map(|l| l.trim().strip_prefix("serial:"))
                    .map(norm_serial)
            })
            .collect()
    }
}

impl Drop for Charon {
    fn drop(&mut self) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Upper-case hex without colons or leading zeros: how swanctl, openssl and eit-certd all
/// spell the same serial.
fn norm_serial(s: &str) -> String {
    let hex: String = s
        .trim()
        .trim_start_matches("serial=")
        .chars()
        .filter(char::is_ascii_hexdigit)
        .collect();
    hex.to_ascii_uppercase().trim_start_matches('0').to_string()
}

/// Runs `f` on a thread that has joined network namespace `ns`.
fn in_netns<T: Send + 'static>(
    ns: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> std::thread::JoinHandle<T> {
    let path = format!("/run/netns/{ns}");
    std::thread::spawn(move || {
        let file = fs::File::open(&path).unwrap();
        // SAFETY: setns on a valid namespace fd affects only this thread, which is ours.
        let r = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
        assert_eq!(r, 0, "setns {path}: {}", std::io::Error::last_os_error());
        f()
    })
}

/// A raw socket that sees every frame on `ifname` (both directions), of this thread's netns.
fn capture(ifname: &str) -> (OwnedFd, i32) {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the result is checked and owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, i32::from(proto)) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) } as i32;
    assert!(index > 0, "no interface {ifname}");
    // SAFETY: sockaddr_ll is plain data; all-zero is a valid starting value.
    let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    addr.sll_family = libc::AF_PACKET as u16;
    addr.sll_protocol = proto;
    addr.sll_ifindex = index;
    // SAFETY: addr is a valid sockaddr_ll of the length given.
    let r = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (&addr as *const libc::sockaddr_ll).cast(),
            std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
        )
    };
    assert_eq!(
        r,
        0,
        "bind to {ifname}: {}",
        std::io::Error::last_os_error()
    );
    (fd, index)
}

/// Every frame queued on `fd` that was seen on interface `index` (frames that arrived before
/// the bind may come from other interfaces).
fn drain(fd: &OwnedFd, index: i32) -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    let mut buf = vec![0u8; 65536];
    loop {
        // SAFETY: as above; recvfrom writes at most the lengths given.
        let mut addr: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        let mut len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
        let n = unsafe {
            libc::recvfrom(
                fd.as_raw_fd(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                libc::MSG_DONTWAIT,
                (&mut addr as *mut libc::sockaddr_ll).cast(),
                &mut len,
            )
        };
        if n < 0 {
            return frames;
        }
        if addr.sll_ifindex == index {
            frames.push(buf[..n as usize].to_vec());
        }
    }
}

/// The addresses, destination port and payload of an IPv4/UDP Ethernet frame.
struct Udp<'a> {
    src: [u8; 4],
    dst: [u8; 4],
    dport: u16,
    payload: &'a [u8],
}

fn udp_of(frame: &[u8]) -> Option<Udp<'_>> {
    if frame.len() < 14 + 20 || frame[12..14] != [0x08, 0x00] {
        return None;
    }
    let ip = &frame[14..];
    let ihl = usize::from(ip[0] & 0x0f) * 4;
    if ip[9] != 17 || ip.len() < ihl + 8 {
        return None;
    }
    let udp = &ip[ihl..];
    Some(Udp {
        src: ip[12..16].try_into().ok()?,
        dst: ip[16..20].try_into().ok()?,
        dport: u16::from_be_bytes([udp[2], udp[3]]),
        payload: &udp[8..],
    })
}

const INITIATOR: [u8; 4] = [192, 0, 2, 1];
const RESPONDER: [u8; 4] = [192, 0, 2, 2];

/// Sends a marker from the instance to the mount target over UDP until it arrives, capturing
/// the veth meanwhile. Asserts that it arrived, that no frame on the wire carried it in clear,
/// and that the wire carried ESP in UDP (port 4500, non-zero SPI) from the instance.
fn assert_data_goes_through_esp(ns_i: &Netns, ns_r: &Netns, round: u32) {
    let marker = format!(
        "eit-certd cleartext marker {} {round} {:?}",
        std::process::id(),
        Instant::now()
    );
    let port = 5000 + round as u16;
    let arrived = Arc::new(AtomicBool::new(false));
    let (bound_tx, bound_rx) = std::sync::mpsc::channel();
    let receiver = in_netns(&ns_r.name, {
        let (marker, arrived) = (marker.clone(), arrived.clone());
        move || {
            let s = std::net::UdpSocket::bind(("192.0.2.2", port)).unwrap();
            s.set_read_timeout(Some(Duration::from_millis(100)))
                .unwrap();
            bound_tx.send(()).unwrap();
            let deadline = Instant::now() + Duration::from_secs(15);
            let mut buf = [0u8; 2048];
            while Instant::now() < deadline {
                if let Ok((n, from)) = s.recv_from(&mut buf) {
                    if &buf[..n] == marker.as_bytes() && from.ip().to_string() == "192.0.2.1" {
                        arrived.store(true, Ordering::SeqCst);
                        return true;
                    }
                }
            }
            false
        }
    });
    bound_rx.recv().unwrap();
    let sender = in_netns(&ns_i.name, {
        let (marker, arrived) = (marker.clone(), arrived.clone());
        move || {
            let (fd, index) = capture("veth-i");
            let s = std::net::UdpSocket::bind("192.0.2.1:0").unwrap();
            let deadline = Instant::now() + Duration::from_secs(15);
            while !arrived.load(Ordering::SeqCst) && Instant::now() < deadline {
                let _ = s.send_to(marker.as_bytes(), ("192.0.2.2", port));
                std::thread::sleep(Duration::from_millis(100));
            }
            drain(&fd, index)
        }
    });
    let frames = sender.join().unwrap();
    assert!(
        receiver.join().unwrap(),
        "the marker never arrived at the mount target"
    );
    let in_clear = frames
        .iter()
        .filter(|f| f.windows(marker.len()).any(|w| w == marker.as_bytes()))
        .count();
    assert_eq!(in_clear, 0, "the marker crossed the veth in clear");
    let esp = frames
        .iter()
        .filter_map(|f| udp_of(f))
        .filter(|u| {
            u.src == INITIATOR
                && u.dst == RESPONDER
                && u.dport == 4500
                && u.payload.len() > marker.len()
                && u.payload[..4] != [0, 0, 0, 0]
        })
        .count();
    assert!(
        esp > 0,
        "no ESP-in-UDP frame from the instance among {} frames",
        frames.len()
    );
}

#[test]
fn ikev2_end_to_end_with_the_installed_certificate_through_a_rotation_and_a_foreign_root() {
    let started = Instant::now();
    let p = match prerequisites() {
        Ok(p) => p,
        Err(why) => {
            skipped!("swanctl::ikev2_end_to_end: {why}");
            return;
        }
    };
    let (ns_i, ns_r) = match (Netns::add("i"), Netns::add("r")) {
        (Ok(i), Ok(r)) => (i, r),
        (Err(why), _) | (_, Err(why)) => {
            skipped!("swanctl::ikev2_end_to_end: {why}");
            return;
        }
    };
    ns_i.ip(&format!(
        "link add veth-i type veth peer name veth-r netns {}",
        ns_r.name
    ));
    ns_i.ip("addr add 192.0.2.1/24 dev veth-i");
    ns_r.ip("addr add 192.0.2.2/24 dev veth-r");
    for (ns, dev) in [(&ns_i, "veth-i"), (&ns_r, "veth-r")] {
        ns.ip(&format!("link set {dev} up"));
        ns.ip("link set lo up");
    }

    // The metadata service: certificates live 20 s, so that `run` rotates within seconds.
    let emulator = Emulator::start(&["--max-lifetime", "20s"]);
    let work = tempfile::tempdir().unwrap();
    let (root_i, root_r) = (work.path().join("instance"), work.path().join("target"));
    fs::create_dir_all(&root_i).unwrap();
    fs::create_dir_all(&root_r).unwrap();
    let (dir_i, dir_r) = (swanctl_dir(&root_i), swanctl_dir(&root_r));

    // The mount target: a key and a certificate from a CA of its own (not self-signed, so
    // that it asks the instance only for the CAs it trusts); it trusts only the emulator's
    // root, and requires the instance to authenticate with a certificate that chains to it.
    let target_ca = work.path().join("target-ca.pem");
    let target_ca_key = work.path().join("target-ca.key");
    let csr = work.path().join("mount-target.csr");
    let path = |p: &Path| p.to_str().unwrap().to_string();
    for args in [
        vec![
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=test mount target CA",
            "-keyout",
            &path(&target_ca_key),
            "-out",
            &path(&target_ca),
        ],
        vec![
            "req",
            "-new",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=mount-target",
            "-keyout",
            &path(&dir_r.join("private/mount-target.key")),
            "-out",
            &path(&csr),
        ],
        vec![
            "x509",
            "-req",
            "-in",
            &path(&csr),
            "-CA",
            &path(&target_ca),
            "-CAkey",
            &path(&target_ca_key),
            "-set_serial",
            "2",
            "-days",
            "1",
            "-out",
            &path(&dir_r.join("x509/mount-target.pem")),
        ],
    ] {
        let (ok, out) = run_tool("openssl", &args);
        assert!(ok, "openssl {args:?}: {out}");
    }
    fs::copy(emulator.ca_pem(), dir_r.join("x509ca/emulator-root.pem")).unwrap();
    fs::write(
        dir_r.join("swanctl.conf"),
        "connections {
    mount-target {
        version = 2
        proposals = aes256-sha384-ecp384
        local {
            auth = pubkey
            certs = mount-target.pem
            id = \"CN=mount-target\"
        }
        remote {
            auth = pubkey
            cacerts = emulator-root.pem
            id = %any
        }
        children {
            nfs {
                esp_proposals = aes256gcm16
                mode = tunnel
                local_ts = 192.0.2.2/32
                remote_ts = 192.0.2.1/32
            }
        }
    }
}
",
    )
    .unwrap();

    // The instance trusts the mount target (as IBM's package installs its roots into x509ca)
    // and the emulator's root; eit-certd manages the rest of its swanctl directory.
    fs::copy(&target_ca, dir_i.join("x509ca/target-ca.crt")).unwrap();
    fs::copy(
        emulator.ca_pem(),
        dir_i.join("x509ca/type_ibmshare_root_test.crt"),
    )
    .unwrap();
    fs::write(dir_i.join("swanctl.conf"), "include conf.d/*.conf\n").unwrap();
    let hooks = format!(
        "[[hooks]]\nname = \"swanctl-reload\"\ncommand = [\"{}\", \"--reauth\"]\ntimeout = \"20s\"\n\
         env = {{ STRONGSWAN_CONF = \"{}\", SWANCTL_DIR = \"{}\" }}\n",
        hook().display(),
        root_i.join("strongswan.conf").display(),
        dir_i.display()
    );
    let setup = Setup::new(
        &emulator,
        2048,
        "",
        &format!("{}{hooks}", swanctl_table(&dir_i, "")),
    );
    assert_exit(&setup.run(&["check"]), 0);

    let responder = Charon::start(&p, &ns_r, &root_r, &dir_r);
    responder.ok(&["--load-all"]);
    let initiator = Charon::start(&p, &ns_i, &root_i, &dir_i);
    let initiator_pid = initiator.child.id();

    // First install: the hook loads the credentials; no IKE SA is up, which is fine.
    let o = setup.run(&["renew"]);
    assert_exit(&o, 0);
    assert!(
        !stderr(&o).contains("hook swanctl-reload failed"),
        "{}",
        stderr(&o)
    );
    let serial1 = current_serial(&setup).unwrap();
    let state: serde_json::Value =
        serde_json::from_slice(&fs::read(setup.out.join("state.json")).unwrap()).unwrap();
    assert_eq!(state["hooks"][0]["ok"], true, "{state}");
    assert!(
        state["hooks"][0]["detail"]
            .as_str()
            .unwrap()
            .contains(&format!(
                "holds the certificate with serial {serial1} and its private key"
            )),
        "{state}"
    );

    // The connection `swanctl-config` prints, in tunnel mode (kernel-libipsec has no transport
    // mode); two more of its outputs are loaded exactly as printed.
    let o = setup.run(&["swanctl-config", "--remote", "192.0.2.2"]);
    assert_exit(&o, 0);
    let conn = stdout(&o);
    assert!(conn.contains("mode = transport\n"));
    fs::write(
        dir_i.join("conf.d/ibmshare-ipsec-to-192-0-2-2.conf"),
        conn.replace("mode = transport\n", "mode = tunnel\n"),
    )
    .unwrap();
    for (i, args) in [
        vec!["--remote", "198.51.100.7", "--name", "as-printed-v4"],
        vec!["--remote", "2001:db8::7"],
    ]
    .into_iter()
    .enumerate()
    {
        let o = setup.run(&[&["swanctl-config"][..], &args].concat());
        assert_exit(&o, 0);
        fs::write(
            dir_i.join(format!("conf.d/as-printed-{i}.conf")),
            stdout(&o),
        )
        .unwrap();
    }
    let out = initiator.ok(&["--load-conns"]);
    assert!(out.contains("successfully loaded 3 connections"), "{out}");
    let conns = initiator.ok(&["--list-conns"]);
    for name in [
        "ibmshare-ipsec-to-192-0-2-2",
        "as-printed-v4",
        "ibmshare-ipsec-to-2001-db8--7",
    ] {
        assert!(conns.contains(&format!("{name}: IKEv2")), "{conns}");
    }

    // Phase 1: the IKE SA comes up; the mount target verified the serial eit-certd installed.
    let conn_name = "ibmshare-ipsec-to-192-0-2-2";
    responder.ok(&["--flush-certs"]);
    initiator.ok(&["--initiate", "--child", conn_name, "--timeout", "20"]);
    let first_sa = responder.established("mount-target");
    assert_eq!(first_sa.len(), 1, "{:?}", responder.ike_sas());
    assert_eq!(
        responder.peer_serials(),
        BTreeSet::from([norm_serial(&serial1)]),
        "the mount target must have verified exactly the installed certificate"
    );
    let (_, out_before) = initiator.esp_bytes();
    let (in_before, _) = responder.esp_bytes();
    assert_data_goes_through_esp(&ns_i, &ns_r, 1);
    let (_, out_after) = initiator.esp_bytes();
    let (in_after, _) = responder.esp_bytes();
    assert!(
        out_after > out_before,
        "instance ESP out: {out_before} -> {out_after}"
    );
    assert!(
        in_after > in_before,
        "mount target ESP in: {in_before} -> {in_after}"
    );
    eprintln!("swanctl e2e: phase 1 done after {:?}", started.elapsed());

    // Phase 2: the daemon rotates; the hook reloads and reauthenticates; the mount target sees
    // the new serial, and charon was not restarted.
    responder.ok(&["--flush-certs"]);
    let mut daemon = DaemonProc::start(&setup);
    wait_for(Duration::from_secs(30), "a rotation and its hook", || {
        daemon.log_text().contains("hook succeeded").then_some(())
    });
    daemon.signal(nix::sys::signal::Signal::SIGTERM);
    assert_eq!(daemon.wait_exit(Duration::from_secs(30)), Some(0));
    let serial2 = current_serial(&setup).unwrap();
    assert_ne!(serial1, serial2);
    let log = daemon.log_text();
    assert!(
        log.contains(&format!(
            "holds the certificate with serial {serial2} and its private key"
        )) && log.contains(&format!("reauthenticating IKE SA(s) {conn_name}#")),
        "{log}"
    );
    wait_for(
        Duration::from_secs(20),
        "the reauthenticated IKE SA",
        || {
            let now = responder.established("mount-target");
            (!now.is_empty() && now.iter().all(|id| !first_sa.contains(id))).then_some(())
        },
    );
    assert_eq!(
        responder.peer_serials(),
        BTreeSet::from([norm_serial(&serial2)]),
        "after the reauthentication the mount target must have verified the new certificate only"
    );
    assert_data_goes_through_esp(&ns_i, &ns_r, 2);
    assert_eq!(initiator.child.id(), initiator_pid);
    assert_eq!(
        initiator
            .log_text()
            .matches("Starting IKE charon daemon")
            .count(),
        1,
        "charon was restarted"
    );
    eprintln!("swanctl e2e: phase 2 done after {:?}", started.elapsed());

    // Phase 3: a certificate from another emulator (another root with the same names) is
    // installed and presented with its chain; the mount target refuses it. The instance is set
    // up as for that emulator (its root instead of ours in x509ca; `--clear` drops ours from
    // charon), so that charon sends the whole foreign chain and the refusal is the mount
    // target's trust decision, not a missing intermediate.
    let foreign = Emulator::start(&[]);
    fs::remove_file(dir_i.join("x509ca/type_ibmshare_root_test.crt")).unwrap();
    fs::copy(
        foreign.ca_pem(),
        dir_i.join("x509ca/type_ibmshare_root_foreign.crt"),
    )
    .unwrap();
    initiator.ok(&["--load-creds", "--clear", "--noprompt"]);
    let text = fs::read_to_string(&setup.config).unwrap();
    fs::write(&setup.config, text.replace(&emulator.url, &foreign.url)).unwrap();
    responder.ok(&["--flush-certs"]);
    let responder_log_before = responder.log_text().len();
    let o = setup.run(&["renew", "--force"]);
    assert_exit(&o, 0);
    assert!(
        !stderr(&o).contains("hook swanctl-reload failed"),
        "{}",
        stderr(&o)
    );
    let serial3 = current_serial(&setup).unwrap();
    let (verified, _) = openssl_verify(&emulator.ca_pem(), &setup.current(), None);
    assert!(
        !verified,
        "the foreign certificate must not chain to the mount target's root"
    );
    wait_for(
        Duration::from_secs(20),
        "the refused reauthentication",
        || {
            (initiator.established(conn_name).is_empty()
                && responder.established("mount-target").is_empty())
            .then_some(())
        },
    );
    let (ok, out) = initiator.swanctl(&["--initiate", "--child", conn_name, "--timeout", "20"]);
    assert!(!ok, "the foreign certificate was accepted:\n{out}");
    assert!(
        out.contains("received AUTHENTICATION_FAILED notify error"),
        "{out}"
    );
    assert!(
        out.contains("sending issuer cert"),
        "the foreign chain was not sent whole:\n{out}"
    );
    assert!(responder.established("mount-target").is_empty());
    let refused = responder.log_text()[responder_log_before..].to_string();
    assert!(
        refused.contains("received issuer cert")
            && refused.contains("no trusted RSA public key found for"),
        "{refused}"
    );
    assert!(!responder.peer_serials().contains(&norm_serial(&serial1)));
    eprintln!(
        "swanctl e2e: serials {serial1} -> {serial2} -> foreign {serial3}; done after {:?}",
        started.elapsed()
    );
}

/// Each rotation's `swanctl --load-creds` hands charon one more certificate, and plain
/// `--load-creds` never unloads certificates: swanctl-reload clears (`--clear`) so that charon
/// holds the current set only. Twelve rotations through the daemon's hook against a real
/// charon keep the count where it was after the first; the opt-out (SWANCTL_CLEAR=0) shows
/// the growth this prevents.
#[test]
fn charon_holds_a_bounded_number_of_certificates_over_rotations() {
    let p = match prerequisites() {
        Ok(p) => p,
        Err(why) => {
            skipped!("swanctl::charon_holds_a_bounded_number: {why}");
            return;
        }
    };
    let ns = match Netns::add("c") {
        Ok(ns) => ns,
        Err(why) => {
            skipped!("swanctl::charon_holds_a_bounded_number: {why}");
            return;
        }
    };
    ns.ip("link set lo up");
    let emulator = Emulator::start(&[]);
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("instance");
    fs::create_dir_all(&root).unwrap();
    let dir = swanctl_dir(&root);
    fs::copy(
        emulator.ca_pem(),
        dir.join("x509ca/type_ibmshare_root_test.crt"),
    )
    .unwrap();
    let hooks = |clear: &str| {
        format!(
            "[[hooks]]\nname = \"swanctl-reload\"\ncommand = [\"{}\"]\ntimeout = \"20s\"\n\
             env = {{ STRONGSWAN_CONF = \"{}\", SWANCTL_DIR = \"{}\", SWANCTL_CLEAR = \"{clear}\" }}\n",
            hook().display(),
            root.join("strongswan.conf").display(),
            dir.display()
        )
    };
    let setup = Setup::new(
        &emulator,
        2048,
        "",
        &format!("{}{}", swanctl_table(&dir, ""), hooks("1")),
    );
    let charon = Charon::start(&p, &ns, &root, &dir);
    // (all certificates, end-entity serials) that charon holds.
    let held = || {
        let all = charon.ok(&["--list-certs"]);
        let count = all.lines().filter(|l| l.starts_with("  subject:")).count();
        (count, charon.own_serials())
    };
    let rotate = |n: usize| {
        for _ in 0..n {
            let o = setup.run(&["renew", "--force"]);
            assert_exit(&o, 0);
            assert!(
                !stderr(&o).contains("hook swanctl-reload failed"),
                "{}",
                stderr(&o)
            );
        }
    };

    rotate(1);
    let (first, _) = held();
    // The leaf, its intermediate and the root in x509ca.
    assert_eq!(first, 3, "{}", charon.ok(&["--list-certs"]));
    for round in 2..=12 {
        rotate(1);
        let (count, leaves) = held();
        assert_eq!(
            count,
            first,
            "after rotation {round} charon holds {count} certificates:\n{}",
            charon.ok(&["--list-certs"])
        );
        assert_eq!(
            leaves,
            BTreeSet::from([norm_serial(&current_serial(&setup).unwrap())]),
            "after rotation {round} charon must hold the installed certificate (with its key) and no other"
        );
    }

    // The opt-out: plain --load-creds, one more certificate per rotation.
    let text = fs::read_to_string(&setup.config).unwrap();
    fs::write(
        &setup.config,
        text.replace("SWANCTL_CLEAR = \"1\"", "SWANCTL_CLEAR = \"0\""),
    )
    .unwrap();
    rotate(3);
    let (count, _) = held();
    assert_eq!(count, first + 3, "{}", charon.ok(&["--list-certs"]));

    // A set swanctl cannot read (here: a key file that is gone) is named before anything is
    // loaded or cleared.
    let serial = current_serial(&setup).unwrap();
    let current = setup.current();
    let missing = current.join("no-such-key.pem");
    let o = Command::new(hook())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("EIT_CERTD_BIN", bin())
        .env("STRONGSWAN_CONF", root.join("strongswan.conf"))
        .env("SWANCTL_DIR", &dir)
        .env("EIT_SERIAL", &serial)
        .env("EIT_KEY_FILE", &missing)
        .env("EIT_CERT_FILE", current.join("cert.pem"))
        .env("EIT_CHAIN_FILE", current.join("chain.pem"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(
        err.contains("swanctl cannot read a file of the new set")
            && err.contains(&missing.display().to_string()),
        "{err}"
    );
    assert!(!err.contains("load-creds"), "it loaded anyway: {err}");
    assert_eq!(held().0, first + 3, "charon's credentials changed");
}

/// A swanctl directory (or a subdirectory) that another user owns: that user, swapping `x509`
/// for a symlink in a rename loop, made root replace a file outside swanctl's directory
/// (links are made by path after checks). `check` passed it; now `check` flags it and a
/// renewal refuses before anything is requested.
#[test]
fn a_swanctl_directory_another_user_controls_is_refused_before_the_request() {
    let emulator = Emulator::start(&[]);
    let tmp = tempfile::tempdir().unwrap();
    let dir = swanctl_dir(tmp.path());
    let setup = Setup::new(&emulator, 2048, "", &swanctl_table(&dir, ""));
    for owned in [dir.clone(), dir.join("x509")] {
        nix::unistd::chown(&owned, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let o = setup.run(&["check"]);
        assert_exit(&o, 2);
        assert!(
            stdout(&o).contains("problem: output.swanctl.dir:")
                && stdout(&o).contains(&format!("{} is owned by uid 65534", owned.display())),
            "{}",
            stdout(&o)
        );
        let o = setup.run(&["renew"]);
        assert_exit(&o, 2);
        assert!(
            stderr(&o).contains(&format!("{} is owned by uid 65534", owned.display())),
            "{}",
            stderr(&o)
        );
        assert_eq!(
            certificate_requests(&emulator),
            0,
            "refused before the request"
        );
        nix::unistd::chown(&owned, Some(nix::unistd::Uid::from_raw(0)), None).unwrap();
    }
    assert_exit(&setup.run(&["check"]), 0);
}

/// swanctl's directories read-only (what `ProtectSystem=strict` gives without the drop-in).
/// Before: `current` moved, the link failed, the renewal counted as failed, no hook ran, and
/// the daemon asked for certificate after certificate (8-11 in 20 s); with a set installed
/// the daemon did not start. Now: nothing is requested while a path cannot be linked (check
/// says so), a daemon over an installed set starts and owes the links, and they are made
/// once the directory is writable, without a new certificate.
#[test]
fn read_only_swanctl_directories_cost_no_certificates_and_are_linked_once_writable() {
    let mnt = match Tmpfs::mount("1m") {
        Ok(t) => t,
        Err(why) => {
            skipped!("{why}");
            return;
        }
    };
    let emulator = Emulator::start(&[]);
    let dir = swanctl_dir(&mnt.path);
    let setup = Setup::new(
        &emulator,
        2048,
        "",
        &format!(
            "[retry]\ninitial = \"1s\"\nmax = \"2s\"\n\n{}",
            swanctl_table(&dir, "")
        ),
    );
    mnt.remount("ro");
    let o = setup.run(&["check"]);
    assert_exit(&o, 2);
    assert!(stdout(&o).contains("cannot write in"), "{}", stdout(&o));
    let o = setup.run(&["renew"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(
        stderr(&o).contains("nothing was requested"),
        "{}",
        stderr(&o)
    );
    assert_eq!(certificate_requests(&emulator), 0);
    assert!(!setup.current().exists());

    // Writable: the set and its links; then the links go and the directory is read-only
    // again, with the set installed.
    mnt.remount("rw");
    assert_exit(&setup.run(&["renew"]), 0);
    for (rel, _) in PATHS {
        fs::remove_file(dir.join(rel)).unwrap();
    }
    mnt.remount("ro");
    let requests = certificate_requests(&emulator);
    let daemon = DaemonProc::start(&setup);
    wait_for(
        Duration::from_secs(30),
        "the daemon to start and owe the links",
        || {
            let log = daemon.log_text();
            (log.contains("installed certificate is valid") && log.contains("links are still owed"))
                .then_some(())
        },
    );
    mnt.remount("rw");
    wait_for(Duration::from_secs(60), "the owed links", || {
        daemon
            .log_text()
            .contains("links owed for the installed set are in place")
            .then_some(())
    });
    for (rel, file) in PATHS {
        assert_eq!(
            fs::read_link(dir.join(rel)).unwrap(),
            setup.out.join("current").join(file)
        );
    }
    assert_eq!(
        certificate_requests(&emulator),
        requests,
        "no new certificate"
    );
}
