//! The shipped hook scripts (`hooks/*`), run for real: each test gives a script a cleared
//! environment (only `PATH` plus what the test sets, the way eit-certd runs hooks), stdin closed,
//! and its own temporary directory, and then checks what the script *did* — which processes got
//! SIGHUP, which marker files a fake restart or remount command wrote, with which arguments —
//! not only its exit code. Every test owns its files and processes, so they run in parallel.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant};

/// How long a test waits for something that should happen (a trapped SIGHUP to be written down).
const DEADLINE: Duration = Duration::from_secs(10);

fn hook(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("hooks")
        .join(name)
}

/// The eit-certd binary the hooks call for `eit-certd can-read` (the daemon sets
/// `EIT_CERTD_BIN` to itself for every hook).
fn certd_bin() -> &'static str {
    crate::common::bin()
}

/// Runs `hooks/<name>` directly (so its shebang and executable bit count) with only `PATH`,
/// `EIT_CERTD_BIN` and `vars` in its environment and stdin closed.
fn run_hook<K: AsRef<OsStr>, V: AsRef<OsStr>>(name: &str, vars: &[(K, V)]) -> Output {
    let mut cmd = Command::new(hook(name));
    cmd.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("EIT_CERTD_BIN", certd_bin())
        .stdin(Stdio::null());
    for (k, v) in vars {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run hooks/{name}: {e}"))
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn code(out: &Output) -> i32 {
    out.status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {out:?}"))
}

/// Writes a small shell script that a hook will run as `sh <path>` (run through `sh`, never
/// executed directly, so that a parallel test's fork cannot make it "text file busy").
fn write_script(path: &Path, body: &str) -> String {
    fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    let s = path.to_str().unwrap();
    assert!(
        !s.contains(char::is_whitespace),
        "the temporary directory {s:?} must not contain whitespace (commands are split on it)"
    );
    format!("sh {s}")
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < DEADLINE, "timed out waiting for {what}");
        sleep(Duration::from_millis(20));
    }
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// stunnel-reload
// ---------------------------------------------------------------------------------------------

/// A `sh` standing in for stunnel: it writes "HUP" to `hup` for every SIGHUP it gets, followed
/// by `verdict` (what stunnel logs about the reload: "Configuration successful" by default),
/// and "USR1" for every SIGUSR1 (see [`Trapped::settled`]), and otherwise sleeps; killed when
/// dropped. Its last argument is its "configuration file" `conf`, which names `hup` as its
/// `output =` log, as stunnel's would. `program` is what is exec'd (a link named `stunnel`
/// gives it that comm).
struct Trapped {
    child: Child,
    hup: PathBuf,
    conf: PathBuf,
}

impl Trapped {
    fn start(dir: &Path, name: &str, program: &Path) -> Trapped {
        Trapped::start_with(dir, name, program, "LOG5[main]: Configuration successful")
    }

    fn start_with(dir: &Path, name: &str, program: &Path, verdict: &str) -> Trapped {
        let hup = dir.join(format!("{name}.hup"));
        let ready = dir.join(format!("{name}.ready"));
        let conf = dir.join(format!("{name}.conf"));
        fs::write(&conf, format!("; stand-in\noutput = {}\n", hup.display())).unwrap();
        let mut command = Command::new(program);
        command
            .arg("-c")
            .arg(r#"trap 'echo HUP >> "$F"; [ -z "$V" ] || echo "$V" >> "$F"' HUP; trap 'echo USR1 >> "$F"' USR1; : > "$R"; while :; do sleep 0.1; done"#)
            .arg(&conf)
            .env("F", &hup)
            .env("R", &ready)
            .env("V", verdict)
            .stdin(Stdio::null());
        // A shell cannot trap a signal that was ignored when it started (POSIX), and a test
        // run under `nohup` ignores SIGHUP: give the child the default disposition.
        // SAFETY: only `signal(2)`, which is async-signal-safe, runs between fork and exec.
        unsafe {
            command.pre_exec(|| {
                nix::sys::signal::signal(
                    nix::sys::signal::Signal::SIGHUP,
                    nix::sys::signal::SigHandler::SigDfl,
                )
                .map(|_| ())
                .map_err(std::io::Error::from)
            });
        }
        let child = command.spawn().unwrap();
        // Only signal it once the trap is in place (before that, SIGHUP would kill it).
        wait_until(&format!("{name} to set its trap"), || ready.exists());
        Trapped { child, hup, conf }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn hups(&self) -> usize {
        read(&self.hup).lines().filter(|l| *l == "HUP").count()
    }

    /// Returns once every signal sent to it before this call has been handled: it sends a
    /// SIGUSR1 and waits for its line. The shell runs pending traps in signal-number order,
    /// HUP (1) before USR1 (10), so a SIGHUP that was on its way is in the file by then. This
    /// is what "it got no SIGHUP" is asserted after, instead of a pause.
    fn settled(&self) {
        let before = read(&self.hup).lines().filter(|l| *l == "USR1").count();
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.pid() as i32),
            nix::sys::signal::Signal::SIGUSR1,
        )
        .unwrap();
        wait_until("a stand-in to handle the signals sent to it", || {
            read(&self.hup).lines().filter(|l| *l == "USR1").count() > before
        });
    }

    fn alive(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }
}

impl Drop for Trapped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A pid that no process has any more (a child that has exited and been reaped).
fn dead_pid() -> u32 {
    let mut c = Command::new("sh").arg("-c").arg("exit 0").spawn().unwrap();
    let pid = c.id();
    c.wait().unwrap();
    pid
}

fn sh() -> PathBuf {
    PathBuf::from("/bin/sh")
}

#[test]
fn stunnel_reload_signals_the_pid_files_processes_and_reports_stale_ones() {
    let tmp = tempfile::tempdir().unwrap();
    let pids = tmp.path().join("pids");
    fs::create_dir(&pids).unwrap();
    let mut one = Trapped::start(tmp.path(), "one", &sh());
    let mut two = Trapped::start(tmp.path(), "two", &sh());
    // Running, but named by no pid file: must not be signalled.
    let mut bystander = Trapped::start(tmp.path(), "bystander", &sh());
    let stale = dead_pid();
    fs::write(pids.join("one.pid"), format!("{}\n", one.pid())).unwrap();
    fs::write(pids.join("two.pid"), format!("{}\n", two.pid())).unwrap();
    fs::write(pids.join("stale.pid"), format!("{stale}\n")).unwrap();
    // The same process twice (as /run and /var/run can be): signalled once, said so.
    fs::write(pids.join("one-again.pid"), format!("{}\n", one.pid())).unwrap();

    let glob = format!("{}/*.pid", pids.display());
    let out = run_hook(
        "stunnel-reload",
        &[
            ("STUNNEL_PID_GLOB", glob.as_str()),
            ("STUNNEL_SKIP_COMM_CHECK", "1"),
        ],
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "stderr: {err}");

    wait_until("both stunnels to record SIGHUP", || {
        one.hups() >= 1 && two.hups() >= 1
    });
    bystander.settled();
    assert_eq!(
        bystander.hups(),
        0,
        "a process named by no pid file got SIGHUP"
    );
    assert!(one.alive() && two.alive() && bystander.alive());

    assert!(
        err.contains("stale.pid") && err.contains(&format!("no process {stale} is running")),
        "the stale pid file is not reported: {err}"
    );
    assert!(
        err.contains(&format!("pid {} already handled", one.pid())),
        "the duplicate pid file is not recognised: {err}"
    );
    // Each reload is confirmed by the stand-in's own log, named in its configuration.
    assert!(
        err.contains(&format!(
            "stunnel pid {} ({}/two.pid) reloaded {}",
            two.pid(),
            pids.display(),
            two.conf.display()
        )) && err.contains("'Configuration successful'"),
        "{err}"
    );
}

#[test]
fn stunnel_reload_only_signals_processes_that_are_stunnel() {
    let tmp = tempfile::tempdir().unwrap();
    // Exec'ing sh through a link named "stunnel" makes /proc/PID/comm say "stunnel".
    let stunnel = tmp.path().join("stunnel");
    symlink("/bin/sh", &stunnel).unwrap();
    let real = Trapped::start(tmp.path(), "real", &stunnel);
    let impostor = Trapped::start(tmp.path(), "impostor", &sh());
    fs::write(tmp.path().join("real.pid"), real.pid().to_string()).unwrap();
    fs::write(tmp.path().join("impostor.pid"), impostor.pid().to_string()).unwrap();

    let glob = format!("{}/*.pid", tmp.path().display());
    let out = run_hook("stunnel-reload", &[("STUNNEL_PID_GLOB", glob.as_str())]);
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "stderr: {err}");
    wait_until("the stunnel to record SIGHUP", || real.hups() >= 1);
    impostor.settled();
    assert_eq!(
        impostor.hups(),
        0,
        "a process that is not stunnel got SIGHUP"
    );
    assert!(
        err.contains(&format!("process {} is not stunnel", impostor.pid())),
        "{err}"
    );
}

