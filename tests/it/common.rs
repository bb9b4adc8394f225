//! Shared helpers for integration tests: start the real emulator binary, write configs, run
//! the real `eit-certd` binary, and look at what landed on disk.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};

/// Says that a test (or part of it) could not run here, and why. Written to the process's own
/// stderr, past libtest's output capture (which only takes `print!`/`eprint!`): a skip must
/// show in a passing run, or it is a silent pass. `.ci/run` installs what every test needs,
/// so in CI this prints nothing.
/// Use through `skipped!`, which takes `format!` arguments.
pub fn skipped(what: std::fmt::Arguments) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr().lock(), "SKIPPED: {what}");
}

macro_rules! skipped {
    ($($arg:tt)*) => {
        $crate::common::skipped(format_args!($($arg)*))
    };
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_eit-certd")
}

/// A running `eit-certd emulator`, killed when dropped.
pub struct Emulator {
    pub child: Child,
    pub url: String,
    pub state_dir: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Emulator {
    pub fn start(extra: &[&str]) -> Emulator {
        let tmp = tempfile::tempdir().unwrap();
        let state_dir = tmp.path().join("emulator");
        let mut child = Command::new(bin())
            .arg("emulator")
            .arg("--state-dir")
            .arg(&state_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start emulator");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line.trim().to_string();
        assert!(url.starts_with("http"), "emulator printed {url:?}");
        Emulator {
            child,
            url,
            state_dir,
            _tmp: tmp,
        }
    }

    pub fn ca_pem(&self) -> PathBuf {
        self.state_dir.join("ca.pem")
    }

    /// A plain-http client for the control endpoints (https emulators: trusts their root).
    pub fn control(&self) -> reqwest::blocking::Client {
        let mut b = reqwest::blocking::Client::builder().no_proxy();
        if self.url.starts_with("https") {
            let pem = std::fs::read(self.ca_pem()).unwrap();
            b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap());
        }
        b.build().unwrap()
    }

    /// How many certificate requests the emulator has answered, from request `from` on.
    pub fn certificate_requests_since(&self, from: usize) -> usize {
        self.requests()[from..]
            .iter()
            .filter(|r| {
                r["path"]
                    .as_str()
                    .is_some_and(|p| p.contains("/certificates"))
            })
            .count()
    }

    pub fn requests(&self) -> Vec<serde_json::Value> {
        self.control()
            .get(format!("{}/emulator/v1/requests", self.url))
            .send()
            .unwrap()
            .json()
            .unwrap()
    }

    pub fn set_fault(&self, mode: &str, count: Option<u32>) {
        let body = match count {
            Some(n) => serde_json::json!({"mode": mode, "count": n}),
            None => serde_json::json!({"mode": mode}),
        };
        let r = self
            .control()
            .put(format!("{}/emulator/v1/fault", self.url))
            .json(&body)
            .send()
            .unwrap();
        assert!(r.status().is_success(), "set fault {mode}: {}", r.status());
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A scratch directory with a config file pointing at an emulator.
pub struct Setup {
    pub tmp: tempfile::TempDir,
    pub config: PathBuf,
    pub out: PathBuf,
}

impl Setup {
    /// `extra_metadata` goes into the `[metadata]` section (after `endpoint`, and after
    /// `timeout = "5s"` unless it sets `timeout` itself); `extra` is appended verbatim to the
    /// generated TOML (extra sections or [[hooks]]).
    pub fn new(emulator: &Emulator, key_bits: u32, extra_metadata: &str, extra: &str) -> Setup {
        Setup::for_url(&emulator.url, key_bits, extra_metadata, extra)
    }

    /// [`Setup::new`] for a service at `url` that is not an [`Emulator`].
    pub fn for_url(url: &str, key_bits: u32, extra_metadata: &str, extra: &str) -> Setup {
        let tmp = tempfile::tempdir().unwrap();
        let out = tmp.path().join("out");
        let config = tmp.path().join("config.toml");
        let sets_timeout = extra_metadata.lines().any(|l| {
            l.split('=')
                .next()
                .is_some_and(|key| key.trim() == "timeout")
        });
        let default_timeout = if sets_timeout {
            ""
        } else {
            "timeout = \"5s\"\n"
        };
        let text = format!(
            "[metadata]\nendpoint = \"{}\"\n{default_timeout}{extra_metadata}\n\
             [certificate]\nkey_bits = {key_bits}\nsubject = {{ C = \"US\", O = \"eit-certd tests\" }}\n\
             min_remaining = \"5s\"\njitter = \"0s\"\nmin_interval = \"1s\"\n\n[output]\ndir = \"{}\"\n\n{extra}\n",
            url,
            out.display()
        );
        std::fs::write(&config, text).unwrap();
        Setup { tmp, config, out }
    }

    pub fn run(&self, args: &[&str]) -> Output {
        Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    pub fn current(&self) -> PathBuf {
        self.out.join("current")
    }

    pub fn generations(&self) -> Vec<String> {
        let mut v: Vec<String> = match std::fs::read_dir(self.out.join("generations")) {
            Ok(rd) => rd
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                // `.tmp-*`: an install in progress (or killed), not a generation.
                .filter(|n| !n.starts_with('.'))
                .collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn assert_exit(o: &Output, code: i32) {
    assert_eq!(
        o.status.code(),
        Some(code),
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status.code(),
        stdout(o),
        stderr(o)
    );
}

/// Every file and symlink under `dir` with its content (symlinks: their target), so a test can
/// prove a failed renewal changed nothing at all.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, Vec<u8>>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            let p = e.path();
            let meta = std::fs::symlink_metadata(&p).unwrap();
            if meta.file_type().is_symlink() {
                let t = std::fs::read_link(&p).unwrap();
                out.insert(p, t.into_os_string().into_encoded_bytes());
            } else if meta.is_dir() {
                out.insert(p.clone(), b"<dir>".to_vec());
                walk(&p, out);
            } else {
                let mut content = std::fs::read(&p).unwrap();
                content.extend_from_slice(
                    format!("<mode {:o}>", meta.permissions().mode()).as_bytes(),
                );
                out.insert(p, content);
            }
        }
    }
    walk(dir, &mut out);
    out
}

pub fn mode(p: &Path) -> u32 {
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// Runs a program and returns (status ok, stdout+stderr).
pub fn run_tool(program: &str, args: &[&str]) -> (bool, String) {
    let o = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    (o.status.success(), format!("{}{}", stdout(&o), stderr(&o)))
}

/// The public key of a certificate or key file, as PEM, via the openssl CLI.
pub fn pubkey_of_cert(cert: &Path) -> String {
    let (ok, out) = run_tool(
        "openssl",
        &["x509", "-in", cert.to_str().unwrap(), "-noout", "-pubkey"],
    );
    assert!(ok, "{out}");
    out
}

pub fn pubkey_of_key(key: &Path) -> String {
    let (ok, out) = run_tool(
        "openssl",
        &["pkey", "-in", key.to_str().unwrap(), "-pubout"],
    );
    assert!(ok, "{out}");
    out
}

/// A running `eit-certd run`, its stderr collected into a file; killed when dropped.
pub struct DaemonProc {
    pub child: Child,
    pub log: PathBuf,
}

impl DaemonProc {
    pub fn start(setup: &Setup) -> DaemonProc {
        DaemonProc::start_with_env(setup, &[])
    }

    /// Like [`DaemonProc::start`], with `env` added (it may override `RUST_LOG`). Output goes
    /// to a log outside the config file's directory: the daemon watches that directory, and at
    /// `RUST_LOG=trace` the watcher logs every event, its own log writes included.
    pub fn start_with_env(setup: &Setup, env: &[(&str, &str)]) -> DaemonProc {
        static COUNT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = setup.tmp.path().join("logs");
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join(format!("daemon-{n}.log"));
        let log_file = std::fs::File::create(&log).unwrap();
        let child = Command::new(bin())
            .arg("--config")
            .arg(&setup.config)
            .arg("run")
            .env("RUST_LOG", "eit_certd=debug")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().unwrap())
            .stderr(log_file)
            .spawn()
            .unwrap();
        DaemonProc { child, log }
    }

    /// Like [`DaemonProc::start`], with `NOTIFY_SOCKET` set to a socket the test listens on,
    /// as systemd does for a `Type=notify` unit; the socket's reads time out after 200 ms.
    pub fn start_notified(setup: &Setup) -> (DaemonProc, std::os::unix::net::UnixDatagram) {
        let socket_path = setup.tmp.path().join("notify.sock");
        let socket = std::os::unix::net::UnixDatagram::bind(&socket_path).unwrap();
        socket
            .set_read_timeout(Some(std::time::Duration::from_millis(200)))
            .unwrap();
        let log = setup.tmp.path().join("notified-daemon.log");
        let child = Command::new(bin())
            .arg("--config")
            .arg(&setup.config)
            .arg("run")
            .env("NOTIFY_SOCKET", &socket_path)
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        (DaemonProc { child, log }, socket)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn signal(&self, sig: nix::sys::signal::Signal) {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(self.pid()), sig).unwrap();
    }

    /// Waits up to `timeout` for the process to exit; its exit code, or None if it did not.
    pub fn wait_exit(&mut self, timeout: std::time::Duration) -> Option<i32> {
        let deadline = std::time::Instant::now() + timeout;
        while std::time::Instant::now() < deadline {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        None
    }
}

impl Drop for DaemonProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Polls `f` every 50 ms until it returns Some, or panics with `what` after `timeout`.
pub fn wait_for<T>(
    timeout: std::time::Duration,
    what: &str,
    mut f: impl FnMut() -> Option<T>,
) -> T {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// The serial of `current/cert.pem` per openssl, upper-case hex, or None if unreadable.
pub fn current_serial(setup: &Setup) -> Option<String> {
    let cert = setup.current().join("cert.pem");
    let o = Command::new("openssl")
        .args(["x509", "-noout", "-serial", "-in"])
        .arg(&cert)
        .output()
        .ok()?;
    if !o.status.success() {
        return None;
    }
    Some(stdout(&o).trim().trim_start_matches("serial=").to_string())
}

/// `openssl verify -CAfile ca -untrusted DIR/chain.pem DIR/cert.pem` for a generation directory
/// (or `current`), optionally at a Unix time; (success, output).
pub fn openssl_verify(ca: &Path, dir: &Path, at: Option<i64>) -> (bool, String) {
    let at = at.map(|t| t.to_string());
    let mut args = vec!["verify", "-CAfile", ca.to_str().unwrap(), "-untrusted"];
    let chain = dir.join("chain.pem");
    let cert = dir.join("cert.pem");
    args.push(chain.to_str().unwrap());
    if let Some(at) = &at {
        args.extend(["-attime", at.as_str()]);
    }
    args.push(cert.to_str().unwrap());
    run_tool("openssl", &args)
}

// ---- helpers for the crash, hostile file-system and secrets tests ----

/// Every `.tmp-*` entry under `dir`, at any depth: what an interrupted install leaves behind.
pub fn tmp_litter(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return found;
    };
    for e in rd.flatten() {
        let p = e.path();
        if e.file_name().to_string_lossy().starts_with(".tmp-") {
            found.push(p.clone());
        }
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            found.extend(tmp_litter(&p));
        }
    }
    found
}

/// The five files of a generation.
pub const SET_FILES: [&str; 5] = [
    "key.pem",
    "cert.pem",
    "chain.pem",
    "fullchain.pem",
    "combined.pem",
];

/// Checks what a consumer of `out/current` would see. `Ok(None)`: there is no `current`.
/// Otherwise `current` must be a symlink to `generations/<id>` holding all five files, with
/// fullchain = cert + chain, combined = key + fullchain, key.pem the key of cert.pem (per the
/// openssl CLI) and `openssl verify -CAfile <ca> -untrusted chain.pem cert.pem` passing.
/// Returns the generation id.
pub fn check_current_set(out: &Path, ca_pem: &Path) -> Result<Option<String>, String> {
    let link = out.join("current");
    let meta = match std::fs::symlink_metadata(&link) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot inspect current: {e}")),
    };
    if !meta.file_type().is_symlink() {
        return Err(format!("current is not a symlink: {meta:?}"));
    }
    let target = std::fs::read_link(&link).map_err(|e| format!("readlink current: {e}"))?;
    let id = target
        .strip_prefix("generations")
        .ok()
        .and_then(|rest| rest.to_str())
        .filter(|id| !id.is_empty() && !id.contains('/') && !id.starts_with('.'))
        .ok_or_else(|| format!("current points at {}", target.display()))?
        .to_string();
    let dir = out.join(&target);
    if !dir.is_dir() {
        return Err(format!(
            "current dangles: {} is not a directory",
            target.display()
        ));
    }
    let mut contents = BTreeMap::new();
    for name in SET_FILES {
        let p = dir.join(name);
        let meta = std::fs::symlink_metadata(&p).map_err(|e| format!("{id}/{name}: {e}"))?;
        if !meta.is_file() || meta.len() == 0 {
            return Err(format!("{id}/{name} is not a non-empty regular file"));
        }
        contents.insert(name, std::fs::read(&p).unwrap());
    }
    let joined = |a: &str, b: &str| [contents[a].as_slice(), contents[b].as_slice()].concat();
    if contents["fullchain.pem"] != joined("cert.pem", "chain.pem") {
        return Err(format!("{id}: fullchain.pem is not cert.pem + chain.pem"));
    }
    if contents["combined.pem"] != joined("key.pem", "fullchain.pem") {
        return Err(format!("{id}: combined.pem is not key.pem + fullchain.pem"));
    }
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let (ok, cert_pub) = run_tool(
        "openssl",
        &["x509", "-in", &path("cert.pem"), "-noout", "-pubkey"],
    );
    if !ok {
        return Err(format!("{id}/cert.pem: {cert_pub}"));
    }
    let (ok, key_pub) = run_tool("openssl", &["pkey", "-in", &path("key.pem"), "-pubout"]);
    if !ok {
        return Err(format!("{id}/key.pem: {key_pub}"));
    }
    if cert_pub != key_pub {
        return Err(format!("{id}: key.pem is not the key of cert.pem"));
    }
    let (ok, verified) = run_tool(
        "openssl",
        &[
            "verify",
            "-CAfile",
            ca_pem.to_str().unwrap(),
            "-untrusted",
            &path("chain.pem"),
            &path("cert.pem"),
        ],
    );
    if !ok || !verified.contains(": OK") {
        return Err(format!("{id}: openssl verify: {verified}"));
    }
    Ok(Some(id))
}

/// A tmpfs mounted on a fresh directory (we run as root in the test VM), unmounted when
/// dropped. `mount` fails without CAP_SYS_ADMIN (an unprivileged container): the caller gets
/// the reason and falls back or skips.
pub struct Tmpfs {
    pub path: PathBuf,
    _tmp: tempfile::TempDir,
}

impl Tmpfs {
    pub fn mount(size: &str) -> Result<Tmpfs, String> {
        let tmp = tempfile::tempdir().map_err(|e| e.to_string())?;
        let path = tmp.path().join("mnt");
        std::fs::create_dir(&path).map_err(|e| e.to_string())?;
        let o = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0755"),
                "tmpfs",
            ])
            .arg(&path)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !o.status.success() {
            return Err(format!("mount -t tmpfs failed: {}", stderr(&o).trim()));
        }
        Ok(Tmpfs { path, _tmp: tmp })
    }

    /// `mount -o remount,ro` (or `rw`).
    pub fn remount(&self, mode: &str) {
        let o = Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(&self.path)
            .output()
            .unwrap();
        assert!(o.status.success(), "remount {mode}: {}", stderr(&o));
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Before the TempDir goes (its removal would otherwise empty the mount, then fail).
        let o = Command::new("umount").arg(&self.path).output();
        if !o.as_ref().is_ok_and(|o| o.status.success()) {
            let _ = Command::new("umount").arg("-l").arg(&self.path).output();
        }
    }
}

impl Setup {
    /// Like [`Setup::run`], with `env` added (e.g. `RUST_LOG=trace`).
    pub fn run_with_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// Starts the binary with this config and `args`, stdin closed, stdout and stderr piped.
    pub fn spawn(&self, args: &[&str]) -> Child {
        Command::new(bin())
            .arg("--config")
            .arg(&self.config)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    }

