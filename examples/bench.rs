//! eit-certd benchmark: one run, one emulator on loopback, one table.
//!
//! ```sh
//! cargo build --release && cargo run --release --example bench
//! ```
//!
//! It starts the release binary's emulator (`target/release/eit-certd emulator --state-dir DIR`,
//! URL read from its first stdout line) and measures, against that one emulator:
//!
//! 1. the renewal critical path: `Renewer::renew_prepared` with a key and CSR prepared
//!    beforehand (the daemon keeps them as its spare), p50/p95; the first renewal, which also
//!    fetches the access token, is reported on its own. Where the time goes comes from the
//!    renewal's own per-stage timings (`Renewed::timings`), not from a copy of its steps;
//! 2. a cold renewal: `PrivateKey::generate_racing` (the daemon's cold path: one generation
//!    per core, the first wins) + CSR + `Renewer::renew_prepared`, p50;
//! 3. `benches/shell-pipeline.sh`, the documented curl/openssl/awk/jq steps, p50 (its first
//!    certificate is checked once with `openssl verify` against the emulator's `ca.pem`), and
//!    the ratio shell p50 / critical-path p50;
//! 4. emulator throughput: certificates per second (201s only) from concurrent clients, each
//!    with its own HTTP client and token, all POSTing the same CSR;
//! 5. start to ready: `eit-certd run` started over an expired set, from the spawn to READY=1
//!    on a `NOTIFY_SOCKET` the benchmark listens on, with a spare on disk and without one
//!    (the daemon then generates a key), p50/p95 each;
//! 6. the idle daemon: `eit-certd --config X run` over an installed, valid one-hour
//!    certificate; RSS, peak RSS and context switches (all threads) over a window.
//!
//! Only prints; nothing here asserts on time. Environment (default in brackets):
//!
//! | variable                | meaning                                                      |
//! | ----------------------- | ------------------------------------------------------------ |
//! | `BENCH_KEY_BITS`        | RSA size of every key, shell script included [4096]          |
//! | `BENCH_RENEWALS`        | warm renewals on the critical path [50] (+1 cold-token)      |
//! | `BENCH_COLD_RUNS`       | renewals including key generation [10]                       |
//! | `BENCH_SHELL_RUNS`      | runs of the shell pipeline [10]                              |
//! | `BENCH_STARTS`          | daemon starts over an expired set, with and without spare [20] |
//! | `BENCH_THROUGHPUT_SECS` | emulator throughput window [5]                               |
//! | `BENCH_CLIENTS`         | concurrent clients for the throughput figure [2]             |
//! | `BENCH_SETTLE_SECS`     | wait after starting the daemon before observing it [3]       |
//! | `BENCH_IDLE_SECS`       | idle-daemon observation window [60]                          |
//! | `BENCH_BINARY`          | the eit-certd binary [`<crate>/target/release/eit-certd`]    |
//! | `BENCH_DIR`             | parent of the scratch directory [the system temp dir]        |
//!
//! A quick run, to check that everything works (about 25 s; see benches/README.md):
//!
//! ```sh
//! BENCH_KEY_BITS=2048 BENCH_RENEWALS=10 BENCH_SHELL_RUNS=2 BENCH_IDLE_SECS=10 \
//!   cargo run --release --example bench
//! ```
// A benchmark and tests report on stdout; the product prints only through `out!`.
#![allow(clippy::print_stdout)]

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, ExitCode, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use eit_certd::config::{CertificateConfig, Config};
use eit_certd::metadata::client::Client;
use eit_certd::pki::{csr, PrivateKey};
use eit_certd::renew::{Renewer, Timings};
use eit_certd::store::spare::{Prepared, Spare};
use eit_certd::store::Store;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

const SHELL_SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/benches/shell-pipeline.sh");
const API_VERSION: &str = "2025-08-26";

struct Settings {
    key_bits: u32,
    renewals: usize,
    cold_runs: usize,
    shell_runs: usize,
    starts: usize,
    throughput: Duration,
    clients: usize,
    settle: Duration,
    idle: Duration,
    binary: PathBuf,
    scratch_parent: PathBuf,
}

