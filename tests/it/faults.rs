//! Every emulator fault mode against the real binary. Each test starts its own emulator,
//! installs a valid set with a normal `renew`, switches the fault on through the control
//! endpoint, runs `renew --force` and checks what the user sees (exit code, the
//! `eit-certd: ...` sentence) and what is on disk: for a refused answer, `out/` is
//! byte-identical apart from `state.json`, which records the failure (and `.lock`, which
//! holds the pid of the last writer).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;
use serde_json::Value;
use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

/// Every mode the emulator has, each tested below (one test per mode, plus a few more).
const MODES: &[&str] = &[
    "ok",
    "status-503",
    "status-429",
    "html-500",
    "slow",
    "reset",
    "token-401",
    "refuse-csr",
    "expired",
    "not-yet-valid",
    "bad-signature",
    "wrong-key",
    "short-lived",
    "no-intermediate",
    "extra-garbage",
    "garbage-pem",
    "truncated",
    "huge",
    "wrong-order",
    "doc-sample",
    // hostile_inputs::service_text_reaches_logs_and_terminals_bounded_and_flat
    "hostile-text",
];

const TOKEN_PATH: &str = "/identity/v1/token";
const CERT_PATH: &str = "/identity/v1/certificates";

/// A set installed by a normal renewal, with what the test compares against later.
struct Installed {
    emulator: Emulator,
    setup: Setup,
    /// `out/` without `state.json`.
    before: BTreeMap<PathBuf, Vec<u8>>,
    /// How many API calls the emulator had seen when the fault was switched on.
    calls_before: usize,
}

impl Installed {
    fn new(extra_metadata: &str) -> Installed {
        let emulator = Emulator::start(&[]);
        let setup = Setup::new(&emulator, 2048, extra_metadata, "");
        assert_exit(&setup.run(&["renew"]), 0);
        assert_eq!(setup.generations().len(), 1);
        let before = sets(&setup.out);
        let calls_before = emulator.requests().len();
        Installed {
            emulator,
            setup,
            before,
            calls_before,
        }
    }

    /// Switches `mode` on (for `count` calls it applies to; `None`: until changed) and runs
    /// `renew --force`.
    fn renew_under(&self, mode: &str, count: Option<u32>) -> Output {
        self.emulator.set_fault(mode, count);
        self.setup.run(&["renew", "--force"])
    }

    /// The API calls since the fault was switched on, as (method, path, status).
    fn calls_since(&self) -> Vec<(String, String, u64)> {
        self.emulator.requests()[self.calls_before..]
            .iter()
            .map(|r| {
                (
                    r["method"].as_str().unwrap().to_string(),
                    r["path"].as_str().unwrap().to_string(),
                    r["status"].as_u64().unwrap(),
                )
            })
            .collect()
    }

    /// What every refused answer must leave behind: exit 1, `phrase` in the one-sentence
    /// error, `out/` untouched but for `state.json`, which records exactly that error, and
    /// no temporary litter.
    fn assert_refused(&self, o: &Output, phrase: &str) -> String {
        assert_exit(o, 1);
        let error = error_sentence(o);
        assert!(
            error.contains(phrase),
            "expected {phrase:?} in the error:\n{error}"
        );
        let after = sets(&self.setup.out);
        let changed: Vec<_> = self
            .before
            .keys()
            .chain(after.keys())
            .filter(|p| self.before.get(*p) != after.get(*p))
            .collect();
        assert!(changed.is_empty(), "a refused renewal changed {changed:?}");
        assert_no_litter(&self.setup.out);
        let state = state_json(&self.setup.out);
        let attempt = &state["last_attempt"];
        assert_eq!(attempt["outcome"], "error", "{state}");
        assert_eq!(
            attempt["error"].as_str(),
            Some(error.as_str()),
            "state.json records the error as shown"
        );
        assert_eq!(state["consecutive_failures"], 1, "{state}");
        error
    }
}

