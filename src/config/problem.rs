//! A finding about the configuration or what it points at ([`Problem`]), named by the setting
//! an operator edits to fix it ([`Setting`]). `check` reports them, `run` refuses to start on
//! some, and each integration checks its own part of the file.

use std::fmt;

/// Where in the config file a problem is: what an operator looks for in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Setting {
    /// A key, dotted as written in the file (`output.dir`, `output.swanctl.cert`).
    Key(&'static str),
    /// One element of a list (`certificate.trust_anchors[1]`).
    Element { key: &'static str, index: usize },
    /// A hook's table (`hooks.<name>`), or one key of it (`hooks.<name>.command`).
    Hook {
        name: String,
        key: Option<&'static str>,
    },
    /// The config file itself (its owner, mode or directory).
    File,
}

impl From<&'static str> for Setting {
    fn from(key: &'static str) -> Setting {
        Setting::Key(key)
    }
}

impl fmt::Display for Setting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Setting::Key(key) => f.write_str(key),
            Setting::Element { key, index } => write!(f, "{key}[{index}]"),
            Setting::Hook { name, key: None } => write!(f, "hooks.{name}"),
            Setting::Hook {
                name,
                key: Some(key),
            } => write!(f, "hooks.{name}.{key}"),
            Setting::File => f.write_str("config file"),
        }
    }
}

/// One problem: the setting it is about, what is wrong, and how to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub setting: Setting,
    /// What is wrong, naming the file or the value.
    pub what: String,
    /// What to do about it.
    pub fix: String,
}

impl Problem {
    pub fn new(
        setting: impl Into<Setting>,
        what: impl Into<String>,
        fix: impl Into<String>,
    ) -> Problem {
        Problem {
            setting: setting.into(),
            what: what.into(),
            fix: fix.into(),
        }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}; fix: {}", self.setting, self.what, self.fix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_read_as_they_are_written_in_the_file() {
        let shown = [
            Setting::Key("output.dir"),
            Setting::Element {
                key: "certificate.trust_anchors",
                index: 1,
            },
            Setting::Hook {
                name: "stunnel".into(),
                key: None,
            },
            Setting::Hook {
                name: "stunnel".into(),
                key: Some("command"),
            },
            Setting::File,
        ]
        .map(|s| s.to_string());
        assert_eq!(
            shown,
            [
                "output.dir",
                "certificate.trust_anchors[1]",
                "hooks.stunnel",
                "hooks.stunnel.command",
                "config file"
            ]
        );
    }
}
