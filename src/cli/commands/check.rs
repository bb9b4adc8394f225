//! `check`: the configuration file and its values, and with `--online` a round trip to the
//! service.

use std::io::Write;
use std::path::Path;

use super::{failed, load_config, usage, CommandResult};
use crate::cli::CheckArgs;

pub(super) async fn check(config_path: &Path, args: &CheckArgs) -> CommandResult {
    let config = load_config(config_path)?;
    let mut problems = crate::report::check::config_file(config_path);
    problems.extend(crate::report::check::offline(&config));
    for p in &problems {
        out!("problem: {p}");
    }
    if !problems.is_empty() {
        return Err(usage(anyhow::anyhow!(
            "{}: {} problem(s) found",
            config_path.display(),
            problems.len()
        )));
    }
    out!("{}: configuration OK", config_path.display());
    if args.online {
        let report = crate::report::check::online(&config)
            .await
            .map_err(failed)?;
        out!("{report}");
    }
    Ok(0)
}