/// A refused answer: installs, switches `mode` on until changed, renews, checks the common
/// rules and returns the error sentence.
fn refused(mode: &str, extra_metadata: &str, phrase: &str) -> (Installed, String) {
    let installed = Installed::new(extra_metadata);
    let o = installed.renew_under(mode, None);
    let error = installed.assert_refused(&o, phrase);
    (installed, error)
}

/// The error as the user sees it: the `eit-certd: ` line, without that prefix.
fn error_sentence(o: &Output) -> String {
    let err = stderr(o);
    let lines: Vec<&str> = err
        .lines()
        .filter_map(|l| l.strip_prefix("eit-certd: "))
        .collect();
    assert_eq!(lines.len(), 1, "one error sentence expected:\n{err}");
    lines[0].to_string()
}

/// `snapshot(out)` without the bookkeeping every run rewrites: `state.json` (the last
/// attempt) and `.lock` (the pid of the last process that held it).
fn sets(out: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut s = snapshot(out);
    assert!(s.remove(&out.join("state.json")).is_some(), "no state.json");
    assert!(s.remove(&out.join(".lock")).is_some(), "no .lock");
    s
}

fn assert_no_litter(dir: &Path) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        assert!(!name.starts_with(".tmp-"), "litter: {}", e.path().display());
        if e.file_type().unwrap().is_dir() {
            assert_no_litter(&e.path());
        }
    }
}

fn state_json(out: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(out.join("state.json")).unwrap()).unwrap()
}

fn call(method: &str, path: &str, status: u64) -> (String, String, u64) {
    (method.to_string(), path.to_string(), status)
}

fn rfc3339(v: &Value) -> OffsetDateTime {
    OffsetDateTime::parse(v.as_str().unwrap(), &Rfc3339).unwrap()
}

/// `openssl x509 -enddate` of a certificate file, parsed.
fn openssl_not_after(cert: &Path) -> OffsetDateTime {
    let (ok, out) = run_tool(
        "openssl",
        &[
            "x509",
            "-in",
            cert.to_str().unwrap(),
            "-noout",
            "-enddate",
            "-dateopt",
            "iso_8601",
        ],
    );
    assert!(ok, "{out}");
    // notAfter=2026-11-23 20:28:46Z
    let value = out
        .trim()
        .strip_prefix("notAfter=")
        .unwrap()
        .replace(' ', "T");
    OffsetDateTime::parse(&value, &Rfc3339).unwrap_or_else(|e| panic!("{value}: {e}"))
}

// ---- status and transport modes: every call, token calls included ----

#[test]
fn status_503_is_refused_as_a_service_failure() {
    let (installed, error) = refused("status-503", "", "HTTP 503");
    assert!(error.contains("instance identity token request"), "{error}");
    assert!(error.contains("service_unavailable"), "{error}");
    assert_eq!(installed.calls_since(), [call("PUT", TOKEN_PATH, 503)]);
}

#[test]
fn status_429_is_refused_as_rate_limiting() {
    let (installed, error) = refused("status-429", "", "HTTP 429");
    assert!(error.contains("rate limiting"), "{error}");
    assert_eq!(installed.calls_since(), [call("PUT", TOKEN_PATH, 429)]);
}

#[test]
fn html_500_is_refused_with_an_excerpt_of_the_page() {
    let (installed, error) = refused("html-500", "", "HTTP 500");
    assert!(
        error.contains("non-JSON body") && error.contains("Internal Server Error"),
        "{error}"
    );
    assert_eq!(installed.calls_since(), [call("PUT", TOKEN_PATH, 500)]);
}

#[test]
fn slow_times_out_within_metadata_timeout() {
    let installed = Installed::new("timeout = \"2s\"");
    let config = std::fs::read_to_string(&installed.setup.config).unwrap();
    assert_eq!(config.matches("timeout").count(), 1, "{config}");
    let started = Instant::now();
    let o = installed.renew_under("slow", None);
    let took = started.elapsed();
    let error = installed.assert_refused(&o, "timed out");
    assert!(error.contains("metadata.timeout"), "{error}");
    // 2 s of timeout plus a key generation, not the emulator's 120 s.
    assert!(took < Duration::from_secs(30), "took {took:?}");
    // The held-back call is logged only when it is answered, long after this test.
    assert!(installed.calls_since().is_empty());
}