    /// Inserts `lines` at the top of the `[output]` section of the config file.
    pub fn add_output_settings(&self, lines: &str) {
        let text = std::fs::read_to_string(&self.config).unwrap();
        assert!(text.contains("[output]\n"), "{text}");
        let text = text.replacen("[output]\n", &format!("[output]\n{lines}\n"), 1);
        std::fs::write(&self.config, text).unwrap();
    }
}

/// What a [`CannedServer`] saw of one request.
#[derive(Debug, Clone)]
pub struct SeenRequest {
    pub method: String,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

/// A hostile metadata service on loopback: answers each request whose path contains a route's
/// key with that route's status and body (the first match), 404 otherwise, and records what
/// it saw. For answers the emulator would never give (a token that lasts forever, a token
/// with a line break, a megabyte where a list belongs).
pub struct CannedServer {
    pub url: String,
    pub seen: std::sync::Arc<std::sync::Mutex<Vec<SeenRequest>>>,
}

impl CannedServer {
    pub fn start(routes: Vec<(&'static str, u16, String)>) -> CannedServer {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = seen.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { return };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                let mut parts = line.split_whitespace();
                let method = parts.next().unwrap_or("").to_string();
                let path = parts.next().unwrap_or("").to_string();
                let mut headers = Vec::new();
                let mut length = 0usize;
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                    if let Some((k, v)) = h.trim_end().split_once(':') {
                        if k.eq_ignore_ascii_case("content-length") {
                            length = v.trim().parse().unwrap_or(0);
                        }
                        headers.push((k.to_ascii_lowercase(), v.trim().to_string()));
                    }
                }
                let mut body = vec![0u8; length];
                let _ = reader.read_exact(&mut body);
                let (status, answer) = routes
                    .iter()
                    .find(|(key, _, _)| path.contains(key))
                    .map(|(_, s, b)| (*s, b.clone()))
                    .unwrap_or((404, "{}".to_string()));
                log.lock().unwrap().push(SeenRequest {
                    method,
                    path,
                    headers,
                });
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{answer}",
                    answer.len()
                );
            }
        });
        CannedServer { url, seen }
    }

    pub fn seen(&self) -> Vec<SeenRequest> {
        self.seen.lock().unwrap().clone()
    }
}

/// A token answer with the given `access_token` (JSON-escaped here) and `expires_in`.
pub fn token_json(token: &str, expires_in: &str) -> String {
    format!(
        r#"{{"access_token":{},"created_at":"2026-01-01T00:00:00Z","expires_at":"2026-01-01T00:05:00Z","expires_in":{expires_in}}}"#,
        serde_json::to_string(token).unwrap()
    )
}
