//! The consumers' configuration snippets: `stunnel-config` and `swanctl-config`.

use std::io::Write;
use std::path::Path;

use super::{config_or_defaults, usage, CommandResult};
use crate::cli::{StunnelConfigArgs, SwanctlConfigArgs};

pub(super) fn stunnel_config(config_path: &Path, args: &StunnelConfigArgs) -> CommandResult {
    let config = config_or_defaults(config_path)?;
    let section = crate::integrations::stunnel::Section {
        name: &args.name,
        accept: &args.accept,
        connect: &args.connect,
        ca_file: &args.ca_file,
        check_host: args.check_host.as_deref(),
        output_dir: &config.output.dir,
    };
    // Checked in full before anything is printed: a half-written section is worse than none.
    let text = section.render().map_err(usage)?;
    out_raw!("{text}");
    Ok(0)
}

pub(super) fn swanctl_config(config_path: &Path, args: &SwanctlConfigArgs) -> CommandResult {
    let config = config_or_defaults(config_path)?;
    let layout = match crate::integrations::swanctl::Layout::from_config(&config) {
        Some(layout) => layout,
        None => {
            // Not `eprintln!`: a stderr that cannot take the note (2>/dev/full, a reader that went
            // away) must not panic the command, which printed nothing yet (as in `main`).
            let _ = writeln!(
                std::io::stderr(),
                "eit-certd: note: {} has no [output.swanctl] table, so eit-certd does not keep \
                 the certificate below current yet; add one (see README, \"Zonal shares\")",
                config_path.display()
            );
            let mut with_table = config.clone();
            with_table.output.swanctl = Some(Default::default());
            crate::integrations::swanctl::Layout::from_config(&with_table).expect("table set")
        }
    };
    let connection = crate::integrations::swanctl::Connection {
        remote: args.remote,
        name: args
            .name
            .clone()
            .unwrap_or_else(|| crate::integrations::swanctl::default_connection_name(args.remote)),
        cert: layout.path(crate::integrations::swanctl::Role::Cert),
    };
    out_raw!("{}", connection.render(layout.dir()));
    Ok(0)
}
