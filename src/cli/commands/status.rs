//! `status`: the installed set, the daemon and the consumers, as text, JSON or a monitoring
//! plugin's line; a config that does not load still gets a report (made with the defaults).

use std::io::Write;
use std::path::Path;

use time::OffsetDateTime;

use super::{failed, load_config, open_store, render, usage, CommandError, CommandResult};
use crate::cli::StatusArgs;
use crate::config::Config;
use crate::renew::schedule::Policy;
use crate::report::status;

pub(super) fn show_status(config_path: &Path, args: &StatusArgs) -> CommandResult {
    // A config that does not load (a typo saved into it) must not hide the installed set: the
    // report is made with the defaults, says so, and the exit code says the config is broken.
    let (config, config_problem) = match load_config(config_path) {
        Ok(c) => (c, None),
        Err(CommandError { error, .. }) if config_path.exists() => {
            let mut defaults = Config::parse("", config_path).map_err(usage)?;
            // Where the set is, if the broken file still says (a typo elsewhere in it).
            if let Some(dir) = salvage_output_dir(config_path) {
                defaults.output.dir = dir;
            }
            (defaults, Some(crate::text::one_line(&render(&error))))
        }
        Err(f) => return Err(f),
    };
    let store = match open_store(&config) {
        Ok(s) => s,
        Err(f) if args.monitoring_plugin => {
            out!("UNKNOWN: {}", render(&f.error));
            return Ok(3);
        }
        Err(f) => return Err(f),
    };
    let now = OffsetDateTime::now_utc();
    let mut report = status::gather(&store, &Policy::from(&config.certificate), now);
    report.daemon = Some(crate::store::lock::holder(store.dir()));
    report.swanctl = crate::integrations::swanctl::Layout::from_config(&config).map(|l| l.status());
    report.set_ca(&store, &config.certificate, now);
    report.spare = Some(crate::store::spare::Spare::new(store.dir()).state(&config));
    let serial = report.installed.as_ref().map(|i| i.serial.clone());
    report.consumers = crate::report::consumers::survey(&config, serial.as_deref());
    report.assess(config_problem.as_deref());
    if args.json {
        let json = serde_json::to_string_pretty(&report).map_err(failed)?;
        out!("{json}");
    } else {
        out_raw!("{}", report.render_text(now));
    }
    Ok(match (args.monitoring_plugin, &config_problem) {
        (true, Some(_)) => 2,
        (true, None) => report.plugin_exit_code(),
        (false, Some(_)) => 2,
        (false, None) => report.health.exit_code(),
    })
}

/// `output.dir` from a config file that does not load as a whole, when the file is still TOML
/// and the key itself is sound.
fn salvage_output_dir(path: &Path) -> Option<crate::config::OutputDir> {
    let text = crate::files::read_to_string(
        path,
        crate::files::Links::Follow,
        crate::files::limit::CONFIG,
    )
    .ok()?;
    let table: toml::Table = text.parse().ok()?;
    let dir = table.get("output")?.get("dir")?.as_str()?.to_string();
    crate::config::OutputDir::try_from(dir).ok()
}
