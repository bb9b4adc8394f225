//! `can-read`: whether a running process (a consumer after it dropped to its user) could open
//! each path for reading; the shipped hooks ask before they signal.

use super::{failed, usage, CommandResult};
use crate::cli::CanReadArgs;

/// `can-read`: 0 when the process could read every path, 1 naming the first it could not.
pub(super) fn can_read(args: &CanReadArgs) -> CommandResult {
    let creds = crate::report::access::Credentials::of_process(args.pid).map_err(usage)?;
    for path in &args.paths {
        match creds.can_read(path) {
            Ok(()) => {}
            Err(e @ crate::report::access::AccessError::Relative { .. }) => return Err(usage(e)),
            Err(e) => {
                return Err(failed(anyhow::Error::from(e).context(format!(
                    "process {} (uid {}, gid {})",
                    args.pid, creds.uid, creds.gid
                ))))
            }
        }
    }
    Ok(0)
}
