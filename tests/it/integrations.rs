//! The consumers, for real: a stunnel client presenting the installed certificate to a TLS
//! server that requires one chaining to the emulator's root, across a daemon rotation with the
//! shipped `stunnel-reload` hook; and GnuTLS (what tlshd uses) reading the same files.
//!
//! Skipped, with the reason printed, where stunnel4 / gnutls-bin are not installed (`.ci/run`
//! installs them).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::*;
use openssl::ssl::{SslAcceptor, SslFiletype, SslMethod, SslVerifyMode};

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// A fresh RSA-2048 key and a self-signed certificate for `cn` (with `san`, if given).
fn self_signed(key: &Path, cert: &Path, cn: &str, san: Option<&str>) {
    let subject = format!("/CN={cn}");
    let mut args = vec![
        "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
    ];
    args.extend(["-subj", &subject]);
    let ext = san.map(|s| format!("subjectAltName={s}"));
    if let Some(ext) = &ext {
        args.extend(["-addext", ext]);
    }
    args.extend([
        "-keyout",
        key.to_str().unwrap(),
        "-out",
        cert.to_str().unwrap(),
    ]);
    let (ok, out) = run_tool("openssl", &args);
    assert!(ok, "{out}");
}

/// The file server's own key and self-signed certificate for `localhost`.
fn server_identity(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    self_signed(&key, &cert, "localhost", Some("DNS:localhost,IP:127.0.0.1"));
    (cert, key)
}

/// A TLS server that requires a client certificate chaining to `client_ca`, answers each
/// connection with the client certificate's serial, and records what it saw.
struct FileServer {
    port: u16,
    seen: Arc<Mutex<Vec<Result<String, String>>>>,
}

impl FileServer {
    fn start(cert: &Path, key: &Path, client_ca: &Path) -> FileServer {
        let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls()).unwrap();
        b.set_certificate_chain_file(cert).unwrap();
        b.set_private_key_file(key, SslFiletype::PEM).unwrap();
        b.set_ca_file(client_ca).unwrap();
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
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
                        let serial = tls
                            .ssl()
                            .peer_certificate()
                            .map(|c| {
                                c.serial_number()
                                    .to_bn()
                                    .unwrap()
                                    .to_hex_str()
                                    .unwrap()
                                    .to_string()
                            })
                            .unwrap_or_default();
                        let _ = tls.write_all(format!("serial={serial}\n").as_bytes());
                        let _ = tls.shutdown();
                        record.lock().unwrap().push(Ok(serial));
                    }
                    Err(e) => record.lock().unwrap().push(Err(e.to_string())),
                }
            }
        });
        FileServer { port, seen }
    }

    fn last(&self) -> Option<Result<String, String>> {
        self.seen.lock().unwrap().last().cloned()
    }
}

