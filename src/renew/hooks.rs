//! Runs the `[[hooks]]` commands after a new set is installed: in order, without a shell, stdin
//! closed, in their own process group, with a clean environment (PATH, the hook's own `env`, and
//! the `EIT_*` variables — never the access token or key material), output captured (bounded)
//! into the result, and the whole group killed when the hook's timeout passes.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use time::OffsetDateTime;
use tokio::io::AsyncReadExt;

use crate::config::HookConfig;
use crate::pki::validate::LeafInfo;
use crate::store;
use crate::store::state::{HookResult, State, SWANCTL_LINKS};
use crate::text::rfc3339;

/// Output kept per stream; a chatty hook cannot grow the daemon.
const OUTPUT_LIMIT: usize = 16 * 1024;
/// After SIGTERM to a hook that overstayed its timeout, SIGKILL follows this much later.
const KILL_GRACE: Duration = Duration::from_secs(1);
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What a hook is told about the new set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookEnv {
    vars: BTreeMap<String, String>,
    serial: String,
}

impl HookEnv {
    /// `generation_dir` is the resolved directory (not `current`), so a hook that runs late
    /// still sees the set it was run for.
    pub fn new(generation_dir: &Path, leaf: &LeafInfo, previous_serial: Option<&str>) -> HookEnv {
        let file = |name: &str| generation_dir.join(name).to_string_lossy().into_owned();
        let vars = BTreeMap::from([
            (
                "EIT_CERT_DIR".to_string(),
                generation_dir.to_string_lossy().into_owned(),
            ),
            ("EIT_KEY_FILE".to_string(), file(store::KEY_FILE)),
            ("EIT_CERT_FILE".to_string(), file(store::CERT_FILE)),
            ("EIT_CHAIN_FILE".to_string(), file(store::CHAIN_FILE)),
            (
                "EIT_FULLCHAIN_FILE".to_string(),
                file(store::FULLCHAIN_FILE),
            ),
            ("EIT_COMBINED_FILE".to_string(), file(store::COMBINED_FILE)),
            ("EIT_NOT_AFTER".to_string(), rfc3339(leaf.not_after)),
            ("EIT_SERIAL".to_string(), leaf.serial_hex.clone()),
            (
                "EIT_FINGERPRINT_SHA256".to_string(),
                leaf.fingerprint_sha256.clone(),
            ),
            (
                "EIT_PREVIOUS_SERIAL".to_string(),
                previous_serial.unwrap_or_default().to_string(),
            ),
        ]);
        HookEnv {
            vars,
            serial: leaf.serial_hex.clone(),
        }
    }

    pub fn vars(&self) -> &BTreeMap<String, String> {
        &self.vars
    }

    pub fn serial(&self) -> &str {
        &self.serial
    }
}

/// Runs one hook and reports how it went; never fails itself.
pub async fn run_one(hook: &HookConfig, env: &HookEnv) -> HookResult {
    let at = OffsetDateTime::now_utc();
    let started = Instant::now();
    let (ok, exit_code, detail) = match execute(hook, env).await {
        Ok(Finished {
            code,
            output,
            timed_out: false,
        }) => (code == Some(0), code, output),
        Ok(Finished {
            output,
            timed_out: true,
            ..
        }) => (
            false,
            None,
            format!(
                "killed after its timeout of {}; {output}",
                humantime::format_duration(hook.timeout.0)
            ),
        ),
        Err(e) => (false, None, e.to_string()),
    };
    let result = HookResult {
        name: hook.name.clone(),
        at,
        ok,
        exit_code,
        duration_ms: started.elapsed().as_millis() as u64,
        serial: env.serial.clone(),
        detail: detail.trim().to_string(),
    };
    if result.ok {
        tracing::info!(hook = %hook.name, duration_ms = result.duration_ms, output = %result.detail, "hook succeeded");
    } else {
        tracing::warn!(hook = %hook.name, exit_code = result.exit_code, duration_ms = result.duration_ms, output = %result.detail, "hook failed");
    }
    result
}