#[test]
fn stunnel_reload_fails_when_nothing_is_running_unless_optional() {
    let tmp = tempfile::tempdir().unwrap();
    let nothing = format!("{}/no-such-*.pid", tmp.path().display());

    let out = run_hook("stunnel-reload", &[("STUNNEL_PID_GLOB", nothing.as_str())]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains(&format!("no pid file matches '{nothing}'")),
        "{}",
        stderr(&out)
    );

    let out = run_hook(
        "stunnel-reload",
        &[
            ("STUNNEL_PID_GLOB", nothing.as_str()),
            ("STUNNEL_OPTIONAL", "1"),
        ],
    );
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert!(stderr(&out).contains("nothing to reload (STUNNEL_OPTIONAL=1)"));

    // Only stale pid files (and ones that would hit init or our own process group): nothing
    // was signalled, which is a failure too.
    fs::write(tmp.path().join("stale.pid"), dead_pid().to_string()).unwrap();
    fs::write(tmp.path().join("zero.pid"), "0\n").unwrap();
    fs::write(tmp.path().join("init.pid"), "1\n").unwrap();
    fs::write(tmp.path().join("junk.pid"), "12ab\n").unwrap();
    let stale = format!("{}/*.pid", tmp.path().display());
    let out = run_hook(
        "stunnel-reload",
        &[
            ("STUNNEL_PID_GLOB", stale.as_str()),
            ("STUNNEL_SKIP_COMM_CHECK", "1"),
        ],
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(err.contains("none of the 4 pid file(s)"), "{err}");
    assert!(err.contains("process id '0' is not a daemon's"), "{err}");
    assert!(err.contains("process id '1' is not a daemon's"), "{err}");
    assert!(err.contains("does not hold a process id ('12ab')"), "{err}");
}

/// A stand-in program `name` in `dir/bin`, to put first on PATH: it logs each call's arguments
/// to `dir/<name>.log` and runs `body` (sh) with them. Returns (that log, the PATH).
fn fake_program(dir: &Path, name: &str, body: &str) -> (PathBuf, String) {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let log = dir.join(format!("{name}.log"));
    let program = bin.join(name);
    fs::write(
        &program,
        format!("#!/bin/sh\necho \"$*\" >> {}\n{body}\n", log.display()),
    )
    .unwrap();
    fs::set_permissions(&program, fs::Permissions::from_mode(0o755)).unwrap();
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    (log, path)
}

fn fake_systemctl(dir: &Path, body: &str) -> (PathBuf, String) {
    fake_program(dir, "systemctl", body)
}

#[test]
fn stunnel_reload_goes_through_systemd_when_a_unit_is_named_and_confirms_the_reload() {
    let tmp = tempfile::tempdir().unwrap();
    // The unit's main process, and one that takes the reload badly.
    let main = Trapped::start(tmp.path(), "main", &sh());
    let broken = Trapped::start_with(
        tmp.path(),
        "broken",
        &sh(),
        "LOG3[main]: Service [nfs]: Failed to initialize TLS context\nLOG3[main]: Configuration failed\nLOG3[main]: Failed to reload the configuration file",
    );
    // systemd as far as the hook asks: MainPID and CanReload per unit; `reload` and `kill`
    // send the main process SIGHUP as systemd would (stunnel@nfs can reload, bad@x cannot).
    let (log, path) = fake_systemctl(
        tmp.path(),
        &format!(
            "case \"$*\" in\n\
             *'MainPID --value stunnel@nfs.service') echo {main} ;;\n\
             *'MainPID --value bad@x.service') echo {broken} ;;\n\
             *'MainPID --value stopped.service') echo 0 ;;\n\
             *'CanReload --value stunnel@nfs.service') echo yes ;;\n\
             *'CanReload --value'*) echo no ;;\n\
             'reload stunnel@nfs.service') kill -HUP {main} ;;\n\
             'kill --kill-who=main -s HUP bad@x.service') kill -HUP {broken} ;;\n\
             *) exit 1 ;;\n\
             esac",
            main = main.pid(),
            broken = broken.pid()
        ),
    );
    // A live pid file too: with a unit named, the script must not signal it itself.
    let running = Trapped::start(tmp.path(), "running", &sh());
    fs::write(tmp.path().join("s.pid"), running.pid().to_string()).unwrap();
    let glob = format!("{}/*.pid", tmp.path().display());

    let mut cmd = Command::new(hook("stunnel-reload"));
    cmd.env_clear()
        .env("PATH", &path)
        .env("EIT_CERTD_BIN", certd_bin())
        .env("STUNNEL_PID_GLOB", &glob)
        .env("STUNNEL_SKIP_COMM_CHECK", "1")
        .stdin(Stdio::null());
    let out = cmd
        .env("STUNNEL_SYSTEMD_UNIT", "stunnel@nfs.service")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert_eq!(main.hups(), 1);
    assert!(
        read(&log).contains("reload stunnel@nfs.service\n"),
        "{}",
        read(&log)
    );
    assert!(
        err.contains(&format!(
            "stunnel@nfs.service (stunnel pid {}, systemctl reload stunnel@nfs.service) reloaded {}",
            main.pid(),
            main.conf.display()
        )) && err.contains("'Configuration successful'"),
        "{err}"
    );

    // No ExecReload: SIGHUP through `systemctl kill`; stunnel's verdict is a failure.
    let out = cmd
        .env("STUNNEL_SYSTEMD_UNIT", "bad@x.service")
        .output()
        .unwrap();
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert_eq!(broken.hups(), 1);
    assert!(
        err.contains("its reload FAILED")
            && err.contains("Failed to initialize TLS context")
            && err.contains("keeps presenting the old certificate"),
        "{err}"
    );

    let out = cmd
        .env("STUNNEL_SYSTEMD_UNIT", "stopped.service")
        .output()
        .unwrap();
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("stopped.service has no main process"),
        "{}",
        stderr(&out)
    );

    running.settled();
    assert_eq!(
        running.hups(),
        0,
        "signalled a pid despite STUNNEL_SYSTEMD_UNIT"
    );
}

