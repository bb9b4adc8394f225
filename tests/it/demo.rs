//! The README's first command: `eit-certd demo` must work on a fresh machine, with no config,
//! and write nothing outside its own temporary directory.


use std::process::Command;

#[test]
fn demo_renews_rotates_three_times_and_exits_0() {
    let tmpdir = tempfile::tempdir().unwrap();
    let o = Command::new(crate::common::bin())
        .arg("demo")
        .env("TMPDIR", tmpdir.path())
        .env("EIT_CERTD_CONFIG", "/nonexistent/should-not-be-read.toml")
        .output()
        .unwrap();
    crate::common::assert_exit(&o, 0);
    let out = crate::common::stdout(&o);
    for step in [
        "1. started",
        "2. `eit-certd renew`",
        "3. validated and installed",
        "4. `eit-certd run`",
        "5. `eit-certd status`",
    ] {
        assert!(out.contains(step), "missing {step:?} in:\n{out}");
    }
    assert_eq!(out.matches("rotation ").count(), 3, "{out}");
    assert!(
        out.matches("hook announce said: new serial").count() >= 4,
        "{out}"
    );
    assert!(out.contains("status        valid"), "{out}");
    // Everything went into one directory under TMPDIR, which holds the files it printed.
    let dirs: Vec<_> = std::fs::read_dir(tmpdir.path())
        .unwrap()
        .flatten()
        .collect();
    assert_eq!(dirs.len(), 1, "{dirs:?}");
    let root = dirs[0].path();
    assert!(root.join("out/current/cert.pem").is_file());
    assert!(root.join("emulator/ca.pem").is_file());
    let (ok, verify) = crate::common::openssl_verify(
        &root.join("emulator/ca.pem"),
        &root.join("out/current"),
        None,
    );
    // The demo's certificates live 9 s; the last one may have expired by now.
    assert!(ok || verify.contains("certificate has expired"), "{verify}");
}