/// Runs the hooks `state` owes for the set `env` describes, in their owed order (the config's),
/// recording each in `state` as it finishes: a failed hook with `retry = true` stays owed.
/// `starting` is told each hook before it runs, `finished` each result once recorded (the
/// daemon logs the one, saves state.json and reports the other there). The one hook loop, for
/// the hooks of a fresh install and for hooks owed from before.
///
/// The swanctl links are owed beside the hooks but are not one: the caller makes them first
/// (see [`crate::store::state::owe_links`]). A name no hook has any more is dropped.
pub async fn run_owed(
    hooks: &[HookConfig],
    env: &HookEnv,
    state: &mut State,
    mut starting: impl FnMut(&HookConfig),
    mut finished: impl FnMut(&State, &HookResult),
) -> Vec<HookResult> {
    let owed = state
        .hooks_owed
        .as_ref()
        .map(|o| o.names.clone())
        .unwrap_or_default();
    let mut results = Vec::with_capacity(owed.len());
    for name in owed.iter().filter(|n| *n != SWANCTL_LINKS) {
        let Some(hook) = hooks.iter().find(|h| &h.name == name) else {
            state.hook_done(name, false);
            continue;
        };
        starting(hook);
        let result = run_one(hook, env).await;
        state.hook_done(&hook.name, !result.ok && hook.retry);
        state.record_hook(result.clone());
        finished(state, &result);
        results.push(result);
    }
    results
}

/// This program's path, for hooks that ask it something (`eit-certd can-read`): the one that
/// installed the set, not whichever `eit-certd` comes first on PATH. After a package upgrade
/// replaced the file, the kernel reports it as "PATH (deleted)"; the new file at PATH is the
/// same program, one version on.
fn own_binary() -> Option<&'static Path> {
    static BIN: std::sync::OnceLock<Option<PathBuf>> = std::sync::OnceLock::new();
    BIN.get_or_init(|| {
        let exe = std::env::current_exe().ok()?;
        let text = exe.to_str()?;
        Some(PathBuf::from(
            text.strip_suffix(" (deleted)").unwrap_or(text),
        ))
    })
    .as_deref()
}

/// Why a hook did not run to its end.
#[derive(Debug, thiserror::Error)]
enum HookError {
    #[error("cannot start {}: {cause}", program.display())]
    Start {
        program: PathBuf,
        cause: std::io::Error,
    },
    #[error("{cause}")]
    Wait { cause: std::io::Error },
}

struct Finished {
    code: Option<i32>,
    output: String,
    timed_out: bool,
}