/// Sends nothing, reads what comes back through stunnel's local port.
fn through(port: u16) -> String {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply.trim().to_string()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Stunnel {
    pid_file: PathBuf,
}

impl Stunnel {
    fn pid(&self) -> Option<i32> {
        std::fs::read_to_string(&self.pid_file)
            .ok()?
            .trim()
            .parse()
            .ok()
    }
}

impl Drop for Stunnel {
    fn drop(&mut self) {
        if let Some(pid) = self.pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
    }
}

/// The service section `eit-certd stunnel-config` prints, plus what a test run needs.
fn start_stunnel(
    setup: &Setup,
    dir: &Path,
    accept: u16,
    server_port: u16,
    server_ca: &Path,
) -> Stunnel {
    let o = setup.run(&[
        "stunnel-config",
        "--connect",
        &format!("127.0.0.1:{server_port}"),
        "--accept",
        &format!("127.0.0.1:{accept}"),
        "--ca-file",
        server_ca.to_str().unwrap(),
        "--check-host",
        "localhost",
    ]);
    assert_exit(&o, 0);
    let pid_file = dir.join("stunnel.pid");
    // The printed globals (pid under /run/stunnel4, setuid to stunnel4) are for the system
    // service; this stunnel stays root in a private temp dir (fleet.rs runs them as printed).
    let section: String = stdout(&o)
        .lines()
        .filter(|l| {
            !["pid =", "setuid =", "setgid ="]
                .iter()
                .any(|g| l.starts_with(g))
        })
        .map(|l| format!("{l}\n"))
        .collect();
    let conf = format!(
        "pid = {}\noutput = {}\nforeground = no\n{section}",
        pid_file.display(),
        dir.join("stunnel.log").display(),
    );
    std::fs::write(dir.join("stunnel.conf"), conf).unwrap();
    let program = if on_path("stunnel4") {
        "stunnel4"
    } else {
        "stunnel"
    };
    let started = Command::new(program)
        .arg(dir.join("stunnel.conf"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(started.status.success(), "{}", stderr(&started));
    let stunnel = Stunnel { pid_file };
    wait_for(Duration::from_secs(30), "stunnel's pid file", || {
        stunnel.pid()
    });
    stunnel
}

#[test]
fn stunnel_presents_the_installed_certificate_and_the_rotated_one_after_the_hook() {
    if !(on_path("stunnel4") || on_path("stunnel")) {
        eprintln!("skipped: stunnel is not installed (apt-get install stunnel4)");
        return;
    }
    let emulator = Emulator::start(&["--max-lifetime", "10s"]);
    let work = tempfile::tempdir().unwrap();
    let hook = Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks/stunnel-reload");
    let hooks = format!(
        "[[hooks]]\nname = \"reload-stunnel\"\ncommand = [\"{}\"]\nenv = {{ STUNNEL_PID_GLOB = \"{}/*.pid\" }}\n",
        hook.display(),
        work.path().display()
    );
    let setup = Setup::new(&emulator, 2048, "", &hooks);
    let (server_cert, server_key) = server_identity(work.path());
    let server = FileServer::start(&server_cert, &server_key, &emulator.ca_pem());

    let daemon = DaemonProc::start(&setup);
    let first = wait_for(Duration::from_secs(20), "first install", || {
        current_serial(&setup)
    });
    let accept = free_port();
    let stunnel = start_stunnel(&setup, work.path(), accept, server.port, &server_cert);
    let stunnel_pid = stunnel.pid().unwrap();

    assert_eq!(through(accept), format!("serial={first}"));
    assert_eq!(server.last(), Some(Ok(first.clone())));

    // The daemon rotates; the hook SIGHUPs stunnel; the next connection shows the new serial.
    let second = wait_for(Duration::from_secs(20), "a rotation", || {
        current_serial(&setup).filter(|s| *s != first)
    });
    wait_for(
        Duration::from_secs(10),
        "stunnel to present the new certificate",
        || (through(accept) == format!("serial={second}")).then_some(()),
    );
    assert_eq!(
        stunnel.pid(),
        Some(stunnel_pid),
        "stunnel must not have been restarted"
    );
    // The hook returns once stunnel's log confirms the reload, which may be just after the
    // first connection with the new certificate.
    wait_for(Duration::from_secs(20), "the hook to succeed", || {
        daemon.log_text().contains("hook succeeded").then_some(())
    });
    drop(daemon);

    // A set from a foreign CA is refused by the server: the test can fail.
    let foreign = setup.out.join("generations").join("999999-foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    self_signed(
        &foreign.join("key.pem"),
        &foreign.join("fullchain.pem"),
        "impostor",
        None,
    );
    let tmp_link = setup.out.join("current.foreign");
    std::os::unix::fs::symlink("generations/999999-foreign", &tmp_link).unwrap();
    std::fs::rename(&tmp_link, setup.current()).unwrap();
    let o = Command::new(&hook)
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .env("EIT_CERTD_BIN", bin())
        .env(
            "STUNNEL_PID_GLOB",
            format!("{}/*.pid", work.path().display()),
        )
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    wait_for(
        Duration::from_secs(10),
        "the server to refuse the foreign certificate",
        || {
            let reply = through(accept);
            (!reply.starts_with("serial=") && matches!(server.last(), Some(Err(_)))).then_some(())
        },
    );
}

#[test]
fn gnutls_reads_the_installed_files_the_way_tlshd_does() {
    if !on_path("certtool") || !on_path("gnutls-cli") {
        eprintln!("skipped: gnutls-bin is not installed (apt-get install gnutls-bin)");
        return;
    }
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    assert_exit(&setup.run(&["renew"]), 0);
    let current = setup.current();
    let serial = current_serial(&setup).unwrap();

    let fullchain = current.join("fullchain.pem");
    let (ok, out) = run_tool(
        "certtool",
        &[
            "--verify",
            "--load-ca-certificate",
            emulator.ca_pem().to_str().unwrap(),
            "--infile",
            fullchain.to_str().unwrap(),
        ],
    );
    assert!(
        ok && out.contains("Chain verification output: Verified"),
        "{out}"
    );
    let (ok, out) = run_tool(
        "certtool",
        &["-k", "--infile", current.join("key.pem").to_str().unwrap()],
    );
    assert!(ok && out.contains("2048 bits"), "{out}");

    let work = tempfile::tempdir().unwrap();
    let (server_cert, server_key) = server_identity(work.path());
    let server = FileServer::start(&server_cert, &server_key, &emulator.ca_pem());
    // stdin stays open (gnutls-cli ends the session at EOF); the server's record proves the
    // mutual handshake with our certificate.
    let mut client = Command::new("gnutls-cli")
        .args(["--x509cafile", server_cert.to_str().unwrap()])
        .args(["--x509certfile", fullchain.to_str().unwrap()])
        .args(["--x509keyfile", current.join("key.pem").to_str().unwrap()])
        .args(["--port", &server.port.to_string(), "localhost"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let seen = wait_for(Duration::from_secs(10), "gnutls-cli's handshake", || {
        server.last()
    });
    let _ = client.kill();
    let o = client.wait_with_output().unwrap();
    assert_eq!(seen, Ok(serial), "gnutls-cli: {}{}", stdout(&o), stderr(&o));
    assert!(
        stdout(&o).contains("Handshake was completed"),
        "{}",
        stdout(&o)
    );
}
