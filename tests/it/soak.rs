//! A long run of the real daemon: renewal after renewal with a hook that misbehaves, the
//! swanctl links and the metrics file on. What one renewal leaves behind (a descriptor, a task,
//! memory, a generation) shows up here as growth.

use std::time::Duration;

use nix::sys::signal::Signal;

use crate::common::*;

/// Distinguishes this test's orphans from every other process.
const ORPHAN: &str = "299.517";

fn open_fds(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .count()
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap()
}

/// 100 renewals (SIGUSR1 after each install) with a hook that leaves an orphan holding its
/// stdout and stderr (as a hook that starts a daemon without redirecting does), swanctl and
/// metrics on: descriptors, generations and memory stay flat. The figures are printed.
#[test]
fn a_hundred_renewals_with_a_misbehaving_hook_leave_nothing_behind() {
    let emulator = Emulator::start(&[]);
    let scratch = tempfile::tempdir().unwrap();
    let swanctl = scratch.path().join("swanctl");
    std::fs::create_dir_all(&swanctl).unwrap();
    let metrics = scratch.path().join("eit-certd.prom");
    let setup = Setup::new(
        &emulator,
        2048,
        "",
        &format!(
            "[output.swanctl]\ndir = \"{}\"\n\n\
             [[hooks]]\nname = \"leaves-an-orphan\"\n\
             command = [\"/bin/sh\", \"-c\", \"setsid sleep {ORPHAN} & echo started\"]\n",
            swanctl.display()
        ),
    );
    setup.add_output_settings(&format!(
        "keep = 3\nmetrics_file = \"{}\"",
        metrics.display()
    ));
    let daemon = DaemonProc::start_with_env(&setup, &[("RUST_LOG", "eit_certd=info")]);
    let pid = daemon.pid();
    let installs = || {
        daemon
            .log_text()
            .matches("installed a new certificate")
            .count()
    };
    let renew = |n: usize| {
        if n > 1 {
            daemon.signal(Signal::SIGUSR1);
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        // "next renewal scheduled" closes an attempt: a SIGUSR1 before it is answered by the
        // renewal under way (by design), so the next one is sent only after it.
        let done = || daemon.log_text().matches("next renewal scheduled").count() >= n;
        while !(installs() >= n && done()) {
            if std::time::Instant::now() > deadline {
                let log = daemon.log_text();
                let tail: Vec<&str> = log.lines().rev().take(30).collect();
                panic!(
                    "renewal {n} did not happen; the log ends:\n{}",
                    tail.into_iter().rev().collect::<Vec<_>>().join("\n")
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    };
    const WARM: usize = 10;
    const TOTAL: usize = 100;
    for n in 1..=WARM {
        renew(n);
    }
    let (fds_warm, rss_warm) = (open_fds(pid), rss_kib(pid));
    for n in WARM + 1..=TOTAL {
        renew(n);
    }
    let (fds_end, rss_end) = (open_fds(pid), rss_kib(pid));
    let generations = setup.generations().len();
    let orphans = std::process::Command::new("pgrep")
        .args(["-f", &format!("sleep {ORPHAN}")])
        .output()
        .unwrap();
    let orphan_count = String::from_utf8_lossy(&orphans.stdout).lines().count();
    let _ = std::process::Command::new("pkill")
        .args(["-f", &format!("sleep {ORPHAN}")])
        .status();
    println!(
        "soak: {TOTAL} renewals; fds {fds_warm} after {WARM}, {fds_end} after {TOTAL}; \
         RSS {rss_warm} KiB after {WARM}, {rss_end} KiB after {TOTAL}; {generations} \
         generations; {orphan_count} orphans alive"
    );
    assert_eq!(installs(), TOTAL, "{}", daemon.log_text());
    assert!(orphan_count >= TOTAL, "the hook's orphans should still run");
    // Each leaked pair of pipe readers was two descriptors a renewal.
    assert!(
        fds_end <= fds_warm + 2,
        "descriptors grew from {fds_warm} to {fds_end} over {} renewals",
        TOTAL - WARM
    );
    assert_eq!(generations, 3, "output.keep = 3");
    // Generous: allocator noise, not a leak of ~a set per renewal (a set is ~10 KiB; 90 of
    // them with their tasks would show as several MiB).
    assert!(
        rss_end <= rss_warm + 4 * 1024,
        "RSS grew from {rss_warm} KiB to {rss_end} KiB over {} renewals",
        TOTAL - WARM
    );
    assert!(std::fs::read_to_string(&metrics)
        .unwrap()
        .contains(&format!(
            "eit_certd_renewals_total{{result=\"ok\"}} {TOTAL}"
        )));
}
