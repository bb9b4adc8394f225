//! RSA key generation, one thread vs one per core racing (what a due renewal without a spare
//! does): p50/p95 over N runs. `cargo run --release --example keygen_race -- [bits] [runs]`.
//!
//! Each racing run waits for its losing threads to finish before the next run starts, so that
//! runs do not slow each other down.
// A benchmark and tests report on stdout; the product prints only through `out!`.
#![allow(clippy::print_stdout)]

use std::time::{Duration, Instant};

use eit_certd::pki::PrivateKey;

fn losers_running() -> bool {
    std::fs::read_dir("/proc/self/task")
        .map(|tasks| {
            tasks.flatten().any(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim() == "eit-keygen-race")
            })
        })
        .unwrap_or(false)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut v: Vec<Duration>) {
    v.sort();
    println!(
        "{name:<28} n={:<3} p50 {:>7.0} ms  p95 {:>7.0} ms  max {:>7.0} ms",
        v.len(),
        percentile(&v, 0.5).as_secs_f64() * 1e3,
        percentile(&v, 0.95).as_secs_f64() * 1e3,
        v.last().unwrap().as_secs_f64() * 1e3
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let bits: u32 = args.get(1).and_then(|a| a.parse().ok()).unwrap_or(4096);
    let runs: usize = args.get(2).and_then(|a| a.parse().ok()).unwrap_or(30);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (mut one, mut race) = (Vec::new(), Vec::new());
    // Interleaved, so that a change in the machine's load hits both alike.
    for _ in 0..runs {
        let t = Instant::now();
        PrivateKey::generate(bits).unwrap();
        one.push(t.elapsed());
        let t = Instant::now();
        rt.block_on(PrivateKey::generate_racing(bits)).unwrap();
        race.push(t.elapsed());
        while losers_running() {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    println!("RSA-{bits}, {cores} cores available");
    report("one thread", one);
    report(&format!("racing ({cores} threads)"), race);
}
