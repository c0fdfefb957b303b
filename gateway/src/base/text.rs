//! The one rule for free text the gateway takes from outside — request fields and identifiers
//! from access tokens alike — before it reaches a domain type, a `Principal` or an audit entry.
//!
//! Such text is bounded in bytes, not blank, and holds no control characters (Unicode general
//! category Cc: C0, DEL, C1) and no format characters (category Cf: bidirectional overrides and
//! isolates, zero-width characters, the byte-order mark, tag characters, …). Format characters
//! render invisibly or reorder what a reader sees (CVE-2021-42574, "Trojan Source"), so an
//! identifier holding one could look like another in an audit report.

/// Why a text was refused; `Display` reads as a rule ("at most 255 bytes").
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TextRule {
    #[error("required")]
    Blank,
    #[error("at most {0} bytes")]
    TooLong(usize),
    #[error("must not contain control characters")]
    Control,
    #[error("must not contain invisible format characters (such as bidirectional controls)")]
    Format,
    /// For single words (a claim that becomes `name=value` in an audit entry's detail).
    #[error("must not contain whitespace")]
    Whitespace,
}

/// Checks `value` against the rule: non-blank, at most `max` bytes (UTF-8), no control or
/// format characters.
///
/// # Errors
/// The first [`TextRule`] broken, in the order blank, length, control, format.
pub(crate) fn check(value: &str, max: usize) -> Result<(), TextRule> {
    if value.trim().is_empty() {
        return Err(TextRule::Blank);
    }
    if value.len() > max {
        return Err(TextRule::TooLong(max));
    }
    if value.chars().any(char::is_control) {
        return Err(TextRule::Control);
    }
    if value.chars().any(is_format) {
        return Err(TextRule::Format);
    }
    Ok(())
}

/// Whether `c` is a format character, Unicode general category Cf (Unicode 16.0,
/// `DerivedGeneralCategory.txt`).
pub(crate) fn is_format(c: char) -> bool {
    matches!(
        c,
        '\u{00AD}'
            | '\u{0600}'..='\u{0605}'
            | '\u{061C}'
            | '\u{06DD}'
            | '\u{070F}'
            | '\u{0890}'..='\u{0891}'
            | '\u{08E2}'
            | '\u{180E}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{2064}'
            | '\u{2066}'..='\u{206F}'
            | '\u{FEFF}'
            | '\u{FFF9}'..='\u{FFFB}'
            | '\u{110BD}'
            | '\u{110CD}'
            | '\u{13430}'..='\u{1343F}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0001}'
            | '\u{E0020}'..='\u{E007F}'
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rule_names_what_is_wrong() {
        let cases: [(&str, usize, Result<(), TextRule>); 12] = [
            ("user-1", 16, Ok(())),
            ("Ærlig Åse Østby", 32, Ok(())),
            ("", 16, Err(TextRule::Blank)),
            ("   ", 16, Err(TextRule::Blank)),
            ("a".repeat(17).leak(), 16, Err(TextRule::TooLong(16))),
            ("line\nbreak", 16, Err(TextRule::Control)),
            ("esc\u{1b}[31m", 16, Err(TextRule::Control)),
            ("c1\u{85}", 16, Err(TextRule::Control)),
            ("admin\u{202E}nimda", 32, Err(TextRule::Format)),
            ("zero\u{200B}width", 32, Err(TextRule::Format)),
            ("\u{FEFF}bom", 16, Err(TextRule::Format)),
            ("tag\u{E0041}", 16, Err(TextRule::Format)),
        ];
        for (value, max, expected) in cases {
            assert_eq!(check(value, max), expected, "{value:?}");
        }
    }
}