async fn execute(hook: &HookConfig, env: &HookEnv) -> Result<Finished, HookError> {
    let argv = &hook.command.0;
    let program = PathBuf::from(&argv[0]);
    let mut command = tokio::process::Command::new(&program);
    command
        .args(&argv[1..])
        .env_clear()
        .env(
            "PATH",
            std::env::var("PATH").unwrap_or_else(|_| DEFAULT_PATH.to_string()),
        )
        .envs(&hook.env)
        .envs(own_binary().map(|bin| ("EIT_CERTD_BIN", bin)))
        .envs(env.vars())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = command.spawn().map_err(|cause| HookError::Start {
        program: program.clone(),
        cause,
    })?;
    let pgid = child.id().map(|id| Pid::from_raw(id as i32));
    // If this future is dropped (the daemon stops while the hook runs), the whole group goes:
    // `kill_on_drop` alone would reach the hook but not what it started.
    let mut guard = GroupGuard { pgid, armed: true };
    // Read while the hook runs: a hook that writes more than a pipe holds would otherwise
    // block on its output and never finish.
    let (out_buf, err_buf) = (Captured::default(), Captured::default());
    let stdout = tokio::spawn(read_bounded(child.stdout.take(), out_buf.clone()));
    let stderr = tokio::spawn(read_bounded(child.stderr.take(), err_buf.clone()));
    // A reader whose pipe a process outside the hook's group still holds (it called setsid)
    // would read forever, with its pipe open: aborted when this returns, on every path.
    let _abort = AbortOnDrop([stdout.abort_handle(), stderr.abort_handle()]);
    let readers = async {
        let _ = tokio::join!(stdout, stderr);
    };
    tokio::pin!(readers);

    let deadline = tokio::time::Instant::now() + hook.timeout.0;
    let status = tokio::select! {
        status = child.wait() => Some(status),
        _ = tokio::time::sleep_until(deadline) => None,
    };
    let timed_out = status.is_none();
    let code = match status {
        Some(status) => status.map_err(|cause| HookError::Wait { cause })?.code(),
        None => {
            signal_group(pgid, Signal::SIGTERM);
            if tokio::time::timeout(KILL_GRACE, child.wait())
                .await
                .is_err()
            {
                signal_group(pgid, Signal::SIGKILL);
                let _ = child.wait().await;
            }
            None
        }
    };
    // A hook that leaves a child holding its stdout must not hold us: take what has arrived
    // within a moment. Whatever is left of the group after a timeout is killed: nothing a
    // hook started may outlive it then.
    if timed_out {
        signal_group(pgid, Signal::SIGKILL);
    }
    guard.armed = false;
    if tokio::time::timeout(Duration::from_secs(1), &mut readers)
        .await
        .is_err()
    {
        // What is left of the group dies at once, and with it its ends of the pipes; a pipe
        // still open after that is held by a process that left the group (setsid).
        signal_group(pgid, Signal::SIGKILL);
        let _ = tokio::time::timeout(Duration::from_millis(200), &mut readers).await;
    }
    let output = join_output(&out_buf.text(), &err_buf.text());
    Ok(Finished {
        code,
        output,
        timed_out,
    })
}

/// Kills a hook's process group when dropped while armed.
struct GroupGuard {
    pgid: Option<Pid>,
    armed: bool,
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if self.armed {
            signal_group(self.pgid, Signal::SIGKILL);
        }
    }
}

fn signal_group(pgid: Option<Pid>, signal: Signal) {
    if let Some(pgid) = pgid {
        let _ = killpg(pgid, signal);
    }
}

/// What a hook wrote to one stream, at most [`OUTPUT_LIMIT`] bytes; shared with its reader so
/// that what arrived is kept when the reader is aborted.
#[derive(Clone, Default)]
struct Captured(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl Captured {
    fn text(&self) -> String {
        let kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        String::from_utf8_lossy(&kept).into_owned()
    }
}

/// Aborts the tasks when dropped.
struct AbortOnDrop<const N: usize>([tokio::task::AbortHandle; N]);

impl<const N: usize> Drop for AbortOnDrop<N> {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}

async fn read_bounded<R: tokio::io::AsyncRead + Unpin>(stream: Option<R>, into: Captured) {
    let Some(mut stream) = stream else {
        return;
    };
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let mut kept = into.0.lock().unwrap_or_else(|e| e.into_inner());
                let room = OUTPUT_LIMIT.saturating_sub(kept.len());
                kept.extend_from_slice(&buf[..n.min(room)]);
            }
        }
    }
}

