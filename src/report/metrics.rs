//! The Prometheus textfile (node_exporter's textfile collector format), rewritten atomically
//! after every attempt so a scrape never sees half a file. `eit_certd_build_info` is always
//! there: a fleet's alert rules find the instances without it (never installed, never started).

use std::fmt::Write;
use std::path::Path;

use crate::files::{write_atomic, WriteError};
use crate::pki::ca_expiry::CaExpiry;
use crate::pki::validate::LeafInfo;
use crate::store::state::State;

/// Renders the metrics for `state`, the installed leaf, if any, and the CAs above it.
pub fn render(state: &State, leaf: Option<&LeafInfo>, ca: &CaExpiry) -> String {
    let mut out = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, samples: &[(&str, f64)]| {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} {kind}");
        for (labels, value) in samples {
            let _ = writeln!(out, "{name}{labels} {value}");
        }
    };
    metric(
        "eit_certd_build_info",
        "gauge",
        "Always 1; the version of eit-certd that wrote this file.",
        &[(
            &format!("{{version=\"{}\"}}", label_value(env!("CARGO_PKG_VERSION"))),
            1.0,
        )],
    );
    if let Some(leaf) = leaf {
        metric(
            "eit_certd_cert_not_after_seconds",
            "gauge",
            "notAfter of the installed certificate, Unix time.",
            &[("", leaf.not_after.unix_timestamp() as f64)],
        );
    }
    let ca_samples: Vec<(String, f64)> = ca
        .roles()
        .into_iter()
        .filter_map(|(role, ca)| {
            ca.map(|c| {
                (
                    format!("{{role=\"{role}\"}}"),
                    c.not_after.unix_timestamp() as f64,
                )
            })
        })
        .collect();
    if !ca_samples.is_empty() {
        let samples: Vec<(&str, f64)> = ca_samples.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(
            "eit_certd_ca_not_after_seconds",
            "gauge",
            "notAfter of the intermediate CA installed with the certificate and of the trust \
             anchor it chains to, Unix time.",
            &samples,
        );
    }
    metric(
        "eit_certd_renewals_total",
        "counter",
        "Renewal attempts by result.",
        &[
            ("{result=\"ok\"}", state.renewals.ok as f64),
            ("{result=\"error\"}", state.renewals.error as f64),
        ],
    );
    if let Some(a) = &state.last_attempt {
        metric(
            "eit_certd_last_attempt_timestamp_seconds",
            "gauge",
            "When the last renewal attempt ended, Unix time.",
            &[("", a.at.unix_timestamp() as f64)],
        );
    }
    metric(
        "eit_certd_consecutive_failures",
        "gauge",
        "Renewal attempts that failed since the last success (0 after a success).",
        &[("", f64::from(state.consecutive_failures))],
    );
    metric(
        "eit_certd_hook_failures_total",
        "counter",
        "Hook runs that failed or timed out.",
        &[("", state.hook_failures as f64)],
    );
    let hook_samples: Vec<(String, f64)> = state
        .hooks
        .iter()
        .map(|h| {
            (
                format!("{{hook=\"{}\"}}", label_value(&h.name)),
                if h.ok { 1.0 } else { 0.0 },
            )
        })
        .collect();
    if !hook_samples.is_empty() {
        let samples: Vec<(&str, f64)> =
            hook_samples.iter().map(|(l, v)| (l.as_str(), *v)).collect();
        metric(
            "eit_certd_hook_last_result",
            "gauge",
            "1 if the hook's last run succeeded, 0 if it failed or timed out.",
            &samples,
        );
    }
    out
}

