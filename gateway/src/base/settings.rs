//! Reads a TOML table key by key, collecting every problem instead of stopping at the first,
//! and reports the keys nobody asked for as unknown. Each component reads its own section with
//! it (`runtime::config` the whole file, `edge::tls`, `edge::auth`, `app::audit` and the web
//! tier their sections).

use std::{path::Path, path::PathBuf, time::Duration};

use crate::base::problem::Problem;

use toml::{Table, Value};

/// Collected problems, and the files the configuration names (checked after parsing).
#[derive(Debug, Default)]
pub(crate) struct Problems(pub Vec<Problem>, pub Vec<(String, PathBuf)>);

impl Problems {
    pub(crate) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            key: key.into(),
            message: message.into(),
        });
    }
}

/// A view of one table at `path`, taking keys out as they are read.
pub(crate) struct Section<'p> {
    path: String,
    table: Table,
    problems: &'p mut Problems,
}

impl<'p> Section<'p> {
    /// An optional list of organisation numbers at `key`, each checked (mod 11).
    pub(crate) fn org_numbers(&mut self, key: &str) -> Vec<casegate_consent::OrgNumber> {
        let mut orgs = Vec::new();
        for (i, text) in self
            .strings(key, false)
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            match text.parse::<casegate_consent::OrgNumber>() {
                Ok(org) => orgs.push(org),
                Err(e) => self.problem(&format!("{key}[{i}]"), e.to_string()),
            }
        }
        orgs
    }

    pub(crate) fn new(path: impl Into<String>, table: Table, problems: &'p mut Problems) -> Self {
        Self {
            path: path.into(),
            table,
            problems,
        }
    }

    pub(crate) fn key(&self, key: &str) -> String {
        if key.is_empty() {
            self.path.clone()
        } else if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    pub(crate) fn problem(&mut self, key: &str, message: impl Into<String>) {
        let key = self.key(key);
        self.problems.push(key, message);
    }

    fn take(&mut self, key: &str, expected: &str, required: bool) -> Option<Value> {
        let value = self.table.remove(key);
        if value.is_none() && required {
            self.problem(key, format!("missing (expected {expected})"));
        }
        value
    }

    fn wrong_type(&mut self, key: &str, expected: &str, got: &Value) {
        self.problem(
            key,
            format!("expected {expected}, found {}", got.type_str()),
        );
    }

    /// A nested table as its own section; an absent one reads as empty.
    pub(crate) fn section(&mut self, key: &str) -> Section<'_> {
        let path = self.key(key);
        let table = match self.take(key, "a table", false) {
            Some(Value::Table(t)) => t,
            Some(other) => {
                self.wrong_type(key, "a table", &other);
                Table::new()
            }
            None => Table::new(),
        };
        Section::new(path, table, self.problems)
    }

    /// An array of tables (`[[key]]`), each as a table with its index in the path.
    pub(crate) fn tables(&mut self, key: &str) -> Option<Vec<(String, Table)>> {
        let path = self.key(key);
        match self.take(key, "an array of tables", false)? {
            Value::Array(items) => {
                let mut out = Vec::new();
                for (i, item) in items.into_iter().enumerate() {
                    match item {
                        Value::Table(t) => out.push((format!("{path}[{i}]"), t)),
                        other => self.problems.push(
                            format!("{path}[{i}]"),
                            format!("expected a table, found {}", other.type_str()),
                        ),
                    }
                }
                Some(out)
            }
            other => {
                self.wrong_type(key, "an array of tables", &other);
                None
            }
        }
    }

    /// Whether nothing is left to read (an absent section reads as empty).
    pub(crate) fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// Every remaining key and its value, in key order. Leaves the section empty.
    pub(crate) fn entries(&mut self) -> Vec<(String, Value)> {
        std::mem::take(&mut self.table).into_iter().collect()
    }

    pub(crate) fn problems(&mut self) -> &mut Problems {
        self.problems
    }

    fn string_inner(&mut self, key: &str, required: bool) -> Option<String> {
        match self.take(key, "a string", required)? {
            Value::String(s) => Some(s),
            other => {
                self.wrong_type(key, "a string", &other);
                None
            }
        }
    }

    pub(crate) fn string(&mut self, key: &str) -> Option<String> {
        self.string_inner(key, true)
    }

    pub(crate) fn opt_string(&mut self, key: &str) -> Option<String> {
        self.string_inner(key, false)
    }

    pub(crate) fn strings(&mut self, key: &str, required: bool) -> Option<Vec<String>> {
        match self.take(key, "an array of strings", required)? {
            Value::Array(items) => {
                let mut out = Vec::new();
                for item in items {
                    match item {
                        Value::String(s) => out.push(s),
                        other => {
                            self.wrong_type(key, "an array of strings", &other);
                            return None;
                        }
                    }
                }
                Some(out)
            }
            other => {
                self.wrong_type(key, "an array of strings", &other);
                None
            }
        }
    }

    pub(crate) fn bool_or(&mut self, key: &str, default: bool) -> bool {
        match self.take(key, "true or false", false) {
            None => default,
            Some(Value::Boolean(b)) => b,
            Some(other) => {
                self.wrong_type(key, "true or false", &other);
                default
            }
        }
    }

    /// A positive integer within `1..=max`.
    pub(crate) fn count_or(&mut self, key: &str, default: u64, max: u64) -> u64 {
        match self.take(key, "a positive integer", false) {
            None => default,
            Some(Value::Integer(n)) if n >= 1 && n.unsigned_abs() <= max => n.unsigned_abs(),
            Some(Value::Integer(n)) => {
                self.problem(key, format!("{n} is out of range 1..={max}"));
                default
            }
            Some(other) => {
                self.wrong_type(key, "a positive integer", &other);
                default
            }
        }
    }

    /// A duration written as text (`"30s"`, `"5m"`, `"1h 30m"`) within `min..=max`.
    pub(crate) fn duration_or(
        &mut self,
        key: &str,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Duration {
        let Some(text) = self.opt_string(key) else {
            return default;
        };
        match humantime::parse_duration(&text) {
            Ok(d) if d >= min && d <= max => d,
            Ok(_) => {
                self.problem(
                    key,
                    format!(
                        "{text:?} is out of range {}..={}",
                        humantime::format_duration(min),
                        humantime::format_duration(max)
                    ),
                );
                default
            }
            Err(e) => {
                self.problem(
                    key,
                    format!("{text:?} is not a duration ({e}); write e.g. \"30s\""),
                );
                default
            }
        }
    }

    /// A path, relative paths taken from `base` (the config file's folder).
    pub(crate) fn path(&mut self, key: &str, base: &Path) -> Option<PathBuf> {
        self.string(key).map(|p| base.join(p))
    }

    /// A path to a file that must exist and be readable when the configuration is used.
    pub(crate) fn file(&mut self, key: &str, base: &Path) -> Option<PathBuf> {
        let path = self.path(key, base)?;
        let full = self.key(key);
        self.problems.1.push((full, path.clone()));
        Some(path)
    }

    /// An optional list of files that must exist and be readable.
    pub(crate) fn files(&mut self, key: &str, base: &Path) -> Vec<PathBuf> {
        let full = self.key(key);
        let paths: Vec<PathBuf> = self
            .strings(key, false)
            .unwrap_or_default()
            .into_iter()
            .map(|p| base.join(p))
            .collect();
        for (i, path) in paths.iter().enumerate() {
            self.problems.1.push((format!("{full}[{i}]"), path.clone()));
        }
        paths
    }

    /// Reports every key that was not read as unknown.
    pub(crate) fn finish(self) {
        let Section {
            path,
            table,
            problems,
        } = self;
        for key in table.keys() {
            let full = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            problems.push(full, "unknown key");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collects_every_problem_including_unknown_keys() {
        let table: Table = toml::from_str(
            r#"
            name = 3
            colour = "blue"
            [inner]
            wait = "soon"
            "#,
        )
        .expect("valid toml");
        let mut problems = Problems::default();
        let mut root = Section::new("", table, &mut problems);
        assert_eq!(root.string("name"), None);
        assert_eq!(root.string("missing"), None);
        {
            let mut inner = root.section("inner");
            let d = Duration::from_secs(1);
            assert_eq!(inner.duration_or("wait", d, d, d), d);
            inner.finish();
        }
        root.finish();
        let keys: Vec<_> = problems.0.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["name", "missing", "inner.wait", "colour"]);
        assert!(
            problems.0[0]
                .message
                .contains("expected a string, found integer")
        );
        assert_eq!(problems.0[3].message, "unknown key");
    }
}
