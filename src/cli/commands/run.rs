//! `run`: the daemon, until it stops; a configuration it cannot start with is a usage error.

use std::path::Path;

use super::{failed, usage, CommandResult};
use crate::cli::RunArgs;

pub(super) async fn run_daemon(config_path: &Path, args: &RunArgs) -> CommandResult {
    let daemon = crate::daemon::Daemon::start(config_path, args.metrics_file.clone())
        .await
        .map_err(|e| if e.is_usage() { usage(e) } else { failed(e) })?;
    daemon.run(std::future::pending()).await.map_err(failed)?;
    Ok(0)
}
