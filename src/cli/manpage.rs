//! `eit-certd man`: one man page, eit-certd(1), with every subcommand's synopsis and options,
//! and the sections an operator looks for: exit status, files, signals, environment, the
//! configuration keys (read from examples/config.toml, the file `init` writes, so the page and
//! the example cannot drift apart), examples, and only references to pages that exist.
//!
//! clap_mangen renders the title, name, synopsis, description and global options; the rest
//! is written here (its subcommand section would point at `eit-certd-<cmd>(1)` pages that are
//! not shipped).

use std::io::Write;

/// Renders the page as roff.
pub fn render(cmd: clap::Command, w: &mut dyn Write) -> std::io::Result<()> {
    let man = clap_mangen::Man::new(cmd.clone());
    man.render_title(w)?;
    man.render_name_section(w)?;
    man.render_synopsis_section(w)?;
    man.render_description_section(w)?;
    man.render_options_section(w)?;
    commands(&cmd, w)?;
    w.write_all(STATIC_SECTIONS.as_bytes())?;
    configuration(crate::config::EXAMPLE, w)?;
    w.write_all(EXAMPLES.as_bytes())?;
    Ok(())
}

/// Roff-safe text: backslashes, and a leading `.` or `'` (which would start a request).
fn esc(s: &str) -> String {
    let mut s = s.replace('\\', "\\e").replace('-', "\\-");
    // groff reads ASCII; anything else (an ellipsis, a dash) as a named code point.
    if !s.is_ascii() {
        s = s
            .chars()
            .map(|c| {
                if c.is_ascii() {
                    c.to_string()
                } else {
                    format!("\\[u{:04X}]", c as u32)
                }
            })
            .collect();
    }
    if s.starts_with('.') || s.starts_with('\'') {
        format!("\\&{s}")
    } else {
        s
    }
}

fn commands(cmd: &clap::Command, w: &mut dyn Write) -> std::io::Result<()> {
    writeln!(w, ".SH COMMANDS")?;
    for sub in cmd.get_subcommands().filter(|s| !s.is_hide_set()) {
        let name = sub.get_name();
        if name == "help" {
            continue;
        }
        let mut sub = sub.clone().bin_name(format!("eit-certd {name}"));
        let usage = sub.render_usage().to_string();
        let usage = usage.trim_start_matches("Usage:").trim();
        writeln!(w, ".SS \"{}\"", esc(usage))?;
        if let Some(about) = sub.get_long_about().or(sub.get_about()) {
            writeln!(w, "{}", esc(&about.to_string()))?;
        }
        for arg in sub.get_arguments() {
            let id = arg.get_id().as_str();
            if arg.is_hide_set() || arg.is_global_set() || id == "help" || id == "version" {
                continue;
            }
            let mut head = match (arg.get_long(), arg.get_short()) {
                (Some(l), Some(s)) => format!("\\fB\\-{s}\\fR, \\fB\\-\\-{}\\fR", esc(l)),
                (Some(l), None) => format!("\\fB\\-\\-{}\\fR", esc(l)),
                (None, Some(s)) => format!("\\fB\\-{s}\\fR"),
                (None, None) => String::new(),
            };
            let takes_value = arg.get_num_args().is_some_and(|n| n.takes_values());
            if takes_value {
                let value = arg
                    .get_value_names()
                    .and_then(|v| v.first())
                    .map(|v| v.to_string())
                    .unwrap_or_else(|| id.to_uppercase());
                if !head.is_empty() {
                    head.push(' ');
                }
                head.push_str(&format!("\\fI{}\\fR", esc(&value)));
            }
            writeln!(w, ".TP\n{head}")?;
            if let Some(help) = arg.get_long_help().or(arg.get_help()) {
                writeln!(w, "{}", esc(&help.to_string()))?;
            }
            let values: Vec<String> = arg
                .get_possible_values()
                .iter()
                .filter(|v| !v.is_hide_set())
                .map(|v| v.get_name().to_string())
                .collect();
            if !values.is_empty() && values.len() <= 30 {
                writeln!(w, ".br\nOne of: {}.", esc(&values.join(", ")))?;
            }
        }
    }
    Ok(())
}

