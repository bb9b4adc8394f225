//! Config type errors in words: which key, what it must be, what it got.
//!
//! serde speaks Rust ("invalid type: string \"4096\", expected i64") and names no key; the
//! person editing /etc/eit-certd/config.toml needs "certificate.key_bits must be a whole
//! number, got the string \"4096\"". The key comes from the error's position in the text (the
//! nearest `[table]` header above it, and the `key =` before it on its line, inline tables
//! included); a message this cannot rephrase is passed through unchanged.

/// Rephrases toml's `message` for the value at byte `offset` of `text`.
pub fn explain(text: &str, offset: Option<usize>, message: &str) -> String {
    let Some(offset) = offset.filter(|&o| o <= text.len() && text.is_char_boundary(o)) else {
        return message.to_string();
    };
    let Some((kind, rest)) = message
        .strip_prefix("invalid type: ")
        .map(|r| ("type", r))
        .or_else(|| {
            message
                .strip_prefix("invalid value: ")
                .map(|r| ("value", r))
        })
    else {
        return message.to_string();
    };
    let Some((got, expected)) = rest.split_once(", expected ") else {
        return message.to_string();
    };
    let Some(key) = key_at(text, offset) else {
        return message.to_string();
    };
    let value_text = value_at(text, offset);
    let looks_like_date = value_text
        .get(..10)
        .is_some_and(|d| d.as_bytes().iter().filter(|b| **b == b'-').count() == 2)
        && value_text.starts_with(|c: char| c.is_ascii_digit());
    let got_words = match got.split_once(' ') {
        _ if got == "map" && looks_like_date => format!(
            "an unquoted date: dates are strings here, write {} = \"{}\"",
            key.rsplit('.').next().unwrap_or(&key),
            value_text
        ),
        Some(("string", s)) => format!("the string {s}"),
        Some(("integer", n)) | Some(("floating", n)) => {
            format!(
                "the number {}",
                n.trim_start_matches("point ").trim_matches('`')
            )
        }
        Some(("boolean", b)) => b.trim_matches('`').to_string(),
        _ if got == "map" => "a table".to_string(),
        _ if got == "sequence" => "a list".to_string(),
        _ => got.to_string(),
    };
    let expected_words = match expected {
        "i8" | "i16" | "i32" | "i64" | "u8" | "u16" | "u32" | "u64" | "usize" | "isize"
        | "an integer" => "a whole number",
        "f32" | "f64" | "a float" => "a number",
        "a string" | "a borrowed string" | "string" => "a string in quotes",
        "a boolean" => "true or false",
        "a sequence" => "a list in brackets, [ ... ]",
        e if e.starts_with("struct ") || e == "a map" => "a table",
        e => e,
    };
    let mut out = format!("{key} must be {expected_words}, got {got_words}");
    if kind == "type" && expected_words == "a whole number" && got.starts_with("string ") {
        out.push_str(&format!(
            " (write {} = {}, without quotes)",
            key.rsplit('.').next().unwrap_or(&key),
            got.trim_start_matches("string ").trim_matches('"')
        ));
    }
    out
}

/// The dotted key whose value starts at (or contains) `offset`.
fn key_at(text: &str, offset: usize) -> Option<String> {
    let line_start = text[..offset].rfind('\n').map_or(0, |i| i + 1);
    let mut table: Vec<String> = Vec::new();
    for line in text[..line_start].lines() {
        let t = line.trim();
        if let Some(h) = t.strip_prefix('[') {
            let h = h.trim_start_matches('[');
            if let Some(end) = h.find(']') {
                table = h[..end].split('.').map(|s| s.trim().to_string()).collect();
            }
        }
    }
    // Keys on this line up to the offset; `{` opens an inline table, `}` closes it.
    let prefix = &text[line_start..offset];
    let mut path: Vec<String> = Vec::new();
    let mut pending: Option<String> = None;
    let mut token_start = 0;
    let mut in_string = false;
    for (i, c) in prefix.char_indices() {
        match c {
            '"' => in_string = !in_string,
            _ if in_string => {}
            '=' => {
                pending = Some(prefix[token_start..i].trim().trim_matches('"').to_string());
            }
            '{' => {
                path.extend(pending.take());
                token_start = i + 1;
            }
            '}' => {
                path.pop();
                pending = None;
                token_start = i + 1;
            }
            ',' => {
                pending = None;
                token_start = i + 1;
            }
            _ => {}
        }
    }
    path.extend(pending);
    if path.is_empty() || path.iter().any(|k| k.is_empty()) {
        return None;
    }
    table.extend(path);
    Some(table.join("."))
}

/// The bare value text at `offset`, up to a delimiter.
fn value_at(text: &str, offset: usize) -> &str {
    let rest = &text[offset..];
    let end = rest
        .find(|c: char| c.is_whitespace() || matches!(c, ',' | '}' | ']' | '#'))
        .unwrap_or(rest.len());
    &rest[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_key_and_type_in_words() {
        let text = "[certificate]\nkey_bits = \"4096\"\n";
        let at = text.find("\"4096\"");
        assert_eq!(
            explain(text, at, "invalid type: string \"4096\", expected i64"),
            "certificate.key_bits must be a whole number, got the string \"4096\" \
             (write key_bits = 4096, without quotes)"
        );
        let text = "[metadata]\nversion = 2025-08-26\n";
        let at = text.find("2025");
        assert!(explain(text, at, "invalid type: map, expected a string")
            .starts_with("metadata.version must be a string in quotes, got an unquoted date"));
        let text = "[certificate]\nsubject = { C = 5 }\n";
        let at = text.find('5');
        assert_eq!(
            explain(text, at, "invalid type: integer `5`, expected a string"),
            "certificate.subject.C must be a string in quotes, got the number 5"
        );
        assert_eq!(explain(text, at, "unknown field"), "unknown field");
    }
}
