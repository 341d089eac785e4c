//! The template as YAML, read alike by CloudFormation and its linters.
//!
//! `yaml_serde` writes YAML 1.2, where `OFF`, `yes` or `2010-09-09` are plain strings, and
//! quotes only what YAML 1.2 would read otherwise. CloudFormation and cfn-lint read YAML 1.1,
//! where those are a boolean and a date: `FlexibleTimeWindow: {Mode: OFF}` would arrive as
//! `false`. So every plain scalar that YAML 1.1 reads as something other than a string is
//! quoted. The emitter writes no line-folded plain scalars (its width is unlimited), so each
//! plain scalar is whole on its line: a sequence entry, a mapping key or a mapping value.

use crate::error::{Error, Result};
use serde_json::Value;

/// The value as YAML that YAML 1.1 readers read the same.
pub fn to_yaml(value: &Value) -> Result<String> {
    let text = yaml_serde::to_string(value)
        .map_err(|e| Error::internal(format!("cannot write the template as YAML: {e}")))?;
    Ok(quote_yaml11_scalars(&text))
}

/// Quotes the plain scalars YAML 1.1 would not read as strings (see the module's comment).
pub fn quote_yaml11_scalars(yaml: &str) -> String {
    let mut out = String::with_capacity(yaml.len() + 64);
    // The indentation of a line that opened a block scalar (`|`), whose deeper lines are text.
    let mut block_scalar_of: Option<usize> = None;
    for line in yaml.lines() {
        let indent = line.len() - line.trim_start_matches(' ').len();
        if let Some(parent) = block_scalar_of {
            if line.trim().is_empty() || indent > parent {
                out.push_str(line);
                out.push('\n');
                continue;
            }
            block_scalar_of = None;
        }
        let (fixed, opens_block_scalar) = quote_line(line, indent);
        if opens_block_scalar {
            block_scalar_of = Some(indent);
        }
        out.push_str(&fixed);
        out.push('\n');
    }
    out
}

/// One line with its plain key and value quoted where needed; whether it opens a block scalar.
fn quote_line(line: &str, indent: usize) -> (String, bool) {
    let mut head = line[..indent].to_string();
    let mut rest = &line[indent..];
    while let Some(after) = rest.strip_prefix("- ") {
        head.push_str("- ");
        rest = after;
    }
    let (key, value) = match split_key(rest) {
        Some((key, value)) => (Some(key), value),
        None => (None, rest),
    };
    if let Some(key) = key {
        head.push_str(&quoted_if_needed(key));
        head.push(':');
        if !value.is_empty() {
            head.push(' ');
        }
    }
    let opens_block_scalar = value.starts_with('|') || value.starts_with('>');
    head.push_str(&quoted_if_needed(value));
    (head, opens_block_scalar)
}

/// A mapping key and the rest of the line, for `key: value` and `key:` lines; `None` for lines
/// of other shapes (a sequence entry's scalar, a flow collection, a complex key).
fn split_key(rest: &str) -> Option<(&str, &str)> {
    let key_end = match rest.chars().next() {
        Some('?' | '[' | '{') | None => return None,
        Some(quote @ ('\'' | '"')) => quoted_end(rest, quote)?,
        Some(_) => {
            // A plain scalar holds no `: ` and does not end with `:`.
            if let Some(key) = rest.strip_suffix(':') {
                return (!key.contains(": ")).then_some((key, ""));
            }
            return rest.split_once(": ");
        }
    };
    let (key, after) = rest.split_at(key_end);
    if after == ":" {
        return Some((key, ""));
    }
    after.strip_prefix(": ").map(|value| (key, value))
}

/// The index just past the closing quote of the quoted scalar `s` starts with.
fn quoted_end(s: &str, quote: char) -> Option<usize> {
    let bytes = s.as_bytes();
    let mut i = 1;
    while i < bytes.len() {
        match (bytes[i], quote) {
            (b'\\', '"') => i += 2,
            (b'"', '"') => return Some(i + 1),
            (b'\'', '\'') if bytes.get(i + 1) == Some(&b'\'') => i += 2,
            (b'\'', '\'') => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

fn quoted_if_needed(scalar: &str) -> String {
    if is_plain(scalar) && yaml11_reads_as_non_string(scalar) {
        format!("'{}'", scalar.replace('\'', "''"))
    } else {
        scalar.to_string()
    }
}

/// Not quoted, not a flow collection, alias, anchor, tag or block scalar.
fn is_plain(scalar: &str) -> bool {
    !scalar.is_empty() && !scalar.starts_with(['\'', '"', '[', '{', '*', '&', '!', '|', '>', '#'])
}

/// What YAML 1.1 resolves to a boolean, a number or a date, and YAML 1.2 (hence `yaml_serde`,
/// which quotes strings that look like YAML 1.2 values) does not: `yes`/`no`/`on`/`off` in their
/// spellings, `y`/`n`, the merge key, and anything starting like a number or a date that is not a
/// number written from a JSON number. Quoting more than needed is harmless.
fn yaml11_reads_as_non_string(scalar: &str) -> bool {
    const WORDS: [&str; 18] = [
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
        "OFF", "<<", "=",
    ];
    if WORDS.contains(&scalar) {
        return true;
    }
    if scalar.parse::<f64>().is_ok() {
        // A number the template holds as a number (yaml_serde quotes strings that read as numbers).
        return false;
    }
    let unsigned = scalar.strip_prefix(['-', '+']).unwrap_or(scalar);
    let unsigned = unsigned.strip_prefix('.').unwrap_or(unsigned);
    unsigned.starts_with(|c: char| c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn yaml11_booleans_and_dates_are_quoted() {
        let template = json!({
            "AWSTemplateFormatVersion": "2010-09-09",
            "Mode": "OFF",
            "Count": 26,
            "Share": 0.2,
            "Enabled": true,
            "Quoted": "1",
            "Tags": [{ "Key": "on", "Value": "yes" }, { "Key": "team", "Value": "growth" }],
            "no": ["n", "12:30", "s3:GetObject", "it's"],
            "2024": "no",
        });
        let yaml = to_yaml(&template).unwrap();
        for expected in [
            "AWSTemplateFormatVersion: '2010-09-09'",
            "Mode: 'OFF'",
            "Count: 26",
            "Share: 0.2",
            "Enabled: true",
            "Quoted: '1'",
            "- Key: 'on'",
            "  Value: 'yes'",
            "- Key: team",
            "  Value: growth",
            "'no':",
            "- 'n'",
            "- '12:30'",
            "- s3:GetObject",
            "- it's",
            "'2024': 'no'",
        ] {
            assert!(
                yaml.lines().any(|l| l == expected),
                "no line `{expected}` in:\n{yaml}"
            );
        }
        let back: Value = yaml_serde::from_str(&yaml).unwrap();
        assert_eq!(back, template);
    }

    #[test]
    fn block_scalars_are_left_alone() {
        let yaml = quote_yaml11_scalars("a: |-\n  no\n  yes\nb: no\n");
        assert_eq!(yaml, "a: |-\n  no\n  yes\nb: 'no'\n");
    }
}