#[test]
fn reset_is_refused_as_a_broken_off_response() {
    let (installed, error) = refused("reset", "", "broke off mid-response");
    assert!(error.contains("instance identity token request"), "{error}");
    // The head (200) went out before the connection was closed.
    assert_eq!(installed.calls_since(), [call("PUT", TOKEN_PATH, 200)]);
}

// ---- certificate modes: only POST .../certificates; token calls pass untouched ----

/// The calls of a refused certificate mode: one untouched token call, one certificate call.
fn token_then_certificate(installed: &Installed) {
    token_then_certificate_status(installed, 201);
}

/// The same, for a mode that answers the certificate call with `status`.
fn token_then_certificate_status(installed: &Installed, status: u64) {
    assert_eq!(
        installed.calls_since(),
        [
            call("PUT", TOKEN_PATH, 200),
            call("POST", CERT_PATH, status)
        ]
    );
}

#[test]
fn token_401_once_is_survived_with_a_new_token() {
    let installed = Installed::new("");
    let o = installed.renew_under("token-401", Some(1));
    assert_exit(&o, 0);
    assert!(
        stderr(&o).contains("answered 401; retrying once with a new token"),
        "{}",
        stderr(&o)
    );
    assert_eq!(
        installed.calls_since(),
        [
            call("PUT", TOKEN_PATH, 200),
            call("POST", CERT_PATH, 401),
            call("PUT", TOKEN_PATH, 200),
            call("POST", CERT_PATH, 201),
        ]
    );
    assert_eq!(installed.setup.generations().len(), 2);
    assert_eq!(
        state_json(&installed.setup.out)["last_attempt"]["outcome"],
        "ok"
    );
}

#[test]
fn token_401_every_time_is_retried_once_then_refused() {
    let (installed, error) = refused("token-401", "", "HTTP 401");
    assert!(error.contains("refused the access token"), "{error}");
    assert_eq!(
        installed.calls_since(),
        [
            call("PUT", TOKEN_PATH, 200),
            call("POST", CERT_PATH, 401),
            call("PUT", TOKEN_PATH, 200),
            call("POST", CERT_PATH, 401),
        ]
    );
}

#[test]
fn a_refused_csr_names_the_service_code_and_the_config_to_check() {
    let (installed, error) = refused("refuse-csr", "", "HTTP 400: invalid_csr");
    assert!(error.contains("certificate.subject"), "{error}");
    token_then_certificate_status(&installed, 400);
}

#[test]
fn expired_leaf_is_refused() {
    let (installed, error) = refused("expired", "", "expired at");
    assert!(error.contains("certificates[0]"), "{error}");
    assert!(error.contains("Nothing was installed"), "{error}");
    token_then_certificate(&installed);
}

#[test]
fn not_yet_valid_leaf_is_refused_with_a_clock_hint() {
    let (installed, error) = refused("not-yet-valid", "", "is not valid before");
    assert!(error.contains("check this host's clock"), "{error}");
    token_then_certificate(&installed);
}

#[test]
fn leaf_with_a_bad_signature_is_refused() {
    let (installed, error) = refused("bad-signature", "", "is not signed by");
    assert!(error.contains("certificates[0]") && error.contains("certificates[1]"));
    token_then_certificate(&installed);
}

#[test]
fn leaf_for_another_key_is_refused() {
    let (installed, _) = refused("wrong-key", "", "different public key");
    token_then_certificate(&installed);
}