fn join_output(stdout: &str, stderr: &str) -> String {
    match (stdout.trim(), stderr.trim()) {
        ("", "") => String::new(),
        (o, "") => o.to_string(),
        ("", e) => e.to_string(),
        (o, e) => format!("{o}\n{e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{HookCommand, HookTimeout};
    use time::macros::datetime;

    fn leaf() -> LeafInfo {
        LeafInfo {
            not_before: datetime!(2026-01-01 00:00 UTC),
            not_after: datetime!(2026-01-01 01:00 UTC),
            serial_hex: "0A1B".into(),
            fingerprint_sha256: "ff00".into(),
            subject: String::new(),
            issuer: String::new(),
            public_key_der: vec![],
        }
    }

    fn hook(script: &str, timeout_ms: u64) -> HookConfig {
        HookConfig {
            name: "t".into(),
            command: HookCommand(vec!["/bin/sh".into(), "-c".into(), script.into()]),
            timeout: HookTimeout(Duration::from_millis(timeout_ms)),
            retry: false,
            env: BTreeMap::from([("EXTRA".to_string(), "x".to_string())]),
        }
    }

    fn env() -> HookEnv {
        HookEnv::new(Path::new("/o/generations/g1"), &leaf(), Some("09"))
    }

    #[tokio::test]
    async fn hook_sees_exactly_the_documented_environment() {
        let r = run_one(&hook("env | sort", 5000), &env()).await;
        assert!(r.ok, "{r:?}");
        let lines: Vec<&str> = r.detail.lines().collect();
        assert!(lines.contains(&"EIT_SERIAL=0A1B"));
        assert!(lines.contains(&"EIT_PREVIOUS_SERIAL=09"));
        assert!(lines.contains(&"EIT_KEY_FILE=/o/generations/g1/key.pem"));
        assert!(lines.contains(&"EIT_NOT_AFTER=2026-01-01T01:00:00Z"));
        assert!(lines.contains(&"EXTRA=x"));
        // The hooks' way back to this program (`eit-certd can-read`).
        let bin = std::env::current_exe().unwrap();
        assert!(lines.contains(&format!("EIT_CERTD_BIN={}", bin.display()).as_str()));
        // Nothing else leaks in from the daemon's environment (sh adds PWD, SHLVL, _).
        for line in &lines {
            let name = line.split('=').next().unwrap();
            assert!(
                name.starts_with("EIT_") || ["PATH", "EXTRA", "PWD", "SHLVL", "_"].contains(&name),
                "unexpected variable {line}"
            );
        }
    }

    #[tokio::test]
    async fn failure_is_reported_with_code_and_stderr() {
        let r = run_one(&hook("echo broken >&2; exit 3", 5000), &env()).await;
        assert!(!r.ok);
        assert_eq!(r.exit_code, Some(3));
        assert_eq!(r.detail, "broken");
    }

    #[tokio::test]
    async fn a_hook_that_hangs_is_killed_with_its_children() {
        let tmp = tempfile::tempdir().unwrap();
        let pidfile = tmp.path().join("child.pid");
        let script = format!(
            "sleep 300 & echo $! > {}; trap '' TERM; wait",
            pidfile.display()
        );
        let started = Instant::now();
        let r = run_one(&hook(&script, 300), &env()).await;
        assert!(!r.ok);
        assert_eq!(r.exit_code, None);
        assert!(
            r.detail.contains("killed after its timeout"),
            "{}",
            r.detail
        );
        assert!(started.elapsed() < Duration::from_secs(10));
        let child: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        // The grandchild got SIGKILL with the group; give the kernel a moment to reap.
        let gone = (0..100).any(|_| {
            std::thread::sleep(Duration::from_millis(20));
            let stat = std::fs::read_to_string(format!("/proc/{child}/stat")).unwrap_or_default();
            stat.is_empty() || stat.split(' ').nth(2) == Some("Z")
        });
        assert!(gone, "grandchild {child} survived the hook's timeout");
    }

    #[tokio::test]
    async fn missing_program_is_a_failed_result_not_a_panic() {
        let mut h = hook("", 1000);
        h.command = HookCommand(vec!["/nonexistent/hook".into()]);
        let r = run_one(&h, &env()).await;
        assert!(!r.ok);
        assert!(r.detail.contains("/nonexistent/hook"), "{}", r.detail);
    }

    #[tokio::test]
    async fn output_is_bounded() {
        let r = run_one(
            &hook("head -c 1000000 /dev/zero | tr '\\0' a", 5000),
            &env(),
        )
        .await;
        assert!(r.ok);
        assert!(r.detail.len() <= OUTPUT_LIMIT);
    }

    #[tokio::test]
    async fn later_hooks_run_after_a_failure() {
        let mut rs = Vec::new();
        for h in [hook("exit 1", 2000), hook("exit 0", 2000)] {
            rs.push(run_one(&h, &env()).await);
        }
        assert_eq!(rs.iter().map(|r| r.ok).collect::<Vec<_>>(), [false, true]);
    }
}
