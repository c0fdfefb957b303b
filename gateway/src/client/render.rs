//! Text the command line prints, made safe for where it goes. Everything shown comes from a
//! gateway or a log file, so any of it may be hostile:
//!
//! - [`terminal`]: control characters (C0, DEL, C1 — ESC starts the ANSI/OSC sequences that
//!   recolour, retitle or hyperlink a terminal) and format characters (bidirectional overrides
//!   and isolates, zero-width characters; CVE-2021-42574) are replaced by U+FFFD.
//! - [`csv_cell`]: as for the terminal, then OWASP's CSV-injection rule: a cell starting with
//!   `=`, `+`, `-`, `@` (or their full-width forms) is prefixed with `'` so spreadsheets read it
//!   as text, never as a formula; quoted per RFC 4180 where needed.
//! - [`json`]: serde_json escapes C0 controls, quotes and backslashes; DEL, C1 controls and
//!   format characters are escaped here as `\uXXXX` too, so the document prints safely.

use std::borrow::Cow;

use crate::base::text::is_format;

/// What replaces an unsafe character.
const REPLACEMENT: char = '\u{FFFD}';

fn unsafe_char(c: char) -> bool {
    c.is_control() || is_format(c)
}

/// `text` with every control and format character replaced by U+FFFD.
pub(crate) fn terminal(text: &str) -> Cow<'_, str> {
    if text.chars().any(unsafe_char) {
        Cow::Owned(
            text.chars()
                .map(|c| if unsafe_char(c) { REPLACEMENT } else { c })
                .collect(),
        )
    } else {
        Cow::Borrowed(text)
    }
}

/// One CSV cell, safe for spreadsheets (OWASP "CSV Injection") and terminals.
pub(crate) fn csv_cell(cell: &str) -> String {
    let text = terminal(cell);
    let formula = text.starts_with([
        '=', '+', '-', '@', '\u{FF1D}', '\u{FF0B}', '\u{FF0D}', '\u{FF20}',
    ]);
    let text = if formula {
        format!("'{text}")
    } else {
        text.into_owned()
    };
    if text.contains([',', '"']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text
    }
}

/// `value` as pretty JSON in which every control and format character is `\u`-escaped.
pub(crate) fn json(value: &serde_json::Value) -> String {
    let text = serde_json::to_string_pretty(value).unwrap_or_default();
    // Outside strings JSON holds only ASCII punctuation, digits, letters and whitespace, so
    // every character escaped here is inside a string, where `\uXXXX` means the same.
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if unsafe_char(c) && !matches!(c, '\n' | ' ') {
            let mut units = [0u16; 2];
            for unit in c.encode_utf16(&mut units) {
                out.push_str(&format!("\\u{unit:04x}"));
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_text_loses_escape_sequences_and_bidi_controls() {
        let cases = [
            ("plain text", "plain text"),
            ("\u{1b}[31mred\u{1b}[0m", "\u{FFFD}[31mred\u{FFFD}[0m"),
            (
                "\u{1b}]8;;https://evil.example\u{7}link\u{1b}]8;;\u{7}",
                "\u{FFFD}]8;;https://evil.example\u{FFFD}link\u{FFFD}]8;;\u{FFFD}",
            ),
            ("\u{9b}2J", "\u{FFFD}2J"), // C1 CSI
            ("a\rb\nc\td\u{7f}", "a\u{FFFD}b\u{FFFD}c\u{FFFD}d\u{FFFD}"),
            (
                "abc\u{202E}fed\u{2066}x\u{2069}",
                "abc\u{FFFD}fed\u{FFFD}x\u{FFFD}",
            ),
            ("zero\u{200B}width\u{FEFF}", "zero\u{FFFD}width\u{FFFD}"),
            ("Bjørn Ødegård", "Bjørn Ødegård"),
        ];
        for (input, expected) in cases {
            assert_eq!(terminal(input), expected, "{input:?}");
        }
    }

    /// OWASP CSV injection: cells that a spreadsheet would read as a formula start with `'`.
    #[test]
    fn csv_cells_never_start_a_formula() {
        let cases = [
            (
                "=HYPERLINK(\"https://evil.example\",\"x\")",
                "\"'=HYPERLINK(\"\"https://evil.example\"\",\"\"x\"\")\"",
            ),
            (
                "@SUM(1+1)*cmd|' /C calc'!A0",
                "'@SUM(1+1)*cmd|' /C calc'!A0",
            ),
            ("+1-2", "'+1-2"),
            ("-2+3", "'-2+3"),
            ("\u{FF1D}1+1", "'\u{FF1D}1+1"),
            ("\tstarts with a tab", "\u{FFFD}starts with a tab"),
            ("\r=1+1", "\u{FFFD}=1+1"),
            ("a,b", "\"a,b\""),
            ("say \"hi\"", "\"say \"\"hi\"\"\""),
            ("disclosure_refused", "disclosure_refused"),
            ("2026-01-01T00:00:00Z", "2026-01-01T00:00:00Z"),
            ("", ""),
        ];
        for (input, expected) in cases {
            assert_eq!(csv_cell(input), expected, "{input:?}");
        }
    }

    #[test]
    fn json_escapes_every_control_and_format_character() {
        let value = serde_json::json!({
            "detail": "\u{1b}]0;title\u{7} \u{9b} \u{7f} \u{202E}x \u{E0041}",
            "plain": "Ødegård \"q\" \\",
        });
        let text = json(&value);
        assert!(!text.chars().any(|c| unsafe_char(c) && c != '\n'), "{text}");
        assert!(text.contains("\\u001b]0;title\\u0007"), "{text}");
        assert!(text.contains("\\u009b \\u007f \\u202e"), "{text}");
        assert!(text.contains("\\udb40\\udc41"), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).expect("still JSON");
        assert_eq!(back, value);
    }
}
