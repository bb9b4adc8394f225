//! `init`: writes the example configuration to a new file (never over one) or to stdout.

use std::io::Write;
use std::path::Path;

use anyhow::Context;

use super::{failed, usage, CommandResult};

pub(super) fn init(path: &Path) -> CommandResult {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
    // `-` is standard output, as for every other Unix tool (it wrote a file named "-").
    if path == Path::new("-") {
        out_raw!("{}", crate::config::EXAMPLE);
        return Ok(0);
    }
    // A fresh machine has no /etc/eit-certd/: the missing-config error sends people here.
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o755)
            .create(parent)
            .map_err(|e| {
                usage(anyhow::anyhow!(
                    "cannot create the directory {}: {e}",
                    parent.display()
                ))
            })?;
    }
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        // Not secret (no key in it), and `status`/`check` without root read it: 0644, not
        // whatever the umask leaves.
        .mode(0o644)
        .open(path)
        .map_err(|e| {
            let hint = if e.kind() == std::io::ErrorKind::AlreadyExists {
                "; it is left as it is (edit it, or pass --output for a new file)"
            } else {
                ""
            };
            usage(anyhow::anyhow!(
                "cannot create {}: {e}{hint}",
                path.display()
            ))
        })?;
    file.set_permissions(std::fs::Permissions::from_mode(0o644))
        .and_then(|()| file.write_all(crate::config::EXAMPLE.as_bytes()))
        .with_context(|| format!("cannot write {}", path.display()))
        .map_err(failed)?;
    out!(
        "wrote {}; check it with `eit-certd --config {} check`",
        path.display(),
        path.display()
    );
    Ok(0)
}