/// The CONFIGURATION section: each table of the example file, each key with its default (or
/// example) value and the comment above it.
fn configuration(example: &str, w: &mut dyn Write) -> std::io::Result<()> {
    writeln!(w, ".SH CONFIGURATION")?;
    writeln!(
        w,
        "TOML, by default /etc/eit\\-certd/config.toml. Every key is optional; the values shown \
         are the defaults (or, for keys that are off by default, an example). Durations are \
         written like \"45m\", \"90s\" or \"1h 30m\". \\fBeit\\-certd init\\fR writes this file, \
         with the same comments."
    )?;
    let mut comment: Vec<String> = Vec::new();
    for line in example.lines() {
        let trimmed = line.trim();
        let body = trimmed.trim_start_matches('#').trim();
        if let Some(table) = table_header(body) {
            writeln!(w, ".SS \"{}\"", esc(&table))?;
            if !comment.is_empty() && trimmed.starts_with('#') {
                // A commented-out table: the lines above it explain it.
                writeln!(w, "{}", esc(&comment.join(" ")))?;
            }
            comment.clear();
            continue;
        }
        if let Some((key, value, note)) = key_line(body) {
            writeln!(w, ".TP\n\\fB{}\\fR = {}", esc(key), esc(value))?;
            let mut text = comment.join(" ");
            if let Some(note) = note {
                if !text.is_empty() {
                    text.push(' ');
                }
                text.push_str(note);
            }
            if !text.is_empty() {
                writeln!(w, "{}", esc(&text))?;
            }
            comment.clear();
            continue;
        }
        if trimmed.is_empty() {
            comment.clear();
        } else if trimmed.starts_with('#') {
            comment.push(body.to_string());
        }
    }
    Ok(())
}

/// `[table]` or `[[array]]`, commented out or not.
fn table_header(body: &str) -> Option<String> {
    let inner = body
        .strip_prefix('[')?
        .split(']')
        .next()?
        .trim_start_matches('[');
    let ok = !inner.is_empty()
        && inner
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '_' || c == '.');
    let end = body.rfind(']')?;
    ok.then(|| body[..=end].to_string())
}

/// `key = value  # note`, commented out or not; `None` for prose.
pub fn key_line(body: &str) -> Option<(&str, &str, Option<&str>)> {
    let (key, rest) = body.split_once(" = ")?;
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_lowercase() || c == '_') {
        return None;
    }
    // A trailing comment starts with "  #" (values here hold no such text).
    match rest.split_once("  #") {
        Some((value, note)) => Some((key, value.trim(), Some(note.trim_start_matches('#').trim()))),
        None => Some((key, rest.trim(), None)),
    }
}