#[test]
fn stunnel_reload_reads_the_verdict_from_the_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let one = Trapped::start(tmp.path(), "one", &sh());
    // No `output =`: stunnel logs to syslog or stderr, i.e. the journal, under its pid.
    fs::write(&one.conf, "; logs to the journal\n").unwrap();
    fs::write(tmp.path().join("one.pid"), one.pid().to_string()).unwrap();
    // journalctl as far as the hook asks: the cursor of the last entry, then what the pid
    // logged after it (the stand-in's log).
    let (calls, path) = fake_program(
        tmp.path(),
        "journalctl",
        &format!(
            "case \"$*\" in\n\
             '-q -n 1 -o cat --show-cursor') echo 'an older entry'; echo '-- cursor: s=ab;i=7' ;;\n\
             '-q -o cat --after-cursor=s=ab;i=7 _PID={pid}') cat {log} ;;\n\
             *) exit 1 ;;\n\
             esac",
            pid = one.pid(),
            log = one.hup.display()
        ),
    );
    let glob = format!("{}/*.pid", tmp.path().display());
    let out = run_hook(
        "stunnel-reload",
        &[
            ("PATH", path.as_str()),
            ("STUNNEL_PID_GLOB", glob.as_str()),
            ("STUNNEL_SKIP_COMM_CHECK", "1"),
            ("STUNNEL_LOG", "journal"),
        ],
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}\njournalctl calls:\n{}", read(&calls));
    assert_eq!(one.hups(), 1);
    assert!(err.contains("'Configuration successful'"), "{err}");
    assert!(
        read(&calls).contains(&format!("--after-cursor=s=ab;i=7 _PID={}", one.pid())),
        "{}",
        read(&calls)
    );
}

#[test]
fn stunnel_reload_fails_when_stunnel_gives_no_verdict_or_its_configuration_is_unknown() {
    let tmp = tempfile::tempdir().unwrap();
    // Takes SIGHUP, logs nothing about it.
    let mute = Trapped::start_with(tmp.path(), "mute", &sh(), "");
    fs::write(tmp.path().join("mute.pid"), mute.pid().to_string()).unwrap();
    let glob = format!("{}/*.pid", tmp.path().display());
    let vars = [
        ("STUNNEL_PID_GLOB", glob.as_str()),
        ("STUNNEL_SKIP_COMM_CHECK", "1"),
        ("STUNNEL_TIMEOUT", "1"),
    ];
    let out = run_hook("stunnel-reload", &vars);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert_eq!(mute.hups(), 1);
    assert!(
        err.contains("no verdict on the reload in") && err.contains("within 1s"),
        "{err}"
    );

    // Its configuration names a log nobody can find: nothing to confirm with, no signal.
    fs::write(&mute.conf, "debug = warning\noutput = /nonexistent/x.log\n").unwrap();
    let out = run_hook("stunnel-reload", &vars);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(err.contains("sets debug = warning"), "{err}");
    // A configuration file that is not there (STUNNEL_CONF wins over the command line).
    let missing = tmp.path().join("missing.conf");
    let mut with_conf = vars.to_vec();
    with_conf.push(("STUNNEL_CONF", missing.to_str().unwrap()));
    let out = run_hook("stunnel-reload", &with_conf);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains(&format!(
            "cannot read its configuration file {}",
            missing.display()
        )),
        "{err}"
    );
    mute.settled();
    assert_eq!(mute.hups(), 1, "signalled without a way to confirm");

    for (var, bad) in [("STUNNEL_LOG", "syslog"), ("STUNNEL_TIMEOUT", "0")] {
        let out = run_hook("stunnel-reload", &[(var, bad)]);
        assert_eq!(code(&out), 2, "{var}={bad}: {}", stderr(&out));
        assert!(stderr(&out).contains(var), "{}", stderr(&out));
    }
}

// ---------------------------------------------------------------------------------------------
// tlshd-restart
// ---------------------------------------------------------------------------------------------

/// A process killed when dropped (a stand-in daemon's main process).
struct Running(Child);