impl Settings {
    fn from_env() -> Result<Settings> {
        let default_binary = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/eit-certd");
        Ok(Settings {
            key_bits: env_or("BENCH_KEY_BITS", 4096)?,
            renewals: env_or::<usize>("BENCH_RENEWALS", 50)?.max(1),
            cold_runs: env_or::<usize>("BENCH_COLD_RUNS", 10)?.max(1),
            shell_runs: env_or::<usize>("BENCH_SHELL_RUNS", 10)?.max(1),
            starts: env_or::<usize>("BENCH_STARTS", 20)?.max(1),
            throughput: Duration::from_secs_f64(env_or("BENCH_THROUGHPUT_SECS", 5.0)?),
            clients: env_or::<usize>("BENCH_CLIENTS", 2)?.max(1),
            settle: Duration::from_secs_f64(env_or("BENCH_SETTLE_SECS", 3.0)?),
            idle: Duration::from_secs_f64(env_or("BENCH_IDLE_SECS", 60.0)?),
            binary: std::env::var_os("BENCH_BINARY").map_or(default_binary, PathBuf::from),
            scratch_parent: std::env::var_os("BENCH_DIR")
                .map_or_else(std::env::temp_dir, PathBuf::from),
        })
    }
}

fn env_or<T: FromStr>(name: &str, default: T) -> Result<T>
where
    T::Err: std::fmt::Display,
{
    match std::env::var(name) {
        Ok(v) => v
            .trim()
            .parse()
            .map_err(|e| anyhow::anyhow!("{name}={v:?} is not a valid value: {e}")),
        Err(_) => Ok(default),
    }
}

fn main() -> ExitCode {
    let settings = match Settings::from_env() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("bench: {e:#}");
            return ExitCode::from(2);
        }
    };
    if !settings.binary.is_file() {
        eprintln!(
            "bench: {} is missing. The benchmark measures the release binary: run\n\n    \
             cargo build --release\n\nfirst (or point BENCH_BINARY at an eit-certd binary).",
            settings.binary.display()
        );
        return ExitCode::from(2);
    }
    match run(&settings) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn run(s: &Settings) -> Result<()> {
    let scratch = tempfile::Builder::new()
        .prefix("eit-certd-bench-")
        .tempdir_in(&s.scratch_parent)
        .context("cannot create the scratch directory")?;
    let dir = scratch.path();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let emulator = Emulator::start(&s.binary, &dir.join("emulator"))?;
    progress(&format!("emulator at {}", emulator.url));

    // One key per critical-path renewal (+1 for the cold-token one), one for the idle daemon's
    // installed set, one for the throughput CSR, two for start-to-ready (the expired set and
    // the spare).
    let key_count = s.renewals + 5;
    progress(&format!(
        "generating {key_count} RSA-{} keys on 2 threads...",
        s.key_bits
    ));
    let mut keys = pregenerate_keys(s.key_bits, key_count)?;
    let throughput_key = keys.pop().expect("counted above");
    let idle_key = keys.pop().expect("counted above");
    let expired_key = keys.pop().expect("counted above");
    let spare_key = keys.pop().expect("counted above");

    progress("critical path...");
    let renewer = build_renewer(&emulator.url, &dir.join("renew"))?;
    let critical = rt.block_on(critical_path(&renewer, keys))?;

    progress("cold renewals...");
    let cold = rt.block_on(cold_renewals(&renewer, s.key_bits, s.cold_runs))?;

    progress("shell pipeline...");
    let shell = shell_pipeline(&emulator, &dir.join("shell"), s.key_bits, s.shell_runs);

    progress("emulator throughput...");
    let subject = CertificateConfig::default().subject;
    let csr_pem = csr::build(&throughput_key, &subject)?;
    let throughput = rt.block_on(throughput(&emulator.url, &csr_pem, s.clients, s.throughput))?;

    progress("start to ready...");
    let starts = start_to_ready(
        s,
        &rt,
        &emulator.url,
        &dir.join("starts"),
        expired_key,
        spare_key,
    )?;

    progress("idle daemon...");
    let idle = idle_daemon(s, &rt, &emulator.url, &dir.join("idle"), idle_key)?;

    drop(emulator);
    print_report(s, &critical, &cold, &shell, &starts, &throughput, &idle);
    Ok(())
}

