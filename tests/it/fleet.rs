//! The fleet operator's view, against the real tools: the metrics file as node_exporter's
//! format checker (`promtool check metrics`) sees it, the runcmd of examples/cloud-init.yaml as
//! cloud-init renders it (its own `shellify`) run with stand-in commands, and the section
//! `stunnel-config` prints loaded by the real stunnel, which must refuse a file server whose
//! certificate is not for the address it connects to.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod};

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

fn manifest_path(rel: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(rel)
}

// ---- metrics ----

#[test]
fn metrics_file_has_build_info_and_failures_and_passes_promtool() {
    if !on_path("promtool") {
        skipped!("metrics promtool check: promtool is not installed (apt-get install prometheus)");
        return;
    }
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let metrics = setup.tmp.path().join("eit-certd.prom");
    setup.add_output_settings(&format!("metrics_file = \"{}\"", metrics.display()));

    // A failed first attempt: the instance has no certificate, yet its file says eit-certd
    // is there (build_info) and how often it failed in a row.
    emulator.set_fault("refuse-csr", Some(1));
    assert_exit(&setup.run(&["renew"]), 1);
    let text = std::fs::read_to_string(&metrics).unwrap();
    let build_info = format!(
        "eit_certd_build_info{{version=\"{}\"}} 1\n",
        env!("CARGO_PKG_VERSION")
    );
    assert!(text.contains(&build_info), "{text}");
    assert!(
        text.contains("eit_certd_consecutive_failures 1\n"),
        "{text}"
    );
    assert!(!text.contains("eit_certd_cert_not_after_seconds"), "{text}");
    promtool_accepts(&metrics);

    assert_exit(&setup.run(&["renew"]), 0);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(text.contains(&build_info), "{text}");
    assert!(
        text.contains("eit_certd_consecutive_failures 0\n"),
        "{text}"
    );
    assert!(text.contains("eit_certd_cert_not_after_seconds "), "{text}");
    promtool_accepts(&metrics);

    // A failed renewal over an installed set: its series stay (as the daemon writes them),
    // or an alert on an expiring certificate would go quiet while renewals fail.
    let not_after = |text: &str| {
        text.lines()
            .find(|l| l.starts_with("eit_certd_cert_not_after_seconds "))
            .map(str::to_string)
    };
    let installed = not_after(&text);
    emulator.set_fault("refuse-csr", Some(1));
    assert_exit(&setup.run(&["renew", "--force"]), 1);
    let text = std::fs::read_to_string(&metrics).unwrap();
    assert!(
        text.contains("eit_certd_consecutive_failures 1\n"),
        "{text}"
    );
    assert_eq!(not_after(&text), installed, "{text}");
    promtool_accepts(&metrics);
}

/// `promtool check metrics` (the exposition format linter) finds nothing in `file`.
fn promtool_accepts(file: &Path) {
    let o = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::fs::File::open(file).unwrap())
        .output()
        .unwrap();
    assert!(
        o.status.success() && o.stdout.is_empty() && o.stderr.is_empty(),
        "promtool check metrics {}: {}{}",
        file.display(),
        stdout(&o),
        stderr(&o)
    );
}

// ---- cloud-init runcmd ----

/// The commands the runcmd calls, each replaced by a stub that logs its arguments and fails
/// when its name is in `$FAIL`. PATH holds only these and `sh`: anything else the script calls is
/// "not found" (exit 127), not run on this machine.
const STUBS: &[&str] = &[
    "curl",
    "sha256sum",
    "apt-get",
    "dpkg",
    "eit-certd",
    "systemctl",
    "mkdir",
    "mount",
];

/// The runcmd script exactly as cloud-init writes it (`cloudinit.util.shellify`, with cloud-init's
/// own Python and YAML loader), or why it cannot be had here.
fn rendered_runcmd() -> Result<String, String> {
    let python = "/usr/bin/python3";
    if !Path::new(python).exists() {
        return Err(format!("{python} is missing (apt-get install cloud-init)"));
    }
    let o = Command::new(python)
        .arg("-c")
        .arg(
            "import sys, yaml\n\
             from cloudinit.util import shellify\n\
             doc = yaml.safe_load(open(sys.argv[1]))\n\
             sys.stdout.write(shellify(doc['runcmd']))\n",
        )
        .arg(manifest_path("examples/cloud-init.yaml"))
        .output()
        .unwrap();
    if !o.status.success() {
        let err = stderr(&o);
        if err.contains("ModuleNotFoundError") {
            return Err(format!("cloud-init's Python modules are missing: {err}"));
        }
        panic!("rendering runcmd: {err}");
    }
    Ok(stdout(&o))
}