const STATIC_SECTIONS: &str = r#".SH HEALTH
\fBstatus\fR (text, \fB\-\-json\fR, exit code) and the daemon's status line in
\fBsystemctl status\fR share one model:
.TP
.B valid
The installed set is usable and not yet due.
.TP
.B due
Usable; its renewal time has come (a renewal is pending or being retried).
.TP
.B degraded
Usable, but something that keeps it in use or fresh is wrong: a hook or a consumer failed for
the installed set, hooks are still owed, or the config file on disk does not load (a running
daemon keeps its configuration; the next start fails). \fB\-\-json\fR lists why under
\fBdegraded\fR.
.TP
.BR expired ", " missing ", " broken
No usable set (broken: unreadable, or the key does not match the certificate).
.PP
Apart from the health, \fBstatus\fR says whether a daemon holds the output directory's lock
(\fBdaemon.state\fR: \fBheld\fR with its \fBpid\fR, \fBfree\fR, \fBno_lock_file\fR), from the
kernel's table of locks, so that a stale pid in \fI.lock\fR is not taken for a running daemon.
.SH EXIT STATUS
.TP
.B 0
Success; for \fBstatus\fR: the installed certificate is valid.
.TP
.B 1
The operation failed (a renewal, an online check, a request to the service), or \fBrenew\fR
installed a set but a hook failed; for \fBstatus\fR: valid, but a renewal is due, or degraded.
.TP
.B 2
Usage or configuration error: a bad option, a bad or missing config file, \fBcheck\fR found
problems, \fBinit\fR would overwrite a file; for \fBstatus\fR: the config file does not load
(the installed set is shown all the same).
.TP
.B 3
\fBstatus\fR only: no usable certificate (expired, missing, or broken: the key does not match
the certificate).
.PP
\fBstatus \-\-monitoring\-plugin\fR exits with the monitoring-plugin convention instead: 0 OK,
1 WARNING (due, degraded, or no daemon holds the lock), 2 CRITICAL (expired, missing, broken,
or the config does not load), 3 UNKNOWN (the output directory cannot be read).
.SH FILES
.TP
.I /etc/eit\-certd/config.toml
The configuration (see CONFIGURATION); written by \fBeit\-certd init\fR.
.TP
.I /var/lib/eit\-certd/current/
The installed set (the default \fBoutput.dir\fR): \fIkey.pem\fR (0600, or 0640 with
\fBoutput.group\fR), \fIcert.pem\fR, \fIchain.pem\fR, \fIfullchain.pem\fR, \fIcombined.pem\fR.
\fIcurrent\fR is a symlink to \fIgenerations/<id>/\fR, swapped atomically; TLS clients read
these paths.
.TP
.I /var/lib/eit\-certd/state.json
The last attempt, its error, the hooks' results and the next renewal, as \fBstatus\fR shows.
.TP
.I /usr/lib/eit\-certd/hooks/
The shipped hooks: \fIstunnel\-reload\fR, \fItlshd\-restart\fR, \fInfs\-remount\fR,
\fIswanctl\-reload\fR.
.TP
.I /usr/lib/systemd/system/eit\-certd.service
The unit (Type=notify: ready once a valid certificate is installed).
.SH SIGNALS
The daemon (\fBeit\-certd run\fR) handles:
.TP
.B SIGHUP
Re-read the configuration (\fBsystemctl reload eit\-certd\fR). The daemon also re-reads it by
itself when the file is saved. It logs "configuration reloaded" when it took the file, or
"keeping the running configuration" with the reason.
.TP
.B SIGUSR1
Renew now (\fBsystemctl kill \-s USR1 eit\-certd\fR).
.TP
.BR SIGTERM ", " SIGINT
Stop within 2 seconds; the installed set is left as it is.
.SH ENVIRONMENT
.TP
.B EIT_CERTD_CONFIG
The config file, when \fB\-\-config\fR is not given.
.TP
.B RUST_LOG
Log filter, e.g. \fBeit_certd=debug\fR (overrides \fB\-v\fR and \fB\-q\fR).
.TP
.B NO_COLOR
When set (and not empty), logs have no colour. Without it, logs are coloured only when stderr
is a terminal.
.TP
.B JOURNAL_STREAM
Set by systemd when stderr goes to the journal: log lines then carry no timestamp of their
own (journald adds one).
.TP
.B TMPDIR
Where \fBeit\-certd demo\fR makes its directory.
.PP
Hooks run with only PATH, the hook's configured \fBenv\fR, and \fBEIT_CERT_DIR\fR,
\fBEIT_KEY_FILE\fR, \fBEIT_CERT_FILE\fR, \fBEIT_CHAIN_FILE\fR, \fBEIT_FULLCHAIN_FILE\fR,
\fBEIT_COMBINED_FILE\fR, \fBEIT_SERIAL\fR, \fBEIT_PREVIOUS_SERIAL\fR, \fBEIT_NOT_AFTER\fR and
\fBEIT_FINGERPRINT_SHA256\fR. Never a token.
"#;

const EXAMPLES: &str = r#".SH EXAMPLES
A tour against the built-in emulator, with nothing installed:
.PP
.RS
.nf
eit\-certd demo \-\-keep
.fi
.RE
.PP
First setup on an instance:
.PP
.RS
.nf
sudo eit\-certd init
sudo editor /etc/eit\-certd/config.toml
sudo eit\-certd check \-\-online
sudo systemctl enable \-\-now eit\-certd
sudo eit\-certd status
.fi
.RE
.PP
Monitoring: \fBeit\-certd status \-\-json\fR, or Prometheus metrics with
\fBoutput.metrics_file\fR.
.SH SEE ALSO
.BR stunnel (8),
.BR tlshd (8),
.BR swanctl (8),
.BR systemctl (1),
.BR journalctl (1),
.BR openssl (1);
/usr/share/doc/eit\-certd/README.md
"#;