impl Running {
    fn start(user: Option<(u32, u32)>) -> Running {
        let mut cmd = Command::new("sleep");
        cmd.arg("600").stdin(Stdio::null());
        if let Some((uid, gid)) = user {
            cmd.uid(uid).gid(gid);
        }
        Running(cmd.spawn().unwrap())
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An output directory laid out as the daemon leaves it: `generations/<id>/` with the five
/// files, `current` pointing at it; and tlshd as systemd shows it to the hook: a stand-in
/// `systemctl` whose `show` prints `state` (MainPID, ExecMainStartTimestampMonotonic,
/// ActiveState), and a restart command that records the call and makes `new` the main process.
struct OutputDir {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    dir: PathBuf,
    generation: PathBuf,
    marker: PathBuf,
    restart_cmd: String,
    state: PathBuf,
    path: String,
    old: Running,
    new: Running,
}

fn output_dir() -> OutputDir {
    output_dir_as(None)
}

/// [`output_dir`] with tlshd's running process (before the restart) started as `uid`.
fn output_dir_as(user: Option<(u32, u32)>) -> OutputDir {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().to_path_buf();
    fs::write(root.join("ca.pem"), "PEM\n").unwrap();
    let dir = root.join("eit-certd");
    let generation = dir.join("generations").join("000007-20261123T190511Z-3A9F");
    fs::create_dir_all(&generation).unwrap();
    for f in ["key", "cert", "chain", "fullchain", "combined"] {
        fs::write(generation.join(format!("{f}.pem")), "PEM\n").unwrap();
    }
    symlink(
        "generations/000007-20261123T190511Z-3A9F",
        dir.join("current"),
    )
    .unwrap();
    let (old, new) = (Running::start(user), Running::start(None));
    let state = root.join("tlshd.state");
    fs::write(
        &state,
        format!(
            "MainPID={}\nExecMainStartTimestampMonotonic=1000\nActiveState=active\n",
            old.pid()
        ),
    )
    .unwrap();
    let (_, path) = fake_systemctl(
        &root,
        &format!(
            "case \"$1 $*\" in\nshow*' tlshd.service') cat {} ;;\n*) exit 1 ;;\nesac",
            state.display()
        ),
    );
    let marker = root.join("restarted");
    let restart_cmd = write_script(
        &root.join("restart.sh"),
        &format!(
            "echo \"restart $*\" >> {}\n\
             printf 'MainPID={}\\nExecMainStartTimestampMonotonic=2000\\nActiveState=active\\n' > {}",
            marker.display(),
            new.pid(),
            state.display()
        ),
    );
    OutputDir {
        _tmp: tmp,
        root,
        dir,
        generation,
        marker,
        restart_cmd,
        state,
        path,
        old,
        new,
    }
}

impl OutputDir {
    fn run(&self, conf: &Path) -> Output {
        self.run_with(conf, &[])
    }

    fn run_with(&self, conf: &Path, extra: &[(&str, &str)]) -> Output {
        let mut vars = vec![
            ("PATH", OsStr::new(&self.path)),
            ("EIT_CERT_DIR", self.generation.as_os_str()),
            ("EIT_SERIAL", OsStr::new("3A9F")),
            ("TLSHD_CONF", conf.as_os_str()),
            ("TLSHD_RESTART_CMD", OsStr::new(&self.restart_cmd)),
        ];
        vars.extend(extra.iter().map(|(k, v)| (*k, OsStr::new(*v))));
        run_hook("tlshd-restart", &vars)
    }

    fn conf(&self, body: &str) -> PathBuf {
        let conf = self.root.join("tlshd.conf");
        fs::write(&conf, body).unwrap();
        conf
    }
}

#[test]
fn tlshd_restart_restarts_when_tlshd_uses_our_current_files() {
    let o = output_dir();
    let conf = o.conf(&format!(
        "[debug]\nloglevel=0\n\n[authenticate.client]\nx509.truststore= {d}/../ca.pem\n\
         x509.certificate= {d}/current/fullchain.pem\nx509.private_key = {d}/current/key.pem\n",
        d = o.dir.display()
    ));
    let out = o.run(&conf);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(
        read(&o.marker),
        "restart \n",
        "the restart command did not run exactly once"
    );
    assert!(
        stderr(&out).contains(&format!(
            "tlshd.service is active as pid {} (was {}), which can read its 3 file(s)",
            o.new.pid(),
            o.old.pid()
        )),
        "{}",
        stderr(&out)
    );
}

#[test]
fn tlshd_restart_fails_when_no_new_tlshd_process_appears() {
    let o = output_dir();
    let conf = o.conf(&format!(
        "[authenticate.client]\nx509.certificate={}/current/fullchain.pem\n",
        o.dir.display()
    ));
    // The command exits 0, but tlshd is still the old process (a restart that did not happen).
    let noop = write_script(&o.root.join("noop.sh"), "exit 0");
    let out = o.run_with(
        &conf,
        &[("TLSHD_RESTART_CMD", noop.as_str()), ("TLSHD_TIMEOUT", "1")],
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains("within 1s tlshd.service did not become active with a new process")
            && err.contains(&format!("before: pid {}, active", o.old.pid())),
        "{err}"
    );
    // Stopped after the restart: not active either.
    fs::write(&o.state, "MainPID=0\nActiveState=failed\n").unwrap();
    let out = o.run_with(
        &conf,
        &[("TLSHD_RESTART_CMD", noop.as_str()), ("TLSHD_TIMEOUT", "1")],
    );
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("now: pid 0, failed"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn tlshd_restart_does_not_restart_a_tlshd_that_cannot_read_its_files() {
    if !nix::unistd::geteuid().is_root() {
        skipped!(
            "hook_scripts::tlshd unreadable: needs root, to run tlshd's stand-in as another user"
        );
        return;
    }
    let Some(user) = ["stunnel4", "nobody"]
        .into_iter()
        .find_map(|n| nix::unistd::User::from_name(n).ok().flatten())
    else {
        skipped!("hook_scripts::tlshd unreadable: no unprivileged user (stunnel4, nobody)");
        return;
    };
    let o = output_dir_as(Some((user.uid.as_raw(), user.gid.as_raw())));
    fs::set_permissions(&o.root, fs::Permissions::from_mode(0o755)).unwrap();
    let key = o.generation.join("key.pem");
    fs::set_permissions(&key, fs::Permissions::from_mode(0o600)).unwrap();
    let conf = o.conf(&format!(
        "[authenticate.client]\nx509.certificate={d}/current/fullchain.pem\nx509.private_key={d}/current/key.pem\n",
        d = o.dir.display()
    ));
    let out = o.run(&conf);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains(&format!(
            "tlshd (pid {}) cannot read a file it needs",
            o.old.pid()
        )) && err.contains("key.pem")
            && err.contains("not restarting it"),
        "{err}"
    );
    assert!(
        !o.marker.exists(),
        "restarted a tlshd that cannot read its key"
    );
}

#[test]
fn tlshd_restart_sees_our_files_through_a_symbolic_link() {
    let o = output_dir();
    // /srv/certs -> /var/lib/eit-certd, say: the same files under another name.
    let alias = o.root.join("alias");
    symlink(&o.dir, &alias).unwrap();
    let conf = o.conf(&format!(
        "[authenticate.client]\nx509.private_key={}/current/key.pem\n",
        alias.display()
    ));
    let out = o.run(&conf);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    assert_eq!(read(&o.marker), "restart \n");
}

#[test]
fn tlshd_restart_leaves_tlshd_alone_when_it_uses_other_files() {
    let o = output_dir();
    // Our paths only in comments, and a sibling directory whose name starts like ours.
    let conf = o.conf(&format!(
        "[authenticate.client]\n#x509.certificate={d}/current/fullchain.pem\n\
         # x509.private_key={d}/current/key.pem\nx509.certificate={d}-old/current/cert.pem\n\
         x509.private_key=/etc/pki/tls/private/other.key\n",
        d = o.dir.display()
    ));
    fs::create_dir_all(o.root.join("eit-certd-old/current")).unwrap();
    let out = o.run(&conf);
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(
        !o.marker.exists(),
        "restarted tlshd although it uses other files"
    );
    assert!(
        err.contains(&format!("points into {}", o.dir.display())) && err.contains("not restarting"),
        "stderr does not say why: {err}"
    );
}

#[test]
fn tlshd_restart_with_no_configuration_file_has_nothing_to_do() {
    let o = output_dir();
    let missing = o.root.join("no-such-tlshd.conf");
    let out = o.run(&missing);
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(!o.marker.exists());
    assert!(
        err.contains(&format!("{} does not exist", missing.display())),
        "{err}"
    );
}

#[test]
fn tlshd_restart_reports_a_failed_restart() {
    let o = output_dir();
    let conf = o.conf(&format!(
        "[authenticate.client]\nx509.certificate={}/current/fullchain.pem\n",
        o.dir.display()
    ));
    let failing = write_script(&o.root.join("fail.sh"), "exit 5");
    let out = o.run_with(&conf, &[("TLSHD_RESTART_CMD", failing.as_str())]);
    assert_eq!(code(&out), 1);
    assert!(
        stderr(&out).contains("restarting tlshd failed") && stderr(&out).contains("exited 5"),
        "{}",
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// nfs-remount
// ---------------------------------------------------------------------------------------------

/// A mounts table with every kind of line the hook must tell apart. Fields as the kernel
/// writes them in /proc/self/mounts (spaces in mount points as \040, backslashes as \134).
const MOUNTS: &str = "\
sysfs /sys sysfs rw,nosuid,nodev,noexec,relatime 0 0
10.240.64.5:/share-mtls /mnt/mtls nfs4 rw,relatime,vers=4.1,rsize=1048576,hard,proto=tcp,timeo=600,retrans=2,sec=sys,xprtsec=mtls,clientaddr=10.240.64.9,local_lock=none,addr=10.240.64.5 0 0
127.0.0.1:/share-stunnel /mnt/stunnel nfs4 rw,relatime,vers=4.1,hard,proto=tcp,port=20049,timeo=600,retrans=2,sec=sys,clientaddr=127.0.0.1,local_lock=none,addr=127.0.0.1 0 0
10.240.64.6:/plain /mnt/plain nfs4 rw,relatime,vers=4.1,hard,proto=tcp,sec=sys,addr=10.240.64.6 0 0
10.240.64.7:/server-auth-only /mnt/tls-only nfs4 rw,relatime,vers=4.1,hard,proto=tcp,sec=sys,xprtsec=tls,addr=10.240.64.7 0 0
127.0.0.1:/loopback-no-port /mnt/loopback nfs rw,relatime,vers=3,addr=127.0.0.1 0 0
/dev/vda1 / ext4 rw,relatime,discard,errors=remount-ro 0 0
/dev/vdb /mnt/data\\040disk ext4 rw,relatime 0 0
10.240.64.8:/share-space /mnt/team\\040share\\134x nfs4 rw,relatime,vers=4.2,hard,proto=tcp,sec=sys,xprtsec=mtls,addr=10.240.64.8 0 0
";

/// The mount points of the TLS mounts above, in order, unescaped.
const TLS_MOUNTS: [&str; 3] = ["/mnt/mtls", "/mnt/stunnel", r"/mnt/team share\x"];

struct Remount {
    _tmp: tempfile::TempDir,
    mounts: PathBuf,
    log: PathBuf,
    action: String,
}

fn remount_setup() -> Remount {
    let tmp = tempfile::tempdir().unwrap();
    let mounts = tmp.path().join("mounts");
    fs::write(&mounts, MOUNTS).unwrap();
    let log = tmp.path().join("remounted");
    // One line per call: the argument count, then each argument in brackets.
    let action = write_script(
        &tmp.path().join("action.sh"),
        &format!(
            "{{ printf '%s' \"$#\"; for a; do printf ' [%s]' \"$a\"; done; echo; }} >> {}",
            log.display()
        ),
    );
    Remount {
        _tmp: tmp,
        mounts,
        log,
        action,
    }
}

impl Remount {
    fn run(&self, extra: &[(&str, &str)]) -> Output {
        let mut vars = vec![
            ("EIT_MOUNTS_FILE", self.mounts.to_str().unwrap()),
            ("NFS_REMOUNT_ACTION", self.action.as_str()),
        ];
        vars.extend_from_slice(extra);
        run_hook("nfs-remount", &vars)
    }
}

#[test]
fn nfs_remount_dry_run_lists_the_tls_mounts_and_runs_nothing() {
    let r = remount_setup();
    let out = r.run(&[]);
    let (so, err) = (stdout(&out), stderr(&out));
    assert_eq!(code(&out), 0, "{err}");
    let lines: Vec<&str> = so.lines().collect();
    assert_eq!(lines.len(), 3, "expected one line per TLS mount: {so}");
    for (line, mp) in lines.iter().zip(TLS_MOUNTS) {
        assert!(
            line.starts_with(&format!("would run: {} '{mp}'", r.action)),
            "{line:?} does not show the action for {mp:?}"
        );
    }
    assert!(lines[0].contains("xprtsec=mtls"));
    assert!(lines[1].contains("local stunnel, port=20049"));
    for other in ["/mnt/plain", "/mnt/tls-only", "/mnt/loopback", "/mnt/data"] {
        assert!(!so.contains(other), "{other} is listed: {so}");
    }
    assert!(!r.log.exists(), "the dry run ran the action");
    assert!(err.contains("EIT_HOOK_DRY_RUN=0"), "{err}");
}

#[test]
fn nfs_remount_runs_the_action_once_per_tls_mount_with_the_unescaped_mount_point() {
    let r = remount_setup();
    let out = r.run(&[("EIT_HOOK_DRY_RUN", "0")]);
    assert_eq!(code(&out), 0, "{}", stderr(&out));
    let expected: String = TLS_MOUNTS.iter().map(|mp| format!("1 [{mp}]\n")).collect();
    assert_eq!(read(&r.log), expected);
    assert_eq!(stdout(&out).lines().count(), 3);
    assert!(stdout(&out).lines().all(|l| l.starts_with("ran: ")));
}

#[test]
fn nfs_remount_reports_failures_and_still_handles_the_other_mounts() {
    let r = remount_setup();
    // Fails for the stunnel mount only, after recording the call.
    let action = write_script(
        &r.log.with_file_name("flaky.sh"),
        &format!(
            "echo \"$1\" >> {}\n[ \"$1\" != /mnt/stunnel ]",
            r.log.display()
        ),
    );
    let out = r.run(&[
        ("EIT_HOOK_DRY_RUN", "0"),
        ("NFS_REMOUNT_ACTION", action.as_str()),
    ]);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert_eq!(read(&r.log).lines().collect::<Vec<_>>(), TLS_MOUNTS);
    assert!(err.contains("'/mnt/stunnel' failed (exit 1)"), "{err}");
    assert!(err.contains("1 of 3 remount(s) failed"), "{err}");
}

#[test]
fn nfs_remount_refuses_unclear_settings_without_acting() {
    let r = remount_setup();
    let out = r.run(&[("EIT_HOOK_DRY_RUN", "no")]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("EIT_HOOK_DRY_RUN must be 0"));
    let out = r.run(&[("EIT_HOOK_DRY_RUN", "0"), ("NFS_REMOUNT_ACTION", "  ")]);
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("NFS_REMOUNT_ACTION is empty"));
    assert!(!r.log.exists());

    let missing = r.mounts.with_file_name("no-such-mounts");
    let out = run_hook(
        "nfs-remount",
        &[("EIT_MOUNTS_FILE", missing.to_str().unwrap())],
    );
    assert_eq!(code(&out), 1);
    assert!(stderr(&out).contains("cannot read the mounts table"));
}

#[test]
fn nfs_remount_with_no_tls_mounts_says_so() {
    let r = remount_setup();
    fs::write(
        &r.mounts,
        "/dev/vda1 / ext4 rw 0 0\n10.0.0.1:/x /mnt/x nfs4 rw,addr=10.0.0.1 0 0\n",
    )
    .unwrap();
    let out = r.run(&[("EIT_HOOK_DRY_RUN", "0")]);
    assert_eq!(code(&out), 0);
    assert_eq!(stdout(&out), "");
    assert!(stderr(&out).contains("nothing to remount"));
    assert!(!r.log.exists());
}

/// nfs-remount in unit mode, against a stand-in `systemctl` that behaves like systemd with a
/// oneshot unit: `start --no-block` marks a new run (activating, a later
/// InactiveExitTimestampMonotonic) and returns at once; the run (this very script, as the unit
/// runs it: EIT_HOOK_DRY_RUN=0) goes on in the background and ends inactive or failed, with
/// its Result and exit status.
struct UnitMode {
    r: Remount,
    state: PathBuf,
    calls: PathBuf,
    path: String,
}

/// `flaky`: the unit's action fails for /mnt/stunnel (after logging the call).
fn unit_mode(flaky: bool) -> UnitMode {
    let r = remount_setup();
    let dir = r.mounts.parent().unwrap().to_path_buf();
    let action = if flaky {
        write_script(
            &dir.join("flaky.sh"),
            &format!(
                "echo \"1 [$1]\" >> {}\n[ \"$1\" != /mnt/stunnel ]",
                r.log.display()
            ),
        )
    } else {
        r.action.clone()
    };
    let state = dir.join("unit.state");
    fs::write(
        &state,
        "LoadState=loaded\nActiveState=inactive\nResult=success\nExecMainStatus=0\nInactiveExitTimestampMonotonic=100\n",
    )
    .unwrap();
    let body = format!(
        r#"S={state}
put() {{ printf 'LoadState=loaded\nActiveState=%s\nResult=%s\nExecMainStatus=%s\nInactiveExitTimestampMonotonic=%s\n' "$@" > "$S.tmp" && mv "$S.tmp" "$S"; }}
case "$1 $2 $3" in
show*) cat "$S" ;;
'start --no-block eit-certd-remount.service')
	n=$(( $(sed -n 's/^InactiveExitTimestampMonotonic=//p' "$S") + 1 ))
	put activating success 0 "$n"
	(
		if env -i PATH="$PATH" EIT_HOOK_DRY_RUN=0 EIT_MOUNTS_FILE={mounts} NFS_REMOUNT_ACTION="{action}" {hook} >> {dir}/unit.log 2>&1; then
			put inactive success 0 "$n"
		else
			put failed exit-code "$?" "$n"
		fi
	) </dev/null >/dev/null 2>&1 &
	;;
*) exit 1 ;;
esac"#,
        state = state.display(),
        mounts = r.mounts.display(),
        hook = hook("nfs-remount").display(),
        dir = dir.display(),
    );
    let (calls, path) = fake_systemctl(&dir, &body);
    UnitMode {
        r,
        state,
        calls,
        path,
    }
}

impl UnitMode {
    fn run(&self) -> Output {
        run_hook(
            "nfs-remount",
            &[
                ("PATH", self.path.as_str()),
                ("NFS_REMOUNT_UNIT", "eit-certd-remount.service"),
                ("NFS_REMOUNT_TIMEOUT", "10"),
            ],
        )
    }
}

#[test]
fn nfs_remount_in_unit_mode_starts_the_unit_and_waits_for_its_run_to_succeed() {
    let u = unit_mode(false);
    let out = u.run();
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}");
    assert!(
        read(&u.calls).contains("start --no-block eit-certd-remount.service\n"),
        "{}",
        read(&u.calls)
    );
    // The remount ran, in the unit (not in the hook), once per TLS mount.
    let expected: String = TLS_MOUNTS.iter().map(|mp| format!("1 [{mp}]\n")).collect();
    assert_eq!(read(&u.r.log), expected);
    assert!(
        stdout(&out).is_empty(),
        "the hook itself remounted: {}",
        stdout(&out)
    );
    assert!(
        err.contains("eit-certd-remount.service ran and succeeded"),
        "{err}"
    );
    assert!(read(&u.state).contains("InactiveExitTimestampMonotonic=101\n"));
}