fn progress(what: &str) {
    eprintln!("bench: {what}");
}

// ---------------------------------------------------------------------------------------------
// Statistics

/// Nearest-rank percentile (`p` in 0..=100) of `samples`; zero for no samples.
fn percentile(samples: &[Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    let mut sorted = samples.to_vec();
    sorted.sort();
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn fmt_duration(d: Duration) -> String {
    let secs = d.as_secs_f64();
    if secs >= 1.0 {
        format!("{secs:.2} s")
    } else if secs >= 0.001 {
        format!("{:.2} ms", secs * 1e3)
    } else {
        format!("{:.1} µs", secs * 1e6)
    }
}

// ---------------------------------------------------------------------------------------------
// The emulator, as a child process

struct Emulator {
    child: Child,
    url: String,
    ca_pem: PathBuf,
    /// Held open so the emulator never writes into a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Emulator {
    fn start(binary: &Path, state_dir: &Path) -> Result<Emulator> {
        Emulator::start_with(binary, state_dir, &[])
    }

    fn start_with(binary: &Path, state_dir: &Path, extra: &[&str]) -> Result<Emulator> {
        let log_path = state_dir.with_extension("log");
        let log = File::create(&log_path)?;
        // From a copy of the binary: pages of one file mapped by two processes count in both
        // RSS figures, and the emulator, busy serving, would inflate the idle daemon's.
        let copy = state_dir.with_extension("bin");
        std::fs::copy(binary, &copy)
            .with_context(|| format!("cannot copy {} to {}", binary.display(), copy.display()))?;
        let binary = copy.as_path();
        let mut child = Command::new(binary)
            .arg("emulator")
            .arg("--state-dir")
            .arg(state_dir)
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("cannot start {}", binary.display()))?;
        let mut stdout = BufReader::new(child.stdout.take().expect("piped"));
        let mut line = String::new();
        stdout.read_line(&mut line)?;
        let url = line.trim().to_string();
        if !url.starts_with("http") {
            stop(&mut child);
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            bail!("the emulator did not print its URL (got {line:?}); its log:\n{log}");
        }
        Ok(Emulator {
            child,
            url,
            ca_pem: state_dir.join("ca.pem"),
            _stdout: stdout,
        })
    }
}

impl Drop for Emulator {
    fn drop(&mut self) {
        stop(&mut self.child);
    }
}

/// SIGTERM, up to 5 s to exit, then SIGKILL.
fn stop(child: &mut Child) {
    let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}

// ---------------------------------------------------------------------------------------------
// Keys and renewals through the library

/// `count` keys, generated on two threads before anything is timed.
fn pregenerate_keys(bits: u32, count: usize) -> Result<Vec<PrivateKey>> {
    const THREADS: usize = 2;
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                let n = count / THREADS + usize::from(t < count % THREADS);
                scope.spawn(move || (0..n).map(|_| PrivateKey::generate(bits)).collect())
            })
            .collect();
        let mut keys = Vec::with_capacity(count);
        for worker in workers {
            let batch: Result<Vec<PrivateKey>, _> = worker.join().expect("keygen thread");
            keys.extend(batch?);
        }
        Ok(keys)
    })
}

/// A renewer for the emulator, built the way `eit-certd renew` builds one.
fn build_renewer(url: &str, out: &Path) -> Result<Renewer> {
    std::fs::create_dir_all(out)?;
    let config = Config::for_endpoint(url, out);
    let client = Client::new(&config.metadata, url)?;
    let store = Store::new(out, config.output.keep.0, None)?;
    Ok(Renewer::new(config, client, store)?)
}

struct CriticalPath {
    /// The first renewal: also fetches the access token and opens the connection.
    cold_token: Duration,
    warm: Vec<Duration>,
    stages: Stages,
}

/// The renewal's own per-stage timings ([`Timings`]), warm renewals only.
#[derive(Default)]
struct Stages {
    /// Signing the CSR, done ahead of time (off the critical path).
    csr: Vec<Duration>,
    request: Vec<Duration>,
    validation: Vec<Duration>,
    install: Vec<Duration>,
}