/// A label value in the text format: backslash, double quote and newline escaped (hook names
/// come back from state.json, which anyone who could write it chose).
fn label_value(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

pub fn write(
    path: &Path,
    state: &State,
    leaf: Option<&LeafInfo>,
    ca: &CaExpiry,
) -> Result<(), WriteError> {
    write_atomic(path, render(state, leaf, ca).as_bytes(), 0o644)
}

/// Saves `state` (state.json) and rewrites the metrics textfile, if one is configured, from it
/// and the installed set: after every change, so that `status` and node_exporter never read an
/// older story than the log tells. Failures are logged; the next change writes again.
pub fn persist(state: &State, renewer: &crate::renew::Renewer, metrics: Option<&Path>) {
    let store = renewer.store();
    if let Err(e) = state.save(store.dir()) {
        tracing::warn!("cannot write state.json: {e}");
    }
    if let Some(path) = metrics {
        // One read of the installed set for both: this runs after every hook.
        let current = store.read_current().ok().flatten();
        let ca = current
            .as_ref()
            .map(|set| set.ca_expiry(renewer.anchors()))
            .unwrap_or_default();
        let leaf = current.map(|set| set.leaf);
        if let Err(e) = write(path, state, leaf.as_ref(), &ca) {
            tracing::warn!("cannot write the metrics file: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    #[test]
    fn renders_the_documented_metrics() {
        let mut s = State::default();
        s.record_failure(datetime!(2026-01-01 00:00 UTC), "x");
        s.record_success(datetime!(2026-01-01 00:01 UTC), "AB");
        s.hook_failures = 2;
        let leaf = LeafInfo {
            not_before: datetime!(2026-01-01 00:00 UTC),
            not_after: datetime!(2026-01-01 01:00 UTC),
            serial_hex: String::new(),
            fingerprint_sha256: String::new(),
            subject: String::new(),
            issuer: String::new(),
            public_key_der: vec![],
        };
        let ca = CaExpiry {
            intermediate: Some(crate::pki::validate::CaInfo {
                subject: "CN=i".into(),
                fingerprint_sha256: String::new(),
                not_after: datetime!(2030-01-01 00:00 UTC),
                source: None,
            }),
            anchor: None,
        };
        let text = render(&s, Some(&leaf), &ca);
        assert!(
            text.contains("eit_certd_ca_not_after_seconds{role=\"intermediate\"} 1893456000\n"),
            "{text}"
        );
        assert!(!text.contains("role=\"anchor\""), "{text}");
        assert!(
            text.contains("eit_certd_cert_not_after_seconds 1767229200\n"),
            "{text}"
        );
        assert!(text.contains("eit_certd_renewals_total{result=\"ok\"} 1\n"));
        assert!(text.contains("eit_certd_renewals_total{result=\"error\"} 1\n"));
        assert!(text.contains("eit_certd_last_attempt_timestamp_seconds 1767225660\n"));
        assert!(text.contains("eit_certd_hook_failures_total 2\n"));
        assert!(text.contains("# TYPE eit_certd_renewals_total counter"));
        assert!(text.contains(&format!(
            "eit_certd_build_info{{version=\"{}\"}} 1\n",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(
            text.contains("eit_certd_consecutive_failures 0\n"),
            "{text}"
        );
    }

    #[test]
    fn build_info_and_failures_without_any_attempt_and_hook_names_escaped() {
        let mut s = State::default();
        s.record_failure(datetime!(2026-01-01 00:00 UTC), "x");
        s.record_failure(datetime!(2026-01-01 00:01 UTC), "x");
        for (name, ok) in [("reload-stunnel", true), ("a\"b\\c\nd", false)] {
            s.record_hook(crate::store::state::HookResult {
                name: name.into(),
                at: datetime!(2026-01-01 00:01 UTC),
                ok,
                exit_code: None,
                duration_ms: 0,
                serial: String::new(),
                detail: String::new(),
            });
        }
        let text = render(&s, None, &CaExpiry::default());
        assert!(text.contains("eit_certd_build_info{version="), "{text}");
        assert!(
            text.contains("eit_certd_consecutive_failures 2\n"),
            "{text}"
        );
        assert!(
            text.contains("eit_certd_hook_last_result{hook=\"reload-stunnel\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("eit_certd_hook_last_result{hook=\"a\\\"b\\\\c\\nd\"} 0\n"),
            "{text}"
        );
    }
}