#[test]
fn short_lived_leaf_is_installed_and_scheduled_from_its_own_not_after() {
    let installed = Installed::new("");
    let o = installed.renew_under("short-lived", None);
    assert_exit(&o, 0);
    // The JSON claimed the hour that was asked for; the certificate carries a quarter.
    assert!(stdout(&o).contains("15m"), "{}", stdout(&o));
    assert!(
        stderr(&o).contains("but its notAfter is"),
        "the disagreement is logged: {}",
        stderr(&o)
    );
    let s = installed.setup.run(&["status", "--json"]);
    assert_exit(&s, 0);
    let report: Value = serde_json::from_str(&stdout(&s)).unwrap();
    let not_before = rfc3339(&report["installed"]["not_before"]);
    let not_after = rfc3339(&report["installed"]["not_after"]);
    let cert = installed.setup.current().join("cert.pem");
    assert_eq!(
        not_after,
        openssl_not_after(&cert),
        "the certificate's own notAfter"
    );
    assert_eq!(report["installed"]["lifetime_seconds"], 900);
    assert_eq!(not_after - not_before, time::Duration::minutes(15));
    let due = rfc3339(&report["renewal_due_at"]);
    assert!(
        not_before < due && due < not_after,
        "renewal due at {due}, not after {not_after}"
    );
    let next = rfc3339(&report["state"]["next_renewal"]);
    assert!(next < not_after, "next renewal {next}");
}

#[test]
fn leaf_without_intermediate_is_refused() {
    let (installed, _) = refused("no-intermediate", "", "without the intermediate");
    token_then_certificate(&installed);
}

#[test]
fn garbage_after_the_chain_is_refused() {
    let (installed, error) = refused("extra-garbage", "", "not a PEM certificate");
    assert!(error.contains("certificates[2]"), "{error}");
    token_then_certificate(&installed);
}

#[test]
fn pem_around_garbage_is_refused() {
    let (installed, error) = refused("garbage-pem", "", "not an X.509 certificate");
    assert!(error.contains("certificates[1]"), "{error}");
    token_then_certificate(&installed);
}

#[test]
fn truncated_json_is_refused() {
    let (installed, error) = refused("truncated", "", "not the documented JSON");
    assert!(error.contains("certificate request"), "{error}");
    token_then_certificate(&installed);
}

#[test]
fn huge_body_is_refused_without_reading_it_all() {
    let installed = Installed::new("");
    installed.emulator.set_fault("huge", None);
    let (o, peak) = run_with_peak_rss(&installed.setup, &["renew", "--force"]);
    // The body is 300 MB; the client reads at most its 1 MiB cap.
    eprintln!("peak RSS of `renew --force` under huge: {} KiB", peak >> 10);
    assert!(peak < 64 << 20, "peak RSS {} MiB", peak >> 20);
    let error = installed.assert_refused(&o, "larger than");
    assert!(error.contains("1048576 bytes"), "{error}");
    token_then_certificate(&installed);
}

#[test]
fn wrong_order_is_installed_leaf_first() {
    let installed = Installed::new("");
    let first = installed.setup.current().join("chain.pem");
    let intermediate = std::fs::read_to_string(first).unwrap();
    let o = installed.renew_under("wrong-order", None);
    assert_exit(&o, 0);
    assert!(stderr(&o).contains("out of order"), "{}", stderr(&o));
    assert_eq!(installed.setup.generations().len(), 2);
    let cur = installed.setup.current();
    let read = |name: &str| std::fs::read_to_string(cur.join(name)).unwrap();
    let (cert, chain, full) = (read("cert.pem"), read("chain.pem"), read("fullchain.pem"));
    assert_eq!(chain, intermediate, "chain.pem is the intermediate");
    assert_eq!(
        full,
        format!("{cert}{chain}"),
        "fullchain.pem is leaf first"
    );
    assert_ne!(cert, chain);
    assert_eq!(
        pubkey_of_cert(&cur.join("cert.pem")),
        pubkey_of_key(&cur.join("key.pem"))
    );
    let (ok, out) = openssl_verify(&installed.emulator.ca_pem(), &cur, None);
    assert!(ok, "{out}");
}

