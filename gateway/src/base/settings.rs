//! Reads a TOML table key by key, collecting every problem instead of stopping at the first,
//! and reports the keys nobody asked for as unknown. Each component declares its section's
//! keys — what each holds, its default and its bounds — in a [`Schema`] beside the code that
//! reads it (`runtime::config` the file's own sections, `edge::tls`, `edge::auth`,
//! `app::audit` and the web tier theirs); reading a key looks its default and bounds up
//! there, so they are written once. The same tables check `deploy/casegate.example.toml` and
//! the configuration `casegate dev` writes (`runtime::config` tests).

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

/// What a key holds, with its default and bounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Text: an address, a name, a URL, one word of a list.
    Text {
        /// Whether the key must be there.
        required: bool,
    },
    /// A path (a file or folder; relative to the config file's folder).
    Path {
        /// Whether the key must be there.
        required: bool,
    },
    /// An array of strings (or of paths).
    List {
        /// Whether the key must be there.
        required: bool,
    },
    /// `true` or `false`.
    Flag {
        /// When absent.
        default: bool,
    },
    /// An integer in `1..=max`.
    Count {
        /// When absent.
        default: u64,
        /// The largest value accepted.
        max: u64,
    },
    /// A duration written as text (`"30s"`, `"5m"`, `"1h 30m"`), within `min..=max`.
    Duration {
        /// When absent.
        default: Duration,
        /// The shortest accepted.
        min: Duration,
        /// The longest accepted.
        max: Duration,
    },
    /// A table, or an array of tables, with a schema of its own (or keys of its own choosing,
    /// such as `[organisations]`'s organisation numbers).
    Table,
}

/// One key of a section.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Key {
    /// Its name in the section.
    pub(crate) name: &'static str,
    /// What it holds.
    pub(crate) kind: Kind,
}

/// A section's keys: the one place their defaults and bounds are written.
#[derive(Debug)]
pub(crate) struct Schema {
    /// The section's path as the example configuration writes its header (`server`,
    /// `auth.issuers`, `web.jobseekers.oidc`); `*` stands for a name of the reader's choosing.
    pub(crate) section: &'static str,
    /// Every key the section may hold.
    pub(crate) keys: &'static [Key],
}

impl Schema {
    /// The declaration of `name`.
    pub(crate) fn key(&self, name: &str) -> Option<&Key> {
        self.keys.iter().find(|k| k.name == name)
    }
}

/// Shorthands for schema tables.
pub(crate) const fn text(name: &'static str, required: bool) -> Key {
    Key {
        name,
        kind: Kind::Text { required },
    }
}

/// A path key (see [`Kind::Path`]).
pub(crate) const fn path(name: &'static str, required: bool) -> Key {
    Key {
        name,
        kind: Kind::Path { required },
    }
}

/// A list key (see [`Kind::List`]).
pub(crate) const fn list(name: &'static str, required: bool) -> Key {
    Key {
        name,
        kind: Kind::List { required },
    }
}

/// A flag key (see [`Kind::Flag`]).
pub(crate) const fn flag(name: &'static str, default: bool) -> Key {
    Key {
        name,
        kind: Kind::Flag { default },
    }
}

/// A count key (see [`Kind::Count`]).
pub(crate) const fn count(name: &'static str, default: u64, max: u64) -> Key {
    Key {
        name,
        kind: Kind::Count { default, max },
    }
}

/// A duration key (see [`Kind::Duration`]), bounds in seconds.
pub(crate) const fn duration(
    name: &'static str,
    default: Duration,
    min: Duration,
    max: Duration,
) -> Key {
    Key {
        name,
        kind: Kind::Duration { default, min, max },
    }
}

/// A table key (see [`Kind::Table`]).
pub(crate) const fn table(name: &'static str) -> Key {
    Key {
        name,
        kind: Kind::Table,
    }
}

/// Whole seconds, for schema tables.
pub(crate) const fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Whole days, for schema tables.
pub(crate) const fn days(n: u64) -> Duration {
    Duration::from_secs(n * 86_400)
}

/// A view of one table at `path`, taking keys out as they are read, by its [`Schema`].
pub(crate) struct Section<'p> {
    path: String,
    table: Table,
    problems: &'p mut Problems,
    schema: &'static Schema,
}

impl<'p> Section<'p> {
    /// An optional list of organisation numbers at `key`, each checked (mod 11).
    pub(crate) fn org_numbers(&mut self, key: &str) -> Vec<casegate_consent::OrgNumber> {
        let mut orgs = Vec::new();
        for (i, text) in self.strings(key).unwrap_or_default().iter().enumerate() {
            match text.parse::<casegate_consent::OrgNumber>() {
                Ok(org) => orgs.push(org),
                Err(e) => self.problem(&format!("{key}[{i}]"), e.to_string()),
            }
        }
        orgs
    }

    pub(crate) fn new(
        path: impl Into<String>,
        table: Table,
        problems: &'p mut Problems,
        schema: &'static Schema,
    ) -> Self {
        Self {
            path: path.into(),
            table,
            problems,
            schema,
        }
    }

