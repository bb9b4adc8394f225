//! `emulator` (the metadata service emulator in the foreground) and `demo` (a guided tour
//! against it in a temporary directory). Only with the `emulator` feature.

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use time::OffsetDateTime;

use super::logging::DEMO_LOG;
use super::renew::renew_with_state;
use super::{failed, load_config, open_store, CommandResult};
use crate::cli::{DemoArgs, EmulatorArgs};
use crate::emulator;
use crate::metadata::client::Client;
use crate::renew::schedule::Policy;
use crate::renew::Renewer;
use crate::report::status;
use crate::store;
use crate::text::rfc3339;

pub(super) async fn run_emulator(args: EmulatorArgs) -> CommandResult {
    let options = emulator::Options {
        listen: args.listen,
        tls: args.tls,
        state_dir: args.state_dir,
        max_lifetime: args.max_lifetime,
        fault: args.fault,
        instance_id: args.instance_id,
    };
    let running = emulator::start(options).await.map_err(failed)?;
    // The first stdout line is the contract: scripts read the URL from it.
    out!("{}", running.base_url());
    let _ = std::io::stdout().flush();
    shutdown_signal().await;
    running.shutdown().await;
    Ok(0)
}

/// Resolves on SIGINT or SIGTERM.
pub async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// How long the demo's emulator lets certificates live, so rotations happen while you watch.
const DEMO_LIFETIME: std::time::Duration = std::time::Duration::from_secs(9);
const DEMO_ROTATIONS: usize = 3;

pub(super) async fn demo(args: &DemoArgs) -> CommandResult {
    let root = tempfile::Builder::new()
        .prefix("eit-certd-demo-")
        .tempdir()
        .context("cannot create a temporary directory")
        .map_err(failed)?
        .keep();
    let log_path = root.join("demo.log");
    if let Ok(file) = std::fs::File::create(&log_path) {
        let _ = DEMO_LOG.set(file);
    }
    let result = demo_tour(&root, args.keep).await;
    match &result {
        // A failed tour keeps everything: the log says what went wrong.
        Err(_) => {
            let _ = writeln!(
                std::io::stderr(),
                "eit-certd demo: kept {} for a look; its log is {}",
                root.display(),
                log_path.display()
            );
        }
        Ok(_) if args.keep => {}
        Ok(_) => {
            if let Err(e) = std::fs::remove_dir_all(&root) {
                tracing::warn!("cannot remove {}: {e}", root.display());
            }
        }
    }
    result
}