/// `Renewer::renew_prepared` for each key, its CSR signed beforehand as the daemon's spare is.
async fn critical_path(renewer: &Renewer, keys: Vec<PrivateKey>) -> Result<CriticalPath> {
    let subject = &renewer.config().certificate.subject;
    let mut times = Vec::with_capacity(keys.len());
    let mut stages = Stages::default();
    for key in keys {
        let signing = Instant::now();
        let prepared = Prepared::new(key, subject)?;
        let csr = signing.elapsed();
        let started = Instant::now();
        let renewed = renewer.renew_prepared(prepared).await?;
        times.push(started.elapsed());
        // After the set is live, as the daemon does (after the hooks): the steady state keeps
        // `output.keep` generations.
        renewer.prune_after(&renewed.generation).await;
        let Timings {
            request,
            validation,
            install,
            ..
        } = renewed.timings;
        stages.csr.push(csr);
        stages.request.push(request);
        stages.validation.push(validation);
        stages.install.push(install);
    }
    // The first renewal's stages include the token fetch: kept out of the warm figures.
    for v in [
        &mut stages.csr,
        &mut stages.request,
        &mut stages.validation,
        &mut stages.install,
    ] {
        v.remove(0);
    }
    Ok(CriticalPath {
        cold_token: times.remove(0),
        warm: times,
        stages,
    })
}

struct Cold {
    total: Vec<Duration>,
    keygen: Vec<Duration>,
}

/// A renewal with `key`, as the daemon makes one with a key generated on the spot: the CSR,
/// then the round trip and the install, then the pruning.
async fn renew_with(renewer: &Renewer, key: PrivateKey) -> Result<()> {
    let prepared = Prepared::new(key, &renewer.config().certificate.subject)?;
    let renewed = renewer.renew_prepared(prepared).await?;
    renewer.prune_after(&renewed.generation).await;
    Ok(())
}

/// Key generation on the spot, then the renewal (token already cached).
async fn cold_renewals(renewer: &Renewer, bits: u32, runs: usize) -> Result<Cold> {
    let mut cold = Cold {
        total: Vec::with_capacity(runs),
        keygen: Vec::with_capacity(runs),
    };
    for _ in 0..runs {
        let started = Instant::now();
        let key = PrivateKey::generate_racing(bits).await?;
        cold.keygen.push(started.elapsed());
        renew_with(renewer, key).await?;
        cold.total.push(started.elapsed());
    }
    Ok(cold)
}

// ---------------------------------------------------------------------------------------------
// The documented shell way

struct Shell {
    times: Vec<Duration>,
    verify: String,
}

/// Runs the script `runs` times; a failure (e.g. a missing tool) is reported, not fatal.
fn shell_pipeline(emulator: &Emulator, dir: &Path, bits: u32, runs: usize) -> Result<Shell> {
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs {
        let out = dir.join(format!("run-{i}"));
        let started = Instant::now();
        let result = Command::new("sh")
            .arg(SHELL_SCRIPT)
            .arg(&emulator.url)
            .arg(&out)
            .env("RSA_BITS", bits.to_string())
            .stdin(Stdio::null())
            .output()
            .context("cannot run sh")?;
        times.push(started.elapsed());
        if !result.status.success() {
            bail!(
                "{SHELL_SCRIPT} failed ({}): {}",
                result.status,
                String::from_utf8_lossy(&result.stderr).trim()
            );
        }
    }
    let verify = openssl_verify(&emulator.ca_pem, &dir.join("run-0"))?;
    Ok(Shell { times, verify })
}

/// `openssl verify` of the script's certificate against the emulator's root.
fn openssl_verify(ca_pem: &Path, out: &Path) -> Result<String> {
    let result = Command::new("openssl")
        .arg("verify")
        .arg("-CAfile")
        .arg(ca_pem)
        .arg("-untrusted")
        .arg(out.join("chain.pem"))
        .arg(out.join("cert.pem"))
        .output()
        .context("cannot run openssl verify")?;
    let said = String::from_utf8_lossy(&result.stdout).trim().to_string()
        + String::from_utf8_lossy(&result.stderr).trim();
    if !result.status.success() {
        bail!("openssl verify refused the shell pipeline's certificate: {said}");
    }
    Ok(said.rsplit(": ").next().unwrap_or("OK").to_string())
}

// ---------------------------------------------------------------------------------------------
// Emulator throughput

