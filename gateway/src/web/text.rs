//! The pages' words in bokmål, nynorsk and English (`text.toml`, one table per key with `nb`,
//! `nn` and `en`), and `{name}` placeholders filled in by [`Tr::fill`]. A key missing from the
//! table renders as `⟦key⟧`, which the tests look for on every page in every language.

use std::{collections::HashMap, sync::LazyLock};

use serde::{Deserialize, Serialize};

/// The languages every page is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Lang {
    /// Norsk bokmål.
    #[default]
    Nb,
    /// Norsk nynorsk.
    Nn,
    /// English.
    En,
}

impl Lang {
    /// All languages, in the order the language switch shows them.
    pub const ALL: [Lang; 3] = [Lang::Nb, Lang::Nn, Lang::En];

    /// The BCP 47 tag, for `<html lang>`.
    pub fn code(self) -> &'static str {
        match self {
            Lang::Nb => "nb",
            Lang::Nn => "nn",
            Lang::En => "en",
        }
    }

    /// The language's own name, for the switch.
    pub fn name(self) -> &'static str {
        match self {
            Lang::Nb => "Bokmål",
            Lang::Nn => "Nynorsk",
            Lang::En => "English",
        }
    }

    /// Parses a tag (`nb`, `nn`, `en`).
    pub fn from_code(code: &str) -> Option<Lang> {
        Lang::ALL.into_iter().find(|l| l.code() == code)
    }
}

#[derive(Debug, Deserialize)]
struct Entry {
    nb: String,
    nn: String,
    en: String,
}

static TABLE: LazyLock<HashMap<String, Entry>> = LazyLock::new(|| {
    // Checked by `every_key_has_all_three_languages`; a broken table is a build defect.
    toml::from_str(include_str!("text.toml")).unwrap_or_default()
});

/// The words of one page in one language.
#[derive(Debug, Clone, Copy)]
pub struct Tr {
    /// The language the words are taken in.
    pub lang: Lang,
}

impl Tr {
    /// The text for `key`; `⟦key⟧` when the table lacks it.
    pub fn get(&self, key: &str) -> String {
        match TABLE.get(key) {
            Some(entry) => match self.lang {
                Lang::Nb => entry.nb.clone(),
                Lang::Nn => entry.nn.clone(),
                Lang::En => entry.en.clone(),
            },
            None => {
                tracing::warn!(key, "no text for key");
                format!("⟦{key}⟧")
            }
        }
    }

    /// Whether the table has `key` (for vocabulary terms that may be the operator's own).
    pub fn has(&self, key: &str) -> bool {
        TABLE.contains_key(key)
    }

    /// The text for `key` with each `{name}` replaced by its value.
    pub fn fill(&self, key: &str, values: &[(&str, &str)]) -> String {
        let mut text = self.get(key);
        for (name, value) in values {
            text = text.replace(&format!("{{{name}}}"), value);
        }
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_key_has_all_three_languages() {
        let table: HashMap<String, toml::Table> =
            toml::from_str(include_str!("text.toml")).expect("text.toml parses");
        assert!(table.len() > 100, "only {} keys", table.len());
        for (key, entry) in &table {
            let mut langs: Vec<&String> = entry.keys().collect();
            langs.sort();
            assert_eq!(langs, ["en", "nb", "nn"], "{key}");
            for (lang, text) in entry {
                assert!(
                    text.as_str().is_some_and(|t| !t.trim().is_empty()),
                    "{key}.{lang} is empty"
                );
            }
        }
        assert_eq!(TABLE.len(), table.len());
    }

    #[test]
    fn every_key_the_code_and_templates_use_is_in_the_table() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut sources = Vec::new();
        let mut folders = vec![root.join("templates"), root.join("src/web")];
        while let Some(folder) = folders.pop() {
            for file in std::fs::read_dir(&folder).expect("folder") {
                let path = file.expect("entry").path();
                if path.is_dir() {
                    folders.push(path);
                } else if matches!(
                    path.extension().and_then(|e| e.to_str()),
                    Some("html" | "rs")
                ) {
                    sources.push(std::fs::read_to_string(&path).expect("source"));
                }
            }
        }
        // Every string literal shaped like a key of a known group (`"consent.status"`),
        // whether it reaches `get`, `fill`, a page title or a navigation link.
        let groups: std::collections::BTreeSet<&str> =
            TABLE.keys().filter_map(|k| k.split('.').next()).collect();
        let files = [".html", ".css", ".toml", ".json", ".txt", ".csv", ".rs"];
        let mut used = 0;
        for source in &sources {
            for literal in source.split('"').skip(1).step_by(2) {
                let shaped = literal.contains('.')
                    && literal.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._".contains(&b)
                    });
                let group = literal.split('.').next().unwrap_or_default();
                if !shaped || !groups.contains(group) || files.iter().any(|f| literal.ends_with(f))
                {
                    continue;
                }
                used += 1;
                assert!(
                    TABLE.contains_key(literal),
                    "{literal:?} is used but not translated"
                );
            }
        }
        assert!(used > 200, "found only {used} uses");
    }

    #[test]
    fn placeholders_are_filled_and_missing_keys_are_marked() {
        let tr = Tr { lang: Lang::En };
        assert_eq!(tr.get("no.such.key"), "⟦no.such.key⟧");
        let text = tr.fill("consent.until", &[("end", "1 July 2027")]);
        assert!(
            text.contains("1 July 2027") && !text.contains('{'),
            "{text}"
        );
    }
}