#[test]
fn nfs_remount_in_unit_mode_fails_with_the_units_result() {
    let u = unit_mode(true);
    let out = u.run();
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert_eq!(read(&u.r.log).lines().count(), 3, "{}", read(&u.r.log));
    assert!(
        err.contains("eit-certd-remount.service failed (Result=exit-code, ExecMainStatus=1)")
            && err.contains("journalctl -u eit-certd-remount.service"),
        "{err}"
    );

    // Not installed: says how to install it, starts nothing.
    fs::write(&u.state, "LoadState=not-found\nActiveState=inactive\n").unwrap();
    let before = read(&u.calls);
    let out = u.run();
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains("eit-certd-remount.service is not-found")
            && err.contains("examples/eit-certd-remount.service"),
        "{err}"
    );
    assert!(!read(&u.calls)[before.len()..].contains("start"));

    // A run that never finishes: bounded.
    fs::write(
        &u.state,
        "LoadState=loaded\nActiveState=activating\nInactiveExitTimestampMonotonic=7\n",
    )
    .unwrap();
    let out = run_hook(
        "nfs-remount",
        &[
            ("PATH", u.path.as_str()),
            ("NFS_REMOUNT_UNIT", "eit-certd-remount.service"),
            ("NFS_REMOUNT_TIMEOUT", "1"),
        ],
    );
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains("the run that was under way did not finish within 1s"),
        "{err}"
    );
}