struct Throughput {
    issued: u64,
    other: u64,
    elapsed: Duration,
}

async fn throughput(
    url: &str,
    csr_pem: &str,
    clients: usize,
    window: Duration,
) -> Result<Throughput> {
    let body = serde_json::to_vec(&serde_json::json!({ "csr": csr_pem }))?;
    let started = Instant::now();
    let deadline = started + window;
    let tasks: Vec<_> = (0..clients)
        .map(|_| tokio::spawn(post_certificates(url.to_string(), body.clone(), deadline)))
        .collect();
    let mut total = Throughput {
        issued: 0,
        other: 0,
        elapsed: Duration::ZERO,
    };
    for task in tasks {
        let (issued, other) = task.await??;
        total.issued += issued;
        total.other += other;
    }
    total.elapsed = started.elapsed();
    Ok(total)
}

/// One client: its own connection pool, one token, then certificate requests until `deadline`.
/// Returns (201s, anything else).
async fn post_certificates(url: String, body: Vec<u8>, deadline: Instant) -> Result<(u64, u64)> {
    let http = reqwest::Client::builder().no_proxy().build()?;
    let token: serde_json::Value = http
        .put(format!("{url}/identity/v1/token?version={API_VERSION}"))
        .header("Metadata-Flavor", "ibm")
        .body(r#"{"expires_in": 3600}"#)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let bearer = format!(
        "Bearer {}",
        token["access_token"].as_str().context("no access_token")?
    );
    let endpoint = format!("{url}/identity/v1/certificates?version={API_VERSION}");
    let (mut issued, mut other) = (0, 0);
    while Instant::now() < deadline {
        let response = http
            .post(&endpoint)
            .header("Authorization", &bearer)
            .header("Content-Type", "application/json")
            .body(body.clone())
            .send()
            .await?;
        let status = response.status();
        response.bytes().await?;
        if status == reqwest::StatusCode::CREATED {
            issued += 1;
        } else {
            other += 1;
        }
    }
    Ok((issued, other))
}

// ---------------------------------------------------------------------------------------------
// Start to ready

struct Starts {
    with_spare: Vec<Duration>,
    without_spare: Vec<Duration>,
    /// Starts with a spare whose log shows a key generation (should be none).
    spare_unused: usize,
}

