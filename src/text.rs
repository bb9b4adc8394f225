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

#[cfg(test)]
mod tests {
    #[test]
    fn breaks_become_spaces() {
        assert_eq!(super::one_line("a\nb\r\tc\u{2028}d\u{7}e"), "a b  c d e");
    }
}
