//! What `status` shows about the swanctl paths: each one's state, in a word and in words
//! with what to do, and whether it leads to the file of the set `current` points at.

use std::fs;
use std::path::PathBuf;

use serde::Serialize;

use super::{Layout, PathState, Role};

/// One path's state for `status`.
#[derive(Debug, Clone, Serialize)]
pub struct PathStatus {
    /// Which file of the set this path is for.
    pub role: Role,
    /// The swanctl path.
    pub path: PathBuf,
    /// What is there, in one word: [`PathState::name`].
    pub state: &'static str,
    /// The same in words, with what to do.
    pub detail: String,
    /// Whether the path, followed, is the file of the set `current` points at now.
    pub resolves_to_current: bool,
}

impl Layout {
    /// Each path's state for `status`.
    pub fn status(&self) -> Vec<PathStatus> {
        self.inspect()
            .into_iter()
            .map(|(role, path, state)| {
                let current = fs::canonicalize(self.target(role));
                let resolves_to_current = match (fs::canonicalize(&path), current) {
                    (Ok(a), Ok(b)) => a == b,
                    _ => false,
                };
                let detail = match &state {
                    PathState::Linked if resolves_to_current => {
                        format!("-> {}", self.target(role).display())
                    }
                    PathState::Linked => {
                        format!(
                            "-> {}, which does not exist yet (nothing installed)",
                            self.target(role).display()
                        )
                    }
                    PathState::Missing => {
                        "not there yet; created at the next install (`eit-certd renew`)".into()
                    }
                    PathState::Stale { target } => {
                        format!(
                            "eit-certd's link to {}; relinked at the next install",
                            target.display()
                        )
                    }
                    PathState::Foreign { what } => {
                        format!(
                            "{what}, not eit-certd's: {}",
                            if self.replace_existing {
                                "taken over at the next install (replace_existing = true)"
                            } else {
                                "renewals are refused until output.swanctl.replace_existing = true"
                            }
                        )
                    }
                    PathState::Directory => "a directory: move it away".into(),
                    PathState::UnsafeParent { path, what } => {
                        format!("{} is {what}: refused", path.display())
                    }
                };
                PathStatus {
                    role,
                    path,
                    state: state.name(),
                    detail,
                    resolves_to_current,
                }
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::integrations::swanctl::fixture::Fixture;
    use crate::store;
    use std::os::unix::fs::symlink;

    #[test]
    fn status_says_whether_each_path_resolves_to_the_current_set() {
        let f = Fixture::new();
        let l = f.layout("");
        assert!(l
            .status()
            .iter()
            .all(|s| s.state == "missing" && !s.resolves_to_current));
        l.link().unwrap();
        assert!(l
            .status()
            .iter()
            .all(|s| s.state == "linked" && !s.resolves_to_current));
        let generation = f.out.join("generations/000001-x");
        fs::create_dir_all(&generation).unwrap();
        for name in [store::KEY_FILE, store::CERT_FILE, store::CHAIN_FILE] {
            fs::write(generation.join(name), name).unwrap();
        }
        symlink("generations/000001-x", f.out.join("current")).unwrap();
        let status = l.status();
        assert!(status.iter().all(|s| s.resolves_to_current), "{status:#?}");
    }
}