/// `eit-certd run` over an expired set, spawn to READY=1, alternately with and without a spare.
/// Before each start the output directory is restored to the same expired set (without
/// `state.json`, whose last success would hold the renewal back by `certificate.min_interval`).
fn start_to_ready(
    s: &Settings,
    rt: &tokio::runtime::Runtime,
    url: &str,
    dir: &Path,
    expired_key: PrivateKey,
    spare_key: PrivateKey,
) -> Result<Starts> {
    std::fs::create_dir_all(dir)?;
    // An expired set: a two-second certificate from a second emulator, waited out.
    let short = Emulator::start_with(
        &s.binary,
        &dir.join("short-emulator"),
        &["--max-lifetime", "2s"],
    )?;
    let pristine = dir.join("pristine");
    rt.block_on(renew_with(
        &build_renewer(&short.url, &pristine)?,
        expired_key,
    ))?;
    drop(short);
    let _ = std::fs::remove_file(pristine.join("state.json"));
    let out = dir.join("out");
    let config_path = write_config(dir, url, s.key_bits, &out)?;
    let config = Config::load(&config_path)?;
    let spare = Prepared::new(spare_key, &config.certificate.subject)?;
    std::thread::sleep(Duration::from_secs(3));
    let socket_path = dir.join("notify.sock");
    let mut starts = Starts {
        with_spare: Vec::new(),
        without_spare: Vec::new(),
        spare_unused: 0,
    };
    for i in 0..s.starts * 2 {
        let with_spare = i % 2 == 0;
        let _ = std::fs::remove_dir_all(&out);
        let copied = Command::new("cp")
            .arg("-a")
            .arg(&pristine)
            .arg(&out)
            .status()?;
        if !copied.success() {
            bail!("cannot copy {} to {}", pristine.display(), out.display());
        }
        if with_spare {
            Spare::new(&out).save(&spare)?;
        }
        let _ = std::fs::remove_file(&socket_path);
        let socket = std::os::unix::net::UnixDatagram::bind(&socket_path)?;
        socket.set_read_timeout(Some(Duration::from_secs(120)))?;
        let log_path = dir.join(format!("daemon-{i}.log"));
        let started = Instant::now();
        let mut child = Command::new(&s.binary)
            .arg("--config")
            .arg(&config_path)
            .arg("run")
            .env("NOTIFY_SOCKET", &socket_path)
            .env("RUST_LOG", "eit_certd=debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(&log_path)?)
            .spawn()
            .with_context(|| format!("cannot start {} run", s.binary.display()))?;
        let mut buf = [0u8; 4096];
        let ready = loop {
            match socket.recv(&mut buf) {
                Ok(n)
                    if String::from_utf8_lossy(&buf[..n])
                        .lines()
                        .any(|l| l == "READY=1") =>
                {
                    break Ok(started.elapsed())
                }
                Ok(_) => continue,
                Err(e) => break Err(e),
            }
        };
        stop(&mut child);
        let elapsed = ready.with_context(|| {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            format!("no READY=1 from the daemon; its log:\n{log}")
        })?;
        if with_spare {
            let log = std::fs::read_to_string(&log_path).unwrap_or_default();
            if log.contains("generating a key") {
                starts.spare_unused += 1;
            }
            starts.with_spare.push(elapsed);
        } else {
            starts.without_spare.push(elapsed);
        }
    }
    Ok(starts)
}

// ---------------------------------------------------------------------------------------------
// The idle daemon

struct Idle {
    window: Duration,
    rss_kib: u64,
    hwm_kib: u64,
    /// From `/proc/PID/smaps_rollup` at the end of the window.
    memory: Rollup,
    threads: usize,
    voluntary: u64,
    nonvoluntary: u64,
    /// `current` moved while the daemon ran: it renewed, and the figures include that.
    renewed: bool,
}

fn idle_daemon(
    s: &Settings,
    rt: &tokio::runtime::Runtime,
    url: &str,
    dir: &Path,
    key: PrivateKey,
) -> Result<Idle> {
    let out = dir.join("out");
    // A valid one-hour set, installed before the daemon starts: it has nothing to do.
    rt.block_on(renew_with(&build_renewer(url, &out)?, key))?;
    // The daemon watches the config file's directory: nothing else is written there (its log
    // goes one level up), so no file event wakes it during the window.
    let config = write_config(dir, url, s.key_bits, &out)?;
    let log_path = dir.join("daemon.log");
    let mut child = Command::new(&s.binary)
        .arg("--config")
        .arg(&config)
        .arg("run")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(File::create(&log_path)?)
        .spawn()
        .with_context(|| format!("cannot start {} run", s.binary.display()))?;
    let before = current_target(&out);
    let observed = observe(&mut child, s.settle, s.idle);
    stop(&mut child);
    let renewed = current_target(&out) != before;
    let mut idle = observed.with_context(|| {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        format!("watching the idle daemon; its log:\n{log}")
    })?;
    idle.renewed = renewed;
    Ok(idle)
}

/// The daemon's config, `DIR/etc/config.toml`: the emulator at `url`, `bits`-bit keys, the
/// set in `out`, everything else at its default.
fn write_config(dir: &Path, url: &str, bits: u32, out: &Path) -> Result<PathBuf> {
    let etc = dir.join("etc");
    std::fs::create_dir_all(&etc)?;
    let path = etc.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[metadata]\nendpoint = {url:?}\n\n[certificate]\nkey_bits = {bits}\n\n[output]\ndir = {:?}\n",
            out.display().to_string()
        ),
    )?;
    Ok(path)
}

/// Where `current` points, to notice a renewal the daemon was not supposed to make.
fn current_target(out: &Path) -> Option<PathBuf> {
    std::fs::read_link(out.join("current")).ok()
}

fn observe(child: &mut Child, settle: Duration, window: Duration) -> Result<Idle> {
    let pid = child.id();
    std::thread::sleep(settle);
    if let Some(status) = child.try_wait()? {
        bail!("the daemon exited during start-up ({status})");
    }
    let start = ProcSample::take(pid)?;
    let started = Instant::now();
    std::thread::sleep(window);
    let end = ProcSample::take(pid)?;
    let elapsed = started.elapsed();
    let (voluntary, nonvoluntary) = end.switches_since(&start);
    Ok(Idle {
        window: elapsed,
        rss_kib: end.rss_kib,
        hwm_kib: end.hwm_kib,
        memory: Rollup::take(pid)?,
        threads: end.switches.len(),
        voluntary,
        nonvoluntary,
        renewed: false,
    })
}

