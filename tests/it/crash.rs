//! Crash consistency: `eit-certd renew --force` killed with SIGKILL at random moments.
//!
//! A few unkilled runs first measure how long a renewal takes and where in it the install
//! happens (by watching `generations/` for the `.tmp-*` directory and `current` for the swap).
//! Then each round starts a renewal and kills it, in turn:
//! - at a delay drawn uniformly from [0, typical run time];
//! - at a delay drawn uniformly from the last part of a run, [0.8 × earliest install start
//!   seen, typical run time], where the install happens;
//! - as soon as the `.tmp-*` generation appears, after a delay drawn uniformly from [0,
//!   shortest time seen from the install's start to the exit]: writing and fsyncing the files,
//!   the rename, the swap of `current`, pruning, state.json;
//! - as soon as the finished generation is renamed into place, after a delay drawn uniformly
//!   from [0, typical install time]: around the swap of `current`.
//!
//! Every fifth round starts from an empty output directory, so kills also land in a first
//! install (nothing to swap over); the others replace an installed set ("landed after the first
//! install" in the summary). After each kill:
//! - if `current` exists, it is a symlink to a complete generation: all five files, fullchain =
//!   cert + chain, combined = key + fullchain, key.pem the key of cert.pem (`openssl x509 -pubkey`
//!   vs `openssl pkey -pubout`), and `openssl verify -CAfile <emulator ca> -untrusted chain.pem
//!   cert.pem` passes; if the killed run had nothing installed before, a `current` can only
//!   appear complete;
//! - if the kill did not get past the swap, `current` still points at the generation it pointed
//!   at before;
//! - then a normal `renew --force` succeeds (the killed process held the lock: the kernel drops
//!   a flock with its holder, so the next run must get it), installs a set that passes the same
//!   checks, and leaves no `.tmp-*` entry anywhere under the output directory.
//!
//! `CRASH_KILLS` sets how many kills (default 25); `CRASH_SEED` replays a run's delays;
//! `CRASH_VERBOSE=1` prints each round.
//!
//! What a SIGKILL test cannot see: a missing fsync (the page cache survives the kill; only a
//! power loss would show it). It does fail if files are written in place, if `current` moves
//! before the generation is complete, or if leftovers are not cleaned; the order of fsyncs and
//! renames is checked by the strace test at the end of this file.


use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::*;

/// A small xorshift generator: the test needs uniform draws, not cryptography, and a seed to
/// replay a failing run.
struct Rng(u64);

impl Rng {
    fn new() -> Rng {
        let seed = std::env::var("CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| {
                let t = std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .unwrap();
                t.as_nanos() as u64 ^ u64::from(std::process::id()) << 32
            })
            | 1;
        eprintln!("crash: CRASH_SEED={seed}");
        Rng(seed)
    }

    fn unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        (x >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in [lo, hi].
    fn between(&mut self, lo: Duration, hi: Duration) -> Duration {
        lo + (hi.saturating_sub(lo)).mul_f64(self.unit())
    }
}

