//! Text: what comes from outside (the service's messages, names in its certificates) made fit
//! for one log line or one sd_notify field (a line break there could forge a log line or add a
//! field such as `READY=1`), and the few formats every report shares (hex, RFC 3339 times).

use time::OffsetDateTime;

/// `text` with control characters and every line-breaking whitespace turned into spaces.
pub fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| {
            if c.is_control() || (c.is_whitespace() && c != ' ') {
                ' '
            } else {
                c
            }
        })
        .collect()
}

/// [`one_line`], cut at `limit` characters (an ellipsis marks the cut): what the service
/// sends can be a megabyte long, and must not become a megabyte-long log line or state file.
pub fn bounded(text: &str, limit: usize) -> String {
    let head: String = text.chars().take(limit).collect();
    let mut line = one_line(&head);
    if text.chars().nth(limit).is_some() {
        line.push('…');
    }
    line
}

/// Upper-case hex, as serials are printed (and as `openssl x509 -serial` prints them).
pub fn hex_upper(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02X}")).collect()
}

/// Lower-case hex, as fingerprints are printed (as `sha256sum` prints digests).
pub fn hex_lower(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// RFC 3339 in whole seconds: sub-second digits are noise for certificate times.
pub fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| t.to_string())
}

#[cfg(test)]
mod tests {
    #[test]
    fn breaks_become_spaces() {
        assert_eq!(super::one_line("a\nb\r\tc\u{2028}d\u{7}e"), "a b  c d e");
    }

    #[test]
    fn bounded_cuts_and_marks_the_cut() {
        assert_eq!(super::bounded("abc", 3), "abc");
        assert_eq!(super::bounded("abcd\n", 3), "abc…");
        assert_eq!(super::bounded(&"é".repeat(10), 4), "éééé…");
    }
}