#[test]
fn documented_sample_is_refused_as_expired() {
    let (installed, error) = refused("doc-sample", "", "expired at 2022-11-01T14:20:14Z");
    assert!(error.contains("Example Share Certificate"), "{error}");
    token_then_certificate(&installed);
}

#[test]
fn ok_mode_renews() {
    let installed = Installed::new("");
    assert_exit(&installed.renew_under("ok", None), 0);
    assert_eq!(installed.setup.generations().len(), 2);
    token_then_certificate(&installed);
}

// ---- the flag, the help text and the table ----

#[test]
fn fault_flag_applies_from_the_first_call() {
    let emulator = Emulator::start(&["--fault", "status-503"]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let o = setup.run(&["renew"]);
    assert_exit(&o, 1);
    assert!(error_sentence(&o).contains("HTTP 503"));
    assert!(setup.generations().is_empty());
    assert!(std::fs::symlink_metadata(setup.current()).is_err());
    assert_no_litter(&setup.out);
    emulator.set_fault("ok", None);
    assert_exit(&setup.run(&["renew"]), 0);
}

#[test]
fn emulator_help_lists_every_mode_with_its_description() {
    let o = Command::new(bin())
        .args(["emulator", "--help"])
        .output()
        .unwrap();
    assert_exit(&o, 0);
    let help = stdout(&o);
    let listed: Vec<&str> = help
        .lines()
        .map(str::trim)
        .filter_map(|l| l.split_once("  "))
        .map(|(name, _)| name)
        .filter(|name| MODES.contains(name))
        .collect();
    assert_eq!(
        listed, MODES,
        "every mode, in order, each tested here:\n{help}"
    );
    let emulator = Emulator::start(&[]);
    let modes: Value = emulator
        .control()
        .get(format!("{}/emulator/v1/fault", emulator.url))
        .send()
        .unwrap()
        .json()
        .unwrap();
    for mode in modes["modes"].as_array().unwrap() {
        let (name, description) = (
            mode["name"].as_str().unwrap(),
            mode["description"].as_str().unwrap(),
        );
        assert!(MODES.contains(&name), "{name} has no test here");
        let line = help
            .lines()
            .find(|l| l.trim().starts_with(&format!("{name} ")))
            .unwrap();
        assert!(line.ends_with(description), "{line}");
    }
}

/// Runs the binary and measures its peak RSS (bytes): with `/usr/bin/time -v` when there
/// is one, else by polling `/proc/PID/status` (VmHWM, itself a high-water mark) every 10 ms.
fn run_with_peak_rss(setup: &Setup, args: &[&str]) -> (Output, u64) {
    let gnu_time = Path::new("/usr/bin/time");
    if gnu_time.exists() {
        let mut o = Command::new(gnu_time)
            .arg("-v")
            .arg(bin())
            .arg("--config")
            .arg(&setup.config)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = stderr(&o);
        let (ours, time_report) = err
            .split_once("\tCommand being timed:")
            .unwrap_or_else(|| panic!("no report from /usr/bin/time -v:\n{err}"));
        let kib: u64 = time_report
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("Maximum resident set size (kbytes): ")
            })
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or_else(|| panic!("no peak RSS in:\n{time_report}"));
        // Leave only the program's own stderr for the checks that follow.
        o.stderr = ours.as_bytes().to_vec();
        return (o, kib * 1024);
    }
    let mut child = setup.spawn(args);
    let status = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let deadline = Instant::now() + Duration::from_secs(60);
    // Pipes are drained after exit: the program writes a few lines, far below a pipe's buffer.
    while child.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "still running after 60 s");
        if let Some(kib) = std::fs::read_to_string(&status).ok().and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        }) {
            peak_kib = peak_kib.max(kib);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(peak_kib > 0, "never saw the process's memory");
    (child.wait_with_output().unwrap(), peak_kib * 1024)
}