/// Runs `script` with the stubs, those named in `fail` failing; (exit code, the calls made).
fn run_with_stubs(script: &str, fail: &str) -> (Option<i32>, Vec<String>) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).unwrap();
    for name in STUBS {
        let stub = bin.join(name);
        // Builtins only (PATH has nothing else); sha256sum drains its stdin like the real one.
        std::fs::write(
            &stub,
            "#!/bin/sh\n\
             printf '%s %s\\n' \"${0##*/}\" \"$*\" >>\"$CALLS\"\n\
             case ${0##*/} in sha256sum) while read -r _; do :; done ;; esac\n\
             case \" $FAIL \" in *\" ${0##*/} \"*) exit 1 ;; esac\n\
             exit 0\n",
        )
        .unwrap();
        let mut perms = std::fs::metadata(&stub).unwrap().permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
        std::fs::set_permissions(&stub, perms).unwrap();
    }
    // The shell itself is real: runcmd entries may be `[sh, -c, ...]`.
    std::os::unix::fs::symlink("/bin/sh", bin.join("sh")).unwrap();
    let script_path = dir.path().join("runcmd");
    std::fs::write(&script_path, script).unwrap();
    let calls = dir.path().join("calls");
    std::fs::write(&calls, "").unwrap();
    let o = Command::new("/bin/sh")
        .arg(&script_path)
        .env_clear()
        .env("PATH", &bin)
        .env("CALLS", &calls)
        .env("FAIL", fail)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(
        !err.contains("not found"),
        "runcmd called a command with no stub: {err}"
    );
    let calls = std::fs::read_to_string(&calls)
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect();
    (o.status.code(), calls)
}

fn names(calls: &[String]) -> Vec<&str> {
    calls
        .iter()
        .map(|c| c.split(' ').next().unwrap_or(""))
        .collect()
}

#[test]
fn cloud_init_runcmd_stops_at_the_first_failing_command() {
    let script = match rendered_runcmd() {
        Ok(s) => s,
        Err(reason) => {
            skipped!("cloud_init_runcmd_stops_at_the_first_failing_command: {reason}");
            return;
        }
    };
    if on_path("shellcheck") {
        let (ok, out) = {
            let dir = tempfile::tempdir().unwrap();
            let p = dir.path().join("runcmd.sh");
            std::fs::write(&p, &script).unwrap();
            run_tool("shellcheck", &["-s", "sh", p.to_str().unwrap()])
        };
        assert!(ok, "shellcheck on the rendered runcmd:\n{out}\n{script}");
    } else {
        skipped!("shellcheck of the runcmd: shellcheck is not installed");
    }

    // Everything succeeds: every step runs, install before check before start before mount.
    let (code, calls) = run_with_stubs(&script, "");
    assert_eq!(code, Some(0), "{calls:?}");
    let order = |prefix: &str| {
        calls
            .iter()
            .position(|c| c.starts_with(prefix))
            .unwrap_or_else(|| panic!("no call {prefix:?} in {calls:?}"))
    };
    let install = order("apt-get install");
    assert!(order("curl ") < order("sha256sum ") && order("sha256sum ") < install);
    assert!(install < order("eit-certd check"));
    assert!(order("eit-certd check") < order("systemctl enable --now eit-certd"));
    assert!(order("systemctl enable --now eit-certd") < order("mount /mnt/share1"));

    // A bad checksum: nothing is installed, started or mounted, and cloud-init sees a failure.
    let (code, calls) = run_with_stubs(&script, "sha256sum");
    assert_ne!(code, Some(0), "{calls:?}");
    assert_eq!(names(&calls), ["curl", "sha256sum"], "{calls:?}");

    // A failed download stops before the checksum.
    let (code, calls) = run_with_stubs(&script, "curl");
    assert_ne!(code, Some(0));
    assert_eq!(names(&calls), ["curl"], "{calls:?}");

    // `eit-certd check` refusing the config: the unit is not enabled, nothing is mounted.
    let (code, calls) = run_with_stubs(&script, "eit-certd");
    assert_ne!(code, Some(0));
    assert_eq!(
        calls.last().map(String::as_str),
        Some("eit-certd check"),
        "{calls:?}"
    );
    assert!(!names(&calls).contains(&"systemctl"), "{calls:?}");
}