async fn demo_tour(root: &Path, keep: bool) -> CommandResult {
    out!("eit-certd demo: everything goes under {}", root.display());
    if keep {
        out!("   (--keep: it stays there; the log is demo.log)");
    } else {
        out!("   (removed at the end; `eit-certd demo --keep` keeps it; `-v` shows the log here)");
    }
    let emulator_dir = root.join("emulator");
    let running = emulator::start(emulator::Options {
        state_dir: Some(emulator_dir.clone()),
        max_lifetime: Some(DEMO_LIFETIME),
        ..emulator::Options::default()
    })
    .await
    .map_err(failed)?;
    out!(
        "1. started a metadata service emulator at {} (it caps certificates at {} so that you can watch rotations)",
        running.base_url(),
        humantime::format_duration(DEMO_LIFETIME)
    );

    let out = root.join("out");
    let config_path = root.join("config.toml");
    std::fs::write(&config_path, demo_config(running.base_url(), &out))
        .with_context(|| format!("cannot write {}", config_path.display()))
        .map_err(failed)?;
    out!("   wrote {}", config_path.display());
    let config = load_config(&config_path)?;
    let store = open_store(&config)?;
    let policy = Policy::from(&config.certificate);
    let client = Client::connect(&config.metadata).map_err(failed)?;
    let renewer = Renewer::new(config.clone(), client, store.clone()).map_err(failed)?;
    out!("2. `eit-certd renew`: a token, a CSR for a fresh RSA-2048 key (the default is 4096), a certificate");
    let outcome = renew_with_state(&renewer).await?;
    for h in &outcome.hooks {
        out!("   hook {} said: {}", h.name, h.detail);
    }
    let leaf = &outcome.renewed.verified.leaf;
    let current = store.current_link();
    out!("3. validated and installed:");
    out!("     subject   {}", leaf.subject);
    out!("     issuer    {}", leaf.issuer);
    out!("     serial    {}", leaf.serial_hex);
    out!(
        "     lifetime  {} (until {})",
        humantime::format_duration(leaf.lifetime()),
        rfc3339(leaf.not_after)
    );
    for name in [
        store::KEY_FILE,
        store::CERT_FILE,
        store::CHAIN_FILE,
        store::FULLCHAIN_FILE,
        store::COMBINED_FILE,
    ] {
        out!("     file      {}", current.join(name).display());
    }

    out!("4. `eit-certd run`: the daemon renews at 2/3 of each certificate's life and runs the hook:");
    let mut daemon = crate::daemon::Daemon::start(&config_path, None)
        .await
        .map_err(failed)?;
    let mut events = daemon.events();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(daemon.run(async {
        let _ = stop_rx.await;
    }));
    let (mut rotations, mut hooks_seen) = (0, 0);
    let deadline = tokio::time::Instant::now() + DEMO_LIFETIME * (DEMO_ROTATIONS as u32 + 2);
    while rotations < DEMO_ROTATIONS || hooks_seen < rotations {
        let event = tokio::time::timeout_at(deadline, events.recv()).await;
        match event {
            Ok(Some(crate::daemon::Event::Installed {
                serial, not_after, ..
            })) => {
                rotations += 1;
                out!(
                    "     rotation {rotations}: serial {serial}, valid until {}",
                    rfc3339(not_after)
                );
            }
            Ok(Some(crate::daemon::Event::HookFinished(h))) => {
                hooks_seen += 1;
                out!("       hook {} said: {}", h.name, h.detail);
            }
            Ok(Some(crate::daemon::Event::Failed { error, .. })) => {
                out!("     attempt failed (the daemon retries): {error}");
            }
            Ok(None) | Err(_) => {
                let _ = stop_tx.send(());
                return Err(failed(anyhow::anyhow!(
                    "the daemon did not rotate the certificate in time"
                )));
            }
        }
    }
    let _ = stop_tx.send(());
    task.await
        .context("the daemon task failed")
        .map_err(failed)?
        .map_err(failed)?;

    // Certificates that live seconds make the commands below fail by the time they are
    // pasted: the last one gets the service's usual lifetime.
    running.set_max_lifetime(None);
    let outcome = renew_with_state(&renewer).await?;
    drop(renewer);
    let leaf = &outcome.renewed.verified.leaf;
    out!(
        "5. a last `eit-certd renew --force` with the service's usual lifetime ({}), so that the \
         files outlive the demo: serial {}",
        humantime::format_duration(leaf.lifetime()),
        leaf.serial_hex
    );
    for h in &outcome.hooks {
        out!("       hook {} said: {}", h.name, h.detail);
    }

    out!("6. `eit-certd status` now says:");
    let now = OffsetDateTime::now_utc();
    let report = status::gather(&store, &policy, now);
    for line in report.render_text(now).lines() {
        out!("     {line}");
    }
    running.shutdown().await;

    let cert = current.join(store::CERT_FILE);
    let inspect = [
        format!(
            "openssl x509 -in {} -noout -subject -issuer -dates -serial",
            cert.display()
        ),
        format!(
            "openssl verify -CAfile {} -untrusted {} {}",
            emulator_dir.join("ca.pem").display(),
            current.join(store::CHAIN_FILE).display(),
            cert.display()
        ),
        format!("eit-certd --config {} status", config_path.display()),
    ];
    if keep {
        out!(
            "inspect what it left (valid until {}):",
            rfc3339(leaf.not_after)
        );
        for c in &inspect {
            out!("  {c}");
        }
    } else {
        // Paths about to be removed would only fail when pasted.
        out!(
            "removed {} (`eit-certd demo --keep` keeps it, and prints `openssl x509`, `openssl \
             verify` and `eit-certd status` commands that work on it for an hour)",
            root.display()
        );
    }
    out!("next, on a VPC instance (README \"On a real VPC instance\"):");
    out!("  sudo eit-certd init              # writes /etc/eit-certd/config.toml to edit");
    out!("  sudo eit-certd check --online    # the config, and a round trip to the real service");
    out!("  sudo systemctl enable --now eit-certd && eit-certd status");
    out!("  then point the TLS client at the current/ files: README sections \"On a real VPC");
    out!("  instance\" (stunnel, NFS over TLS with tlshd) and \"Zonal shares (IPsec with strongSwan)\"");
    Ok(0)
}

fn demo_config(endpoint: &str, out: &Path) -> String {
    format!(
        r#"# Written by `eit-certd demo`.
[metadata]
endpoint = "{endpoint}"

[certificate]
key_bits = 2048
subject = {{ C = "US", O = "eit-certd demo" }}
min_remaining = "2s"
jitter = "0s"
# The demo's certificates live seconds; real ones are never renewed this often.
min_interval = "1s"

[output]
dir = "{}"

[[hooks]]
name = "announce"
command = ["/bin/sh", "-c", 'echo "new serial $EIT_SERIAL (replacing ${{EIT_PREVIOUS_SERIAL:-nothing}}), files in $EIT_CERT_DIR"']
timeout = "5s"
"#,
        out.display()
    )
}