    /// The declaration of `key`, checked to be of the kind its reader expects. A key read but
    /// not declared is reported (a fault in the reader, which every parse shows).
    fn declared(&mut self, key: &str, fits: impl Fn(&Kind) -> bool) -> Option<Kind> {
        match self.schema.key(key).map(|k| k.kind) {
            Some(kind) if fits(&kind) => Some(kind),
            _ => {
                let section = self.schema.section;
                self.problem(
                    key,
                    format!("read but not declared as such in the schema of [{section}]"),
                );
                None
            }
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

    /// A nested table as its own section, read by `schema`; an absent one reads as empty.
    pub(crate) fn section(&mut self, key: &str, schema: &'static Schema) -> Section<'_> {
        self.declared(key, |k| *k == Kind::Table);
        let path = self.key(key);
        let table = match self.take(key, "a table", false) {
            Some(Value::Table(t)) => t,
            Some(other) => {
                self.wrong_type(key, "a table", &other);
                Table::new()
            }
            None => Table::new(),
        };
        Section::new(path, table, self.problems, schema)
    }

    /// An array of tables (`[[key]]`), each as a table with its index in the path.
    pub(crate) fn tables(&mut self, key: &str) -> Option<Vec<(String, Table)>> {
        self.declared(key, |k| *k == Kind::Table)?;
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

    /// A text key ([`Kind::Text`]); `None` when absent (a problem if it is required) or not
    /// a string.
    pub(crate) fn text(&mut self, key: &str) -> Option<String> {
        let Some(Kind::Text { required }) = self.declared(key, |k| matches!(k, Kind::Text { .. }))
        else {
            return None;
        };
        self.string_inner(key, required)
    }

    /// A list key ([`Kind::List`]).
    pub(crate) fn strings(&mut self, key: &str) -> Option<Vec<String>> {
        let Some(Kind::List { required }) = self.declared(key, |k| matches!(k, Kind::List { .. }))
        else {
            return None;
        };
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

    /// A flag key ([`Kind::Flag`]).
    pub(crate) fn flag(&mut self, key: &str) -> bool {
        let Some(Kind::Flag { default }) = self.declared(key, |k| matches!(k, Kind::Flag { .. }))
        else {
            return false;
        };
        match self.take(key, "true or false", false) {
            None => default,
            Some(Value::Boolean(b)) => b,
            Some(other) => {
                self.wrong_type(key, "true or false", &other);
                default
            }
        }
    }

    /// A count key ([`Kind::Count`]): a positive integer within `1..=max`.
    pub(crate) fn count(&mut self, key: &str) -> u64 {
        let Some(Kind::Count { default, max }) =
            self.declared(key, |k| matches!(k, Kind::Count { .. }))
        else {
            return 1;
        };
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

    /// A duration key ([`Kind::Duration`]): text (`"30s"`, `"5m"`, `"1h 30m"`) within
    /// `min..=max`.
    pub(crate) fn duration(&mut self, key: &str) -> Duration {
        let Some(Kind::Duration { default, min, max }) =
            self.declared(key, |k| matches!(k, Kind::Duration { .. }))
        else {
            return Duration::ZERO;
        };
        let Some(text) = self.string_inner(key, false) else {
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

    /// A path key ([`Kind::Path`]), relative paths taken from `base` (the config file's
    /// folder).
    pub(crate) fn path(&mut self, key: &str, base: &Path) -> Option<PathBuf> {
        let Some(Kind::Path { required }) = self.declared(key, |k| matches!(k, Kind::Path { .. }))
        else {
            return None;
        };
        self.string_inner(key, required).map(|p| base.join(p))
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
            .strings(key)
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
            schema: _,
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
        static INNER: Schema = Schema {
            section: "inner",
            keys: &[duration("wait", secs(1), secs(1), secs(1))],
        };
        static ROOT: Schema = Schema {
            section: "",
            keys: &[
                text("name", true),
                text("missing", true),
                super::table("inner"),
            ],
        };
        let mut problems = Problems::default();
        let mut root = Section::new("", table, &mut problems, &ROOT);
        assert_eq!(root.text("name"), None);
        assert_eq!(root.text("missing"), None);
        {
            let mut inner = root.section("inner", &INNER);
            assert_eq!(inner.duration("wait"), secs(1));
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

    #[test]
    fn a_key_read_but_not_declared_or_declared_as_another_kind_is_reported() {
        static SCHEMA: Schema = Schema {
            section: "s",
            keys: &[count("workers", 4, 64)],
        };
        let table: Table = toml::from_str("workers = 8").expect("valid toml");
        let mut problems = Problems::default();
        let mut s = Section::new("s", table, &mut problems, &SCHEMA);
        assert_eq!(s.count("workers"), 8);
        assert_eq!(s.text("name"), None);
        assert_eq!(s.duration("workers"), Duration::ZERO);
        s.finish();
        let found: Vec<_> = problems.0.iter().map(|p| p.to_string()).collect();
        assert_eq!(found.len(), 2, "{found:?}");
        assert!(
            found.iter().all(|p| p.contains("not declared")),
            "{found:?}"
        );
    }
}