/// examples/eit-certd-remount.service is what unit mode starts: a plain oneshot (a unit with
/// RemainAfterExit would never run again), acting (EIT_HOOK_DRY_RUN=0, overridable from the
/// optional remount.env), running the installed hook, and without the sandboxing that keeps
/// the daemon from mounting (its own mount namespace, capability limits); not enabled at boot.
#[test]
fn the_remount_unit_is_an_unsandboxed_oneshot_that_runs_the_hook() {
    let unit = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/eit-certd-remount.service"),
    )
    .unwrap();
    let settings: Vec<&str> = unit
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#') && !l.starts_with(';'))
        .collect();
    for wanted in [
        "[Service]",
        "Type=oneshot",
        "Environment=EIT_HOOK_DRY_RUN=0",
        "EnvironmentFile=-/etc/eit-certd/remount.env",
        "ExecStart=/usr/lib/eit-certd/hooks/nfs-remount",
    ] {
        assert!(settings.contains(&wanted), "no {wanted:?} in\n{unit}");
    }
    for line in &settings {
        let key = line.split('=').next().unwrap();
        assert!(
            !(key.starts_with("Protect")
                || key.starts_with("Private")
                || key.starts_with("Restrict")
                || [
                    "CapabilityBoundingSet",
                    "NoNewPrivileges",
                    "SystemCallFilter",
                    "User",
                    "DynamicUser",
                    "RemainAfterExit",
                    "MountFlags"
                ]
                .contains(&key)),
            "{line:?} would keep the remount from working (or from running again)"
        );
        assert_ne!(*line, "[Install]", "the unit must not be enabled at boot");
    }
}

// ---------------------------------------------------------------------------------------------
// All hooks
// ---------------------------------------------------------------------------------------------

/// The hooks that need an `EIT_*` variable refuse to guess without it. Only tlshd-restart
/// needs one (EIT_CERT_DIR, to find the output directory); stunnel-reload and nfs-remount need
/// none, which the tests above show by running them with no EIT_* variable at all.
#[test]
fn hooks_fail_clearly_without_the_variables_they_need() {
    let o = output_dir();
    let conf = o.conf(&format!(
        "[authenticate.client]\nx509.certificate={}/current/fullchain.pem\n",
        o.dir.display()
    ));
    let cmd = OsStr::new(&o.restart_cmd);
    for cert_dir in [None, Some(OsStr::new(""))] {
        let mut vars = vec![("TLSHD_CONF", conf.as_os_str()), ("TLSHD_RESTART_CMD", cmd)];
        if let Some(d) = cert_dir {
            vars.push(("EIT_CERT_DIR", d));
        }
        let out = run_hook("tlshd-restart", &vars);
        assert_eq!(code(&out), 2, "EIT_CERT_DIR={cert_dir:?}");
        assert!(
            stderr(&out).contains("EIT_CERT_DIR is not set"),
            "{}",
            stderr(&out)
        );
    }
    // Not a generation directory: the output directory cannot be derived from it.
    let out = run_hook(
        "tlshd-restart",
        &[
            ("EIT_CERT_DIR", o.dir.join("current").as_os_str()),
            ("TLSHD_CONF", conf.as_os_str()),
            ("TLSHD_RESTART_CMD", cmd),
        ],
    );
    assert_eq!(code(&out), 2);
    assert!(stderr(&out).contains("is not a generation directory"));
    assert!(
        !o.marker.exists(),
        "restarted tlshd without knowing our files"
    );
}

fn hook_scripts() -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(Path::new(env!("CARGO_MANIFEST_DIR")).join("hooks"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension() != Some(OsStr::new("md")))
        .collect();
    v.sort();
    v
}

