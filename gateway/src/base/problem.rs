//! One problem in a configuration, located by its dotted key path: what every part of the
//! gateway that checks a setting reports, so that all of them are shown at once.

/// One problem in a configuration, located by its dotted key path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Where: a dotted key path such as `server.listen` or `auth.issuers[0].iss` (a
    /// section's path for the section as a whole), or an override's variable name
    /// (`CASEGATE_…`). Empty when no key applies; then only the message is shown.
    pub key: String,
    /// What is wrong, as a sentence fragment without the key.
    pub message: String,
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.key.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.key, self.message)
        }
    }
}