/// Where a process's resident memory is, from `/proc/PID/smaps_rollup` (KiB): what it costs
/// the machine (PSS shares library pages among their users; private dirty is its own heap,
/// stacks and written data, the part no other process could share).
struct Rollup {
    rss: u64,
    pss: u64,
    shared_clean: u64,
    private_clean: u64,
    private_dirty: u64,
    anonymous: u64,
}

impl Rollup {
    fn take(pid: u32) -> Result<Rollup> {
        let path = format!("/proc/{pid}/smaps_rollup");
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {path}"))?;
        let field =
            |name| status_field(&text, name).with_context(|| format!("no {name} in {path}"));
        Ok(Rollup {
            rss: field("Rss")?,
            pss: field("Pss")?,
            shared_clean: field("Shared_Clean")?,
            private_clean: field("Private_Clean")?,
            private_dirty: field("Private_Dirty")?,
            anonymous: field("Anonymous")?,
        })
    }
}

/// What /proc says about a process at one moment.
struct ProcSample {
    rss_kib: u64,
    hwm_kib: u64,
    /// Per thread id: (voluntary, nonvoluntary) context switches so far.
    switches: HashMap<String, (u64, u64)>,
}

impl ProcSample {
    fn take(pid: u32) -> Result<ProcSample> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
            .with_context(|| format!("cannot read /proc/{pid}/status"))?;
        let mut switches = HashMap::new();
        for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
            let task = task?;
            // A thread may exit between listing and reading; it just isn't counted.
            let Ok(text) = std::fs::read_to_string(task.path().join("status")) else {
                continue;
            };
            let counts = (
                status_field(&text, "voluntary_ctxt_switches").unwrap_or(0),
                status_field(&text, "nonvoluntary_ctxt_switches").unwrap_or(0),
            );
            switches.insert(task.file_name().to_string_lossy().into_owned(), counts);
        }
        Ok(ProcSample {
            rss_kib: status_field(&status, "VmRSS").context("no VmRSS")?,
            hwm_kib: status_field(&status, "VmHWM").context("no VmHWM")?,
            switches,
        })
    }

    /// Switches of every thread alive now since `earlier` (a thread started in between counts
    /// from zero), summed: (voluntary, nonvoluntary).
    fn switches_since(&self, earlier: &ProcSample) -> (u64, u64) {
        self.switches
            .iter()
            .fold((0, 0), |(vol, nonvol), (tid, &(v, n))| {
                let (v0, n0) = earlier.switches.get(tid).copied().unwrap_or((0, 0));
                (vol + v.saturating_sub(v0), nonvol + n.saturating_sub(n0))
            })
    }
}

/// The number after `name:` in a /proc status file (`VmRSS:   5120 kB` → 5120).
fn status_field(text: &str, name: &str) -> Option<u64> {
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|rest| rest.split_whitespace().next()?.parse().ok())
}

// ---------------------------------------------------------------------------------------------
// The report

fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, |n| n.get());
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| {
            l.strip_prefix("model name")?
                .split_once(':')
                .map(|(_, m)| m.trim())
        })
        .unwrap_or("unknown CPU");
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load: Vec<&str> = load.split_whitespace().take(3).collect();
    format!(
        "machine: nproc {cpus}, {model}, Linux {}, load average {}",
        kernel.trim(),
        load.join(" ")
    )
}

fn row(label: &str, samples: &[Duration]) {
    println!(
        "{label:<44} {:>5} {:>11} {:>11}",
        samples.len(),
        fmt_duration(percentile(samples, 50.0)),
        fmt_duration(percentile(samples, 95.0))
    );
}

fn single(label: &str, value: &str) {
    println!("{label:<44} {:>5} {value:>11}", 1);
}