#[test]
fn hooks_are_executable_posix_sh_with_a_header() {
    let scripts = hook_scripts();
    let names: Vec<_> = scripts.iter().map(|p| p.file_name().unwrap()).collect();
    assert_eq!(
        names,
        [
            "nfs-remount",
            "stunnel-reload",
            "swanctl-reload",
            "tlshd-restart"
        ]
    );
    for p in &scripts {
        let text = fs::read_to_string(p).unwrap();
        let mode = fs::metadata(p).unwrap().permissions().mode();
        assert_eq!(mode & 0o111, 0o111, "{} is not executable", p.display());
        assert!(text.starts_with("#!/bin/sh\n"), "{}", p.display());
        assert!(text.contains("\nset -eu\n"), "{}: no set -eu", p.display());
        for section in ["# Reads", "# Exit codes:"] {
            assert!(
                text.contains(section),
                "{}: header lacks {section:?}",
                p.display()
            );
        }
    }
}

#[test]
fn hooks_pass_shellcheck() {
    let found = Command::new("shellcheck")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        skipped!(
            "hook_scripts::shellcheck: shellcheck is not on PATH (apt-get install shellcheck)"
        );
        return;
    }
    let out = Command::new("shellcheck")
        .args(hook_scripts())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "shellcheck:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
}

// ---------------------------------------------------------------------------------------------
// stunnel-reload against a real stunnel running examples/stunnel.conf
// ---------------------------------------------------------------------------------------------

fn on_path(program: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(program).is_file()))
}

/// Runs `openssl` in `dir` with `args` split on spaces.
fn openssl(dir: &Path, args: &str) {
    let out = Command::new("openssl")
        .args(args.split(' '))
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl {args}: {}", stderr(&out));
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Connects to stunnel's local port, asks the `openssl s_server -www` behind it for its status
/// page and returns it (the page shows the client certificate the server received).
fn through_stunnel(port: u16) -> String {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return String::new();
    };
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let _ = s.write_all(b"GET / HTTP/1.0\r\n\r\n");
    let mut page = Vec::new();
    let _ = s.read_to_end(&mut page);
    String::from_utf8_lossy(&page).into_owned()
}

/// Kills a daemonised stunnel (by its pid file) and an s_server child when the test ends.
struct Daemons {
    pid_file: PathBuf,
    server: Option<Child>,
}

impl Drop for Daemons {
    fn drop(&mut self) {
        if let Ok(pid) = read(&self.pid_file).trim().parse::<i32>() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        if let Some(s) = &mut self.server {
            let _ = s.kill();
            let _ = s.wait();
        }
    }
}

/// `setpriv` arguments that give a program the capability bounding set of the shipped unit
/// (examples/eit-certd.service's `CapabilityBoundingSet=`), which the daemon's hooks inherit:
/// root without CAP_DAC_OVERRIDE or CAP_DAC_READ_SEARCH, i.e. unable to read another user's
/// 0640 file. None without setpriv (util-linux).
fn unit_bounding_set() -> Option<Vec<String>> {
    if !on_path("setpriv") {
        return None;
    }
    let unit = fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/eit-certd.service"),
    )
    .unwrap();
    let caps = unit
        .lines()
        .find_map(|l| l.strip_prefix("CapabilityBoundingSet="))
        .expect("the unit sets CapabilityBoundingSet");
    let mut set = String::from("-all");
    for cap in caps.split_whitespace() {
        set.push_str(&format!(
            ",+{}",
            cap.trim_start_matches("CAP_").to_lowercase()
        ));
    }
    Some(vec!["--bounding-set".into(), set, "--".into()])
}

/// [`run_hook`] with the shipped unit's capability bounding set, as the daemon runs it there.
fn run_hook_as_in_the_unit(name: &str, vars: &[(&str, &str)], setpriv: &[String]) -> Output {
    let mut cmd = Command::new("setpriv");
    cmd.args(setpriv)
        .arg(hook(name))
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("EIT_CERTD_BIN", certd_bin())
        .envs(vars.iter().copied())
        .stdin(Stdio::null());
    cmd.output().unwrap()
}

