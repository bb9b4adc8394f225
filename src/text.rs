//! Text from outside (the service's messages, names in its certificates) made fit for one log
//! line or one sd_notify field: a line break there could forge a log line or add a field such
//! as `READY=1`.

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