fn print_report(
    s: &Settings,
    critical: &CriticalPath,
    cold: &Cold,
    shell: &Result<Shell>,
    starts: &Starts,
    throughput: &Throughput,
    idle: &Idle,
) {
    let bits = s.key_bits;
    let stages = &critical.stages;
    println!();
    println!("eit-certd benchmark ({})", s.binary.display());
    println!("{}", machine());
    println!("RSA-{bits} keys; emulator and clients on loopback, plain http");
    println!();
    println!(
        "{:<44} {:>5} {:>11} {:>11}",
        "measurement", "n", "p50", "p95"
    );
    println!("{}", "-".repeat(74));
    row("renewal, critical path (key ready)", &critical.warm);
    single(
        "  first renewal (fetches the token)",
        &fmt_duration(critical.cold_token),
    );
    println!("  where the time goes (the renewal's own stage timings):");
    row("    CSR sign (ahead of time, not on the path)", &stages.csr);
    row("    token (cached) + certificate request", &stages.request);
    row("    validation", &stages.validation);
    row("    install (write, fsync, swap)", &stages.install);
    row(
        &format!("cold renewal (RSA-{bits} keygen + renewal)"),
        &cold.total,
    );
    row("  of which key generation", &cold.keygen);
    let critical_p50 = percentile(&critical.warm, 50.0);
    row(
        "start to READY=1, expired set, spare ready",
        &starts.with_spare,
    );
    row(
        "start to READY=1, expired set, no spare",
        &starts.without_spare,
    );
    if starts.spare_unused > 0 {
        println!(
            "  ({} starts with a spare generated a key anyway: see their logs)",
            starts.spare_unused
        );
    }
    let ratio = |a: Duration, b: Duration| a.as_secs_f64() / b.as_secs_f64().max(f64::MIN_POSITIVE);
    let spare_p50 = percentile(&starts.with_spare, 50.0);
    println!(
        "{:<44} {:>5} {:>10.0}x",
        "no-spare p50 / spare p50 (start to ready)",
        "",
        ratio(percentile(&starts.without_spare, 50.0), spare_p50)
    );
    match shell {
        Ok(shell) => {
            row("shell pipeline (docs: curl/openssl/awk/jq)", &shell.times);
            println!("  openssl verify of its certificate: {}", shell.verify);
            let shell_p50 = percentile(&shell.times, 50.0);
            println!(
                "{:<44} {:>5} {:>10.0}x",
                "shell p50 / critical-path p50",
                "",
                ratio(shell_p50, critical_p50)
            );
            println!(
                "{:<44} {:>5} {:>10.0}x",
                "shell p50 / spare start-to-ready p50",
                "",
                ratio(shell_p50, spare_p50)
            );
        }
        Err(e) => println!("shell pipeline: not measured: {e:#}"),
    }
    println!();
    let secs = throughput.elapsed.as_secs_f64();
    println!(
        "emulator throughput: {:.1} certificates/s ({} clients, {} issued (201) in {secs:.1} s, {} other answers)",
        throughput.issued as f64 / secs,
        s.clients,
        throughput.issued,
        throughput.other
    );
    let minutes = idle.window.as_secs_f64() / 60.0;
    println!(
        "idle daemon over {:.0} s: RSS {:.1} MiB (peak {:.1} MiB), {} threads, \
         {} context switches ({} voluntary, {} involuntary), {:.1} wakeups/min",
        idle.window.as_secs_f64(),
        idle.rss_kib as f64 / 1024.0,
        idle.hwm_kib as f64 / 1024.0,
        idle.threads,
        idle.voluntary + idle.nonvoluntary,
        idle.voluntary,
        idle.nonvoluntary,
        idle.voluntary as f64 / minutes
    );
    let m = &idle.memory;
    let mib = |kib: u64| kib as f64 / 1024.0;
    println!(
        "  smaps_rollup: RSS {:.1} MiB = shared clean {:.1} + private clean {:.1} + private dirty {:.1}; \
         PSS {:.1} MiB; anonymous {:.1} MiB",
        mib(m.rss),
        mib(m.shared_clean),
        mib(m.private_clean),
        mib(m.private_dirty),
        mib(m.pss),
        mib(m.anonymous)
    );
    if idle.renewed {
        println!("  (the daemon renewed while it was observed: these are not idle figures)");
    }
}