#[test]
fn stunnel_reload_proves_that_a_real_stunnel_took_the_new_certificate() {
    let Some(stunnel) = ["stunnel4", "stunnel"].into_iter().find(|p| on_path(p)) else {
        skipped!(
            "hook_scripts::real stunnel: no stunnel4 or stunnel on PATH (apt-get install stunnel4)"
        );
        return;
    };
    if !on_path("openssl") {
        skipped!("hook_scripts::real stunnel: no openssl on PATH");
        return;
    }
    if !nix::unistd::geteuid().is_root() {
        skipped!("hook_scripts::real stunnel: needs root, to start stunnel as Debian does (as root, with setuid = stunnel4)");
        return;
    }
    // The user Debian's stunnel4 package creates; any unprivileged user does.
    let Some(user) = ["stunnel4", "nobody"]
        .into_iter()
        .find_map(|n| nix::unistd::User::from_name(n).ok().flatten())
    else {
        skipped!("hook_scripts::real stunnel: no user stunnel4 or nobody to drop to");
        return;
    };
    let group = nix::unistd::Group::from_gid(user.gid).unwrap().unwrap();
    let Some(setpriv) = unit_bounding_set() else {
        skipped!("hook_scripts::real stunnel: no setpriv on PATH (apt-get install util-linux), to run the hook with the unit's capabilities");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let t = tmp.path();
    // As /var/lib/eit-certd: the dropped user may pass through (a tempdir is 0700).
    fs::set_permissions(t, fs::Permissions::from_mode(0o755)).unwrap();
    let host = "mount-target.example.internal";

    // A CA that signs the "mount target" and the client certificates, laid out as eit-certd
    // installs them, with output.group = the stunnel user's group (key.pem 0640 root:group).
    let rsa = "-newkey rsa:2048 -nodes";
    let sign = "-CA ca.pem -CAkey ca.key -CAcreateserial -days 1";
    openssl(
        t,
        &format!("req -x509 {rsa} -keyout ca.key -out ca.pem -subj /CN=test-CA -days 1"),
    );
    openssl(
        t,
        &format!("req {rsa} -keyout server.key -out server.csr -subj /CN={host}"),
    );
    fs::write(t.join("san.ext"), format!("subjectAltName=DNS:{host}\n")).unwrap();
    openssl(
        t,
        &format!("x509 -req -in server.csr {sign} -out server.pem -extfile san.ext"),
    );
    let out_dir = t.join("out");
    for g in ["gen1", "gen2"] {
        let gen = out_dir.join("generations").join(g);
        fs::create_dir_all(&gen).unwrap();
        let dir = format!("out/generations/{g}");
        openssl(
            t,
            &format!("req {rsa} -keyout {dir}/key.pem -out {g}.csr -subj /CN=instance-{g}"),
        );
        openssl(
            t,
            &format!("x509 -req -in {g}.csr {sign} -out {dir}/fullchain.pem"),
        );
        nix::unistd::chown(&gen.join("key.pem"), None, Some(group.gid)).unwrap();
        fs::set_permissions(gen.join("key.pem"), fs::Permissions::from_mode(0o640)).unwrap();
        fs::set_permissions(gen.join("fullchain.pem"), fs::Permissions::from_mode(0o644)).unwrap();
        fs::set_permissions(&gen, fs::Permissions::from_mode(0o755)).unwrap();
    }
    symlink("generations/gen1", out_dir.join("current")).unwrap();
    // stunnel writes its pid file and log after dropping root: a directory of its user's, as
    // Debian's /run/stunnel4 and /var/log/stunnel4.
    let run = t.join("run");
    fs::create_dir(&run).unwrap();
    nix::unistd::chown(&run, Some(user.uid), Some(user.gid)).unwrap();
    let (pid_file, log) = (run.join("stunnel.pid"), run.join("stunnel.log"));

    // The "mount target": requires a client certificate and shows it on its status page.
    let (local, remote) = (free_port(), free_port());
    let server = Command::new("openssl")
        .args([
            "s_server", "-quiet", "-www", "-Verify", "2", "-CAfile", "ca.pem",
        ])
        .args(["-cert", "server.pem", "-key", "server.key"])
        .args(["-accept", &format!("127.0.0.1:{remote}")])
        .current_dir(t)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _daemons = Daemons {
        pid_file: pid_file.clone(),
        server: Some(server),
    };
    wait_until("s_server to listen", || {
        std::net::TcpStream::connect(("127.0.0.1", remote)).is_ok()
    });

    // examples/stunnel.conf, pointed at this test's files, ports and user; its verification
    // settings (CAfile, verifyChain, checkHost, sslVersionMin) are kept as they are.
    let example =
        fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/stunnel.conf"))
            .unwrap();
    let mut conf = format!("output = {}\nforeground = no\n", log.display());
    for line in example.lines() {
        let key = line.split('=').next().unwrap_or("").trim();
        let value = match key {
            "pid" => pid_file.display().to_string(),
            "accept" => format!("127.0.0.1:{local}"),
            "connect" => format!("127.0.0.1:{remote}"),
            "CAfile" => t.join("ca.pem").display().to_string(),
            "cert" | "key" => line
                .split_once('=')
                .unwrap()
                .1
                .trim()
                .replace("/var/lib/eit-certd", out_dir.to_str().unwrap()),
            "setuid" => user.name.clone(),
            "setgid" => group.name.clone(),
            _ => {
                conf.push_str(line);
                conf.push('\n');
                continue;
            }
        };
        conf.push_str(&format!("{key} = {value}\n"));
    }
    assert!(conf.contains(&format!("checkHost = {host}")), "{conf}");
    assert!(conf.contains(&format!("setuid = {}", user.name)), "{conf}");
    let conf_path = t.join("stunnel.conf");
    fs::write(&conf_path, &conf).unwrap();
    fs::set_permissions(&conf_path, fs::Permissions::from_mode(0o644)).unwrap();
    let started = Command::new(stunnel)
        .arg(&conf_path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(started.status.success(), "{stunnel}: {}", stderr(&started));
    wait_until("stunnel to write its pid file", || {
        !read(&pid_file).trim().is_empty()
    });
    let pid: u32 = read(&pid_file).trim().parse().unwrap();
    let status = read(Path::new(&format!("/proc/{pid}/status")));
    assert!(
        status.contains(&format!("\nUid:\t{}\t", user.uid)),
        "stunnel did not drop to {}: {status}",
        user.name
    );

    let mut page = String::new();
    wait_until("a connection through stunnel", || {
        page = through_stunnel(local);
        page.contains("CN=instance-gen")
    });
    assert!(page.contains("Subject: CN=instance-gen1"), "{page}");
    let reloads = || {
        read(&log)
            .matches("Reading configuration from file")
            .count()
    };
    assert_eq!(reloads(), 1, "{}", read(&log));

    let glob = format!("{}/*.pid", run.display());
    let vars = [("STUNNEL_PID_GLOB", glob.as_str()), ("EIT_SERIAL", "0A1B")];
    let hook = |vars: &[(&str, &str)]| run_hook_as_in_the_unit("stunnel-reload", vars, &setpriv);

    // 0. stunnel created its `output =` log 0640 as its user: inside the unit's bounding set
    //    root cannot read it, so nothing could be confirmed; said before any signal. (Made
    //    readable for the rest, as the hook's message suggests.)
    assert_eq!(mode_of(&log), 0o640);
    let out = hook(&vars);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains(&format!("cannot read its log {}", log.display()))
            && err.contains("remove 'output ='"),
        "{err}"
    );
    assert_eq!(reloads(), 1, "stunnel was signalled: {}", read(&log));
    fs::set_permissions(&log, fs::Permissions::from_mode(0o644)).unwrap();

    // 1. eit-certd installs the next generation in a directory stunnel's user cannot enter
    //    (the 0700 of the report): the hook names it and does not signal; stunnel would have
    //    logged "Failed to reload" and kept the old certificate.
    let gen2 = out_dir.join("generations/gen2");
    fs::set_permissions(&gen2, fs::Permissions::from_mode(0o700)).unwrap();
    symlink("generations/gen2", out_dir.join("current.new")).unwrap();
    fs::rename(out_dir.join("current.new"), out_dir.join("current")).unwrap();
    let out = hook(&vars);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains(&format!("stunnel pid {pid}"))
            && err.contains(&gen2.display().to_string())
            && err.contains("not signalling it"),
        "the message must name the stunnel and the directory it cannot enter: {err}"
    );
    assert_eq!(reloads(), 1, "stunnel was signalled: {}", read(&log));
    assert!(through_stunnel(local).contains("Subject: CN=instance-gen1"));

    // 2. Readable: the hook signals, and confirms from stunnel's own log; stunnel presents
    //    the new certificate.
    fs::set_permissions(&gen2, fs::Permissions::from_mode(0o755)).unwrap();
    let out = hook(&vars);
    let err = stderr(&out);
    assert_eq!(code(&out), 0, "{err}\nstunnel log:\n{}", read(&log));
    assert!(
        err.contains(&format!(
            "stunnel pid {pid} ({}) reloaded {} and checked 4 file(s) readable as its user: 'Configuration successful', so new connections present the new certificate (serial 0A1B)",
            pid_file.display(),
            conf_path.display()
        )),
        "{err}"
    );
    assert_eq!(reloads(), 2);
    wait_until("stunnel to present the new certificate", || {
        page = through_stunnel(local);
        page.contains("Subject: CN=instance-gen2")
    });

    // 3. The configuration file itself, which stunnel re-reads as its user, made unreadable:
    //    refused before the signal.
    fs::set_permissions(&conf_path, fs::Permissions::from_mode(0o600)).unwrap();
    let out = hook(&vars);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains(&conf_path.display().to_string()) && err.contains("not signalling it"),
        "{err}"
    );
    assert_eq!(reloads(), 2, "stunnel was signalled");
    fs::set_permissions(&conf_path, fs::Permissions::from_mode(0o644)).unwrap();

    // 4. A reload that fails for a reason no permission check sees (a line stunnel rejects):
    //    the hook reports stunnel's own verdict and error.
    fs::write(&conf_path, format!("{conf}this line has no equals sign\n")).unwrap();
    let out = hook(&vars);
    let err = stderr(&out);
    assert_eq!(code(&out), 1, "{err}");
    assert!(
        err.contains("its reload FAILED")
            && err.contains("No '=' found")
            && err.contains("Failed to reload the configuration file"),
        "{err}"
    );
    assert_eq!(reloads(), 3);
    assert!(
        through_stunnel(local).contains("Subject: CN=instance-gen2"),
        "stunnel must keep the configuration it had"
    );
}