#[test]
fn cloud_init_points_node_exporter_at_the_metrics_file() {
    let yaml = std::fs::read_to_string(manifest_path("examples/cloud-init.yaml")).unwrap();
    assert!(
        yaml.contains("\n  - prometheus-node-exporter\n"),
        "cloud-init.yaml must install prometheus-node-exporter"
    );
    // Debian's and Ubuntu's node_exporter reads its textfile directory, which the shipped unit
    // lets the daemon write.
    let dir = "/var/lib/prometheus/node-exporter";
    assert!(
        yaml.contains(&format!("metrics_file = \"{dir}/")),
        "output.metrics_file must be in {dir}"
    );
    let unit = std::fs::read_to_string(manifest_path("examples/eit-certd.service")).unwrap();
    assert!(unit.contains(&format!("ReadWritePaths=-{dir}\n")), "{unit}");
}

// ---- stunnel-config ----

/// A TLS server on loopback with `cert` (self-signed), answering "hello" to each handshake
/// and recording whether the handshake completed.
struct Server {
    port: u16,
    seen: Arc<Mutex<Vec<bool>>>,
}

impl Server {
    fn start(cert: &Path, key: &Path) -> Server {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        b.set_certificate_chain_file(cert).unwrap();
        b.set_private_key_file(key, SslFiletype::PEM).unwrap();
        let acceptor = Arc::new(b.build());
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let record = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
                match acceptor.accept(stream) {
                    Ok(mut tls) => {
                        let _ = tls.write_all(b"hello\n");
                        let _ = tls.shutdown();
                        record.lock().unwrap().push(true);
                    }
                    Err(_) => record.lock().unwrap().push(false),
                }
            }
        });
        Server { port, seen }
    }

    fn handshakes(&self) -> Vec<bool> {
        self.seen.lock().unwrap().clone()
    }
}

/// A self-signed certificate for CN=`cn` with `san`; (cert, key).
fn self_signed(dir: &Path, cn: &str, san: &str) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join(format!("{cn}.pem")), dir.join(format!("{cn}.key")));
    let (ok, out) = run_tool(
        "openssl",
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            &format!("/CN={cn}"),
            "-addext",
            &format!("subjectAltName={san}"),
            "-keyout",
            key.to_str().unwrap(),
            "-out",
            cert.to_str().unwrap(),
        ],
    );
    assert!(ok, "{out}");
    (cert, key)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// What comes back through stunnel's local port ("" when stunnel closes the connection).
fn through(port: u16) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.trim().to_string()
}

/// The real stunnel in the foreground with the printed section, killed when dropped.
struct Stunnel {
    child: Child,
    log: PathBuf,
}