fn spawn_renew(setup: &Setup) -> Child {
    Command::new(bin())
        .arg("--config")
        .arg(&setup.config)
        .args(["renew", "--force"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

fn current_target(out: &Path) -> Option<PathBuf> {
    std::fs::read_link(out.join("current")).ok()
}

/// Generation directories (not `.tmp-*`).
fn generations(out: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(out.join("generations"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| !n.starts_with('.'))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn install_started(out: &Path, gens_before: &[String]) -> bool {
    std::fs::read_dir(out.join("generations"))
        .map(|rd| {
            rd.flatten().any(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.starts_with(".tmp-") || !gens_before.contains(&n)
            })
        })
        .unwrap_or(false)
}

/// One unkilled run, watched: (total, install started, current swapped), from spawn.
fn measured_run(setup: &Setup) -> (Duration, Option<Duration>, Option<Duration>) {
    let before_target = current_target(&setup.out);
    let before_gens = generations(&setup.out);
    let started = Instant::now();
    let mut child = spawn_renew(setup);
    let (mut install, mut swap) = (None, None);
    loop {
        if install.is_none() && install_started(&setup.out, &before_gens) {
            install = Some(started.elapsed());
        }
        if swap.is_none() && current_target(&setup.out) != before_target {
            swap = Some(started.elapsed());
            install.get_or_insert(started.elapsed());
        }
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "an unkilled renewal failed: {status}");
            return (started.elapsed(), install, swap);
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Where a kill landed, read from what it left on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Stage {
    /// Nothing new on disk: killed while starting, generating the key or talking to the service.
    BeforeInstall,
    /// A `.tmp-*` generation was left: killed while writing or fsyncing the files.
    WritingGeneration,
    /// The new generation is in place but `current` still points at the old one.
    RenamedNotSwapped,
    /// `current` points at the new generation: killed while pruning, writing state.json or
    /// exiting.
    AfterSwap,
    /// The run finished before the kill arrived.
    Exited,
}

#[derive(Debug, Clone, Copy)]
enum Timing {
    /// From spawn, uniform in [0, typical run time].
    Uniform,
    /// From spawn, uniform over the last part of a run.
    LatePart,
    /// From the moment the `.tmp-*` generation appears, uniform in [0, shortest tail].
    InInstall,
    /// From the moment the finished generation is renamed into place, uniform in
    /// [0, typical install time]: the swap of `current`, pruning, state.json.
    AroundSwap,
}

struct Measured {
    typical: Duration,
    longest: Duration,
    earliest_install: Duration,
    /// From the install's start to the swap of `current`.
    typical_install: Duration,
    /// From the install's start to the exit, the shortest seen: a kill drawn from [0, this]
    /// after the install is seen rarely comes after the exit.
    shortest_tail: Duration,
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn measure(setup: &Setup, runs: usize) -> Measured {
    let (mut totals, mut installs) = (Vec::new(), Vec::new());
    let (mut install_times, mut tails) = (Vec::new(), Vec::new());
    for _ in 0..runs {
        let (total, install, swap) = measured_run(setup);
        totals.push(total);
        if let Some(i) = install {
            installs.push(i);
            install_times.push(swap.unwrap_or(total).saturating_sub(i));
            tails.push(total.saturating_sub(i));
        }
    }
    let m = Measured {
        typical: median(totals.clone()),
        longest: *totals.iter().max().unwrap(),
        earliest_install: installs
            .iter()
            .min()
            .copied()
            .unwrap_or(median(totals.clone()) / 2),
        typical_install: if install_times.is_empty() {
            Duration::from_millis(5)
        } else {
            median(install_times).max(Duration::from_millis(1))
        },
        shortest_tail: tails
            .iter()
            .min()
            .copied()
            .unwrap_or(Duration::from_millis(10))
            .max(Duration::from_millis(1)),
    };
    eprintln!(
        "crash: {runs} unkilled runs: typical {:?}, longest {:?}; install starts at {:?} at the \
         earliest and takes {:?} to the swap of current, at least {:?} to the exit",
        m.typical, m.longest, m.earliest_install, m.typical_install, m.shortest_tail
    );
    m
}

/// Starts a renewal and kills it as `timing` says: whether it was still running when killed,
/// when (from spawn) the kill was sent, and its pid.
fn kill_one(setup: &Setup, m: &Measured, timing: Timing, rng: &mut Rng) -> (bool, Duration, u32) {
    let gens_before = generations(&setup.out);
    let started = Instant::now();
    let mut child = spawn_renew(setup);
    let pid = child.id();
    match timing {
        Timing::Uniform => {
            std::thread::sleep(rng.between(Duration::ZERO, m.typical));
        }
        Timing::LatePart => {
            let from = m.earliest_install.mul_f64(0.8);
            let at = rng.between(from, m.typical);
            std::thread::sleep(at.saturating_sub(started.elapsed()));
        }
        Timing::InInstall | Timing::AroundSwap => {
            let seen = |out: &Path| match timing {
                Timing::InInstall => install_started(out, &gens_before),
                _ => generations(out).iter().any(|g| !gens_before.contains(g)),
            };
            let deadline = started + m.longest * 3;
            while !seen(&setup.out)
                && Instant::now() < deadline
                && child.try_wait().unwrap().is_none()
            {
                std::thread::sleep(Duration::from_micros(100));
            }
            let window = match timing {
                Timing::InInstall => m.shortest_tail,
                _ => m.typical_install,
            };
            std::thread::sleep(rng.between(Duration::ZERO, window));
        }
    }
    let at = started.elapsed();
    let _ = child.kill(); // SIGKILL
    let status = child.wait().unwrap();
    match status.signal() {
        Some(9) => (true, at, pid),
        _ => {
            assert!(status.success(), "renewal failed on its own: {status}");
            (false, at, pid)
        }
    }
}

fn stage(
    out: &Path,
    before_target: &Option<PathBuf>,
    gens_before: &[String],
    killed: bool,
) -> Stage {
    if !killed {
        return Stage::Exited;
    }
    if current_target(out) != *before_target {
        return Stage::AfterSwap;
    }
    if generations(out).iter().any(|g| !gens_before.contains(g)) {
        return Stage::RenamedNotSwapped;
    }
    let litter = tmp_litter(&out.join("generations"));
    if !litter.is_empty() {
        return Stage::WritingGeneration;
    }
    Stage::BeforeInstall
}

#[test]
fn sigkill_at_any_moment_leaves_a_complete_set_or_the_old_one() {
    let kills_wanted: usize = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(25);
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    let ca = emulator.ca_pem();
    let mut rng = Rng::new();
    let test_started = Instant::now();

    let m = measure(&setup, 5);
    check_current_set(&setup.out, &ca)
        .unwrap()
        .expect("installed");

    let mut kills = 0;
    let mut after_first_install = 0;
    let mut lock_held = 0;
    let mut stages: std::collections::BTreeMap<Stage, usize> = Default::default();
    let mut round = 0;
    while kills < kills_wanted {
        round += 1;
        assert!(
            round <= kills_wanted * 4,
            "too many runs finished before their kill"
        );
        if round % 5 == 0 {
            std::fs::remove_dir_all(&setup.out).unwrap();
        }
        let before_target = current_target(&setup.out);
        // Checked at the end of the last round (or by `measure`), unless wiped since.
        let before_id = before_target
            .as_ref()
            .map(|t| t.file_name().unwrap().to_string_lossy().into_owned());
        let gens_before = generations(&setup.out);
        let timing = [
            Timing::Uniform,
            Timing::LatePart,
            Timing::InInstall,
            Timing::AroundSwap,
        ][round % 4];

        let (killed, at, pid) = kill_one(&setup, &m, timing, &mut rng);
        // The lock file names its holder: the kill came while the lock was held.
        let held = std::fs::read_to_string(setup.out.join(".lock"))
            .is_ok_and(|t| t.trim() == pid.to_string());
        let stage = stage(&setup.out, &before_target, &gens_before, killed);
        if std::env::var_os("CRASH_VERBOSE").is_some() {
            eprintln!("crash: round {round}: {timing:?} kill at {at:?} -> {stage:?}");
        }
        *stages.entry(stage).or_default() += 1;
        if killed {
            kills += 1;
            lock_held += usize::from(held);
            if before_target.is_some() {
                after_first_install += 1;
            }
        }

        // What a reader sees right after the crash.
        let after_id = check_current_set(&setup.out, &ca)
            .unwrap_or_else(|e| panic!("round {round}, killed at {stage:?}: {e}"));
        if stage < Stage::AfterSwap {
            assert_eq!(
                after_id, before_id,
                "round {round}: current moved although the kill came before the swap"
            );
        }

        // The next writer gets the lock and repairs everything.
        let o = setup.run(&["renew", "--force"]);
        assert!(
            !stderr(&o).contains("already writing"),
            "round {round}: the lock outlived its holder\n{}",
            stderr(&o)
        );
        assert_exit(&o, 0);
        let id = check_current_set(&setup.out, &ca)
            .unwrap_or_else(|e| panic!("round {round}, after recovery: {e}"))
            .expect("a set after a successful renewal");
        assert_ne!(
            Some(&id),
            after_id.as_ref(),
            "round {round}: --force renewed nothing"
        );
        let litter = tmp_litter(&setup.out);
        assert!(
            litter.is_empty(),
            "round {round}: litter after recovery: {litter:?}"
        );
    }
    eprintln!(
        "crash: {kills} kills survived ({after_first_install} landed after the first install)"
    );
    eprintln!(
        "crash: where the kills landed: {stages:?}; {lock_held} while holding the lock \
         ({round} rounds, {:?})",
        test_started.elapsed()
    );
    assert!(lock_held > 0, "no kill came while the lock was held");
}

/// One traced file-system call: the syscall's name, the paths in its arguments (quoted strings
/// and `-y` fd paths) and whether it succeeded.
#[derive(Debug)]
struct Call {
    name: String,
    paths: Vec<String>,
}

/// Parses `strace -f -y -o` output: `PID name(args) = result`.
fn parse_trace(text: &str) -> Vec<Call> {
    let mut calls = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.split_once(' ').map(|(_, r)| r.trim_start()) else {
            continue;
        };
        let Some((name, args)) = rest.split_once('(') else {
            continue;
        };
        // strace pads short calls: `fsync(3</dir>)            = 0`.
        let Some((args, result)) = args.rsplit_once('=') else {
            continue;
        };
        let Some(args) = args.trim_end().strip_suffix(')') else {
            continue;
        };
        if result.trim_start().starts_with('-') {
            continue; // failed: changed nothing
        }
        let mut paths = Vec::new();
        let mut chars = args.chars().peekable();
        while let Some(c) = chars.next() {
            let close = match c {
                '"' => '"',
                '<' => '>',
                _ => continue,
            };
            let mut s = String::new();
            for c in chars.by_ref() {
                if c == close {
                    break;
                }
                s.push(c);
            }
            paths.push(s);
        }
        calls.push(Call {
            name: name.to_string(),
            paths,
        });
    }
    calls
}

/// The order of a renewal's file-system calls, as strace sees them: every file of the new
/// generation is fsynced, then the generation directory, before the directory is renamed into
/// place; `generations/` is fsynced before `current` moves; `current` moves by renaming a
/// temporary symlink over it, and the output directory is fsynced after that. This is what the
/// SIGKILL test above cannot see (the page cache survives a kill, not a power cut). Skipped,
/// saying why, where strace is not installed or may not trace.
#[test]
fn install_fsyncs_everything_before_each_rename() {
    if Command::new("strace").arg("-V").output().is_err() {
        eprintln!("skipped: strace is not installed");
        return;
    }
    let emulator = Emulator::start(&[]);
    let setup = Setup::new(&emulator, 2048, "", "");
    assert_exit(&setup.run(&["renew"]), 0);
    let trace = setup.tmp.path().join("trace.txt");
    let o = Command::new("strace")
        .args(["-f", "-y", "-qq", "-o"])
        .arg(&trace)
        .args([
            "-e",
            "trace=fsync,fdatasync,rename,renameat,renameat2,symlink,symlinkat,mkdir,mkdirat",
        ])
        .arg(bin())
        .arg("--config")
        .arg(&setup.config)
        .args(["renew", "--force"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    if stderr(&o).contains("Operation not permitted") && !trace.exists() {
        eprintln!("skipped: strace may not trace here: {}", stderr(&o).trim());
        return;
    }
    assert_exit(&o, 0);
    let calls = parse_trace(&std::fs::read_to_string(&trace).unwrap());
    let out = setup.out.to_string_lossy().into_owned();
    let gens = format!("{out}/generations");
    let find = |what: &str, pred: &dyn Fn(&Call) -> bool| -> usize {
        calls
            .iter()
            .position(pred)
            .unwrap_or_else(|| panic!("no {what} in the trace:\n{calls:#?}"))
    };
    let renamed = find("rename of the new generation", &|c| {
        c.name.starts_with("rename")
            && c.paths
                .iter()
                .any(|p| p.starts_with(&format!("{gens}/.tmp-")))
    });
    let tmp_dir = calls[renamed]
        .paths
        .iter()
        .find(|p| p.starts_with(&format!("{gens}/.tmp-")))
        .unwrap()
        .clone();
    let fsync_of = |path: &str| {
        let path = path.to_string();
        move |c: &Call| c.name.contains("sync") && c.paths.last() == Some(&path)
    };
    for name in SET_FILES {
        let file = format!("{tmp_dir}/{name}");
        let i = find(&format!("fsync of {file}"), &fsync_of(&file));
        assert!(i < renamed, "{name} is fsynced after the rename into place");
    }
    let i = find("fsync of the new generation", &fsync_of(&tmp_dir));
    assert!(
        i < renamed,
        "the generation directory is fsynced after its rename"
    );
    let swapped = find("rename over current", &|c| {
        c.name.starts_with("rename") && c.paths.last() == Some(&format!("{out}/current"))
    });
    assert!(
        calls[swapped]
            .paths
            .iter()
            .any(|p| p.starts_with(&format!("{out}/.tmp-current-"))),
        "current is not replaced by renaming a temporary symlink: {:?}",
        calls[swapped]
    );
    assert!(
        renamed < swapped,
        "current moves before the generation is in place"
    );
    let gens_synced = calls[renamed..swapped]
        .iter()
        .any(|c| c.name.contains("sync") && c.paths.last() == Some(&gens));
    assert!(
        gens_synced,
        "generations/ is not fsynced between the rename and the swap"
    );
    let out_synced = calls[swapped..]
        .iter()
        .any(|c| c.name.contains("sync") && c.paths.last() == Some(&out));
    assert!(
        out_synced,
        "the output directory is not fsynced after the swap"
    );
}