impl Stunnel {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Prints the section for `args`, checks its global lines, and starts stunnel on it as
/// printed except for the pid file, which goes to `run_dir` instead of /run/stunnel4.
fn start_printed(setup: &Setup, run_dir: &Path, name: &str, args: &[&str]) -> Stunnel {
    let mut all = vec!["stunnel-config", "--name", name];
    all.extend(args);
    let o = setup.run(&all);
    assert_exit(&o, 0);
    let text = stdout(&o);
    let pid_line = format!("pid = /run/stunnel4/{name}.pid\n");
    assert!(text.contains(&pid_line), "{text}");
    let conf = run_dir.join(format!("{name}.conf"));
    let log = run_dir.join(format!("{name}.log"));
    std::fs::write(
        &conf,
        format!(
            "foreground = yes\n{}",
            text.replace(
                &pid_line,
                &format!("pid = {}\n", run_dir.join(format!("{name}.pid")).display())
            )
        ),
    )
    .unwrap();
    let program = if on_path("stunnel4") {
        "stunnel4"
    } else {
        "stunnel"
    };
    let child = Command::new(program)
        .arg(&conf)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let mut stunnel = Stunnel { child, log };
    wait_for(Duration::from_secs(30), "stunnel to start", || {
        if let Ok(Some(status)) = stunnel.child.try_wait() {
            panic!("stunnel exited ({status}):\n{}", stunnel.log_text());
        }
        // Written after the privileges are dropped: the section's setuid worked.
        run_dir.join(format!("{name}.pid")).exists().then_some(())
    });
    stunnel
}

#[test]
fn stunnel_loads_the_printed_section_and_refuses_a_server_for_another_address() {
    if !(on_path("stunnel4") || on_path("stunnel")) {
        skipped!(
            "stunnel-config with stunnel: stunnel is not installed (apt-get install stunnel4)"
        );
        return;
    }
    let Ok(Some(user)) = nix::unistd::User::from_name("stunnel4") else {
        skipped!("stunnel-config with stunnel: no stunnel4 user (apt-get install stunnel4)");
        return;
    };
    if !nix::unistd::geteuid().is_root() {
        skipped!("stunnel-config with stunnel: the printed setuid = stunnel4 needs root");
        return;
    }
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    // stunnel reads our certificate and key as root, before it drops to stunnel4.
    assert_exit(&setup.run(&["renew"]), 0);

    // Two file servers whose certificates one CAfile trusts: one for 127.0.0.1, one for a
    // name only. Trust in the CA alone would accept both.
    let certs = tempfile::tempdir().unwrap();
    let (right_cert, right_key) = self_signed(certs.path(), "right", "IP:127.0.0.1");
    let (wrong_cert, wrong_key) = self_signed(certs.path(), "wrong", "DNS:elsewhere.example");
    let ca_file = certs.path().join("file-servers.pem");
    std::fs::write(
        &ca_file,
        [
            std::fs::read(&right_cert).unwrap(),
            std::fs::read(&wrong_cert).unwrap(),
        ]
        .concat(),
    )
    .unwrap();
    let right = Server::start(&right_cert, &right_key);
    let wrong = Server::start(&wrong_cert, &wrong_key);

    // Like /run/stunnel4: a directory stunnel4 owns, for the pid file it writes after setuid.
    let run = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        run.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let run_dir = run.path().join("stunnel4");
    std::fs::create_dir(&run_dir).unwrap();
    nix::unistd::chown(&run_dir, Some(user.uid), Some(user.gid)).unwrap();

    let ca = ca_file.to_str().unwrap();
    let (right_port, wrong_port) = (free_port(), free_port());
    let connect_right = format!("127.0.0.1:{}", right.port);
    let accept_right = format!("127.0.0.1:{right_port}");
    let s1 = start_printed(
        &setup,
        &run_dir,
        "fleet-right",
        &[
            "--connect",
            &connect_right,
            "--accept",
            &accept_right,
            "--ca-file",
            ca,
        ],
    );
    let connect_wrong = format!("127.0.0.1:{}", wrong.port);
    let accept_wrong = format!("127.0.0.1:{wrong_port}");
    let s2 = start_printed(
        &setup,
        &run_dir,
        "fleet-wrong",
        &[
            "--connect",
            &connect_wrong,
            "--accept",
            &accept_wrong,
            "--ca-file",
            ca,
        ],
    );

    assert_eq!(through(right_port), "hello");
    assert_eq!(right.handshakes(), [true]);
    // The same CA, a certificate for another name: stunnel's checkIP refuses it.
    assert_eq!(through(wrong_port), "");
    wait_for(
        Duration::from_secs(10),
        "the wrong server to see a failed handshake",
        || (!wrong.handshakes().is_empty()).then_some(()),
    );
    let log = s2.log_text();
    assert!(log.contains("CERT: Subject checks failed"), "{log}");
    assert!(
        !s1.log_text().contains("checks failed"),
        "{}",
        s1.log_text()
    );
    assert!(
        !wrong.handshakes().contains(&true),
        "stunnel completed a handshake with a server for another address:\n{}",
        s2.log_text()
    );
}
