//! The configured vocabularies: categories of information (who may send each, whether it needs
//! a clinician's approval attestation) and purposes of disclosure.

use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    str::FromStr,
};

use crate::{ParseError, Role};

/// A vocabulary term: 1–64 characters of lower-case ASCII letters, digits and `_`, starting
/// with a letter.
fn valid_term(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_lowercase()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

macro_rules! term {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(String);

        impl $name {
            /// The term as configured: 1-64 characters of `a-z`, `0-9` and `_`.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl FromStr for $name {
            type Err = ParseError;

            fn from_str(s: &str) -> Result<Self, Self::Err> {
                if valid_term(s) {
                    Ok(Self(s.to_owned()))
                } else {
                    Err(ParseError::TermFormat)
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

term!(
    /// A category of information, e.g. `benefit_counselling`.
    Category
);
term!(
    /// A purpose of disclosure, e.g. `ips_follow_up`.
    Purpose
);

/// The rules for one category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CategoryRule {
    /// Roles that may send notes of this category.
    pub senders: BTreeSet<Role>,
    /// Whether a note needs a clinician's approval attestation.
    pub approval_required: bool,
}

/// Every category and purpose the gateway knows. Terms outside it are refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vocabulary {
    categories: BTreeMap<Category, CategoryRule>,
    purposes: BTreeSet<Purpose>,
}

impl Vocabulary {
    /// Builds a vocabulary; each term may appear once and each category needs a sender role.
    pub fn new(
        categories: impl IntoIterator<Item = (Category, CategoryRule)>,
        purposes: impl IntoIterator<Item = Purpose>,
    ) -> Result<Self, ParseError> {
        let mut map = BTreeMap::new();
        for (category, rule) in categories {
            if rule.senders.is_empty() {
                return Err(ParseError::CategoryWithoutSenders(category.0));
            }
            if map.insert(category.clone(), rule).is_some() {
                return Err(ParseError::DuplicateTerm(category.0));
            }
        }
        let mut set = BTreeSet::new();
        for purpose in purposes {
            if !set.insert(purpose.clone()) {
                return Err(ParseError::DuplicateTerm(purpose.0));
            }
        }
        if map.is_empty() || set.is_empty() {
            return Err(ParseError::EmptyVocabulary);
        }
        Ok(Self {
            categories: map,
            purposes: set,
        })
    }

    /// The rule of `category`, or `None` when the vocabulary does not hold it.
    pub fn category(&self, category: &Category) -> Option<&CategoryRule> {
        self.categories.get(category)
    }

    /// Whether the vocabulary holds `purpose`.
    pub fn has_purpose(&self, purpose: &Purpose) -> bool {
        self.purposes.contains(purpose)
    }

    /// Every category and its rule, sorted by term.
    pub fn categories(&self) -> impl Iterator<Item = (&Category, &CategoryRule)> {
        self.categories.iter()
    }

    /// Every purpose, sorted by term.
    pub fn purposes(&self) -> impl Iterator<Item = &Purpose> {
        self.purposes.iter()
    }
}

impl Default for Vocabulary {
    /// The IPS defaults of DESIGN §2.
    fn default() -> Self {
        use Role::{Clinician, EmploymentSpecialist, NavCounsellor};
        let rule = |senders: &[Role], approval_required| CategoryRule {
            senders: senders.iter().copied().collect(),
            approval_required,
        };
        let categories = [
            ("benefit_counselling", rule(&[NavCounsellor], false)),
            ("treatment_summary", rule(&[Clinician], true)),
            (
                "work_functioning",
                rule(&[Clinician, EmploymentSpecialist], false),
            ),
            ("job_progress", rule(&[EmploymentSpecialist], false)),
            (
                "meeting_summary",
                rule(&[Clinician, NavCounsellor, EmploymentSpecialist], false),
            ),
        ];
        Self {
            categories: categories
                .into_iter()
                .map(|(name, rule)| (Category(name.to_owned()), rule))
                .collect(),
            purposes: ["ips_follow_up", "benefit_planning"]
                .into_iter()
                .map(|name| Purpose(name.to_owned()))
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_hold_the_design_terms() {
        let v = Vocabulary::default();
        let summary: Category = "treatment_summary".parse().expect("term");
        let rule = v.category(&summary).expect("default category");
        assert!(rule.approval_required);
        assert_eq!(
            rule.senders.iter().copied().collect::<Vec<_>>(),
            [Role::Clinician]
        );
        assert!(v.has_purpose(&"ips_follow_up".parse().expect("term")));
        assert!(!v.has_purpose(&"marketing".parse().expect("term")));
        assert_eq!(v.categories().count(), 5);
        // The defaults pass the same checks as a configured vocabulary.
        let rebuilt = Vocabulary::new(
            v.categories().map(|(c, r)| (c.clone(), r.clone())),
            v.purposes().cloned(),
        );
        assert_eq!(rebuilt, Ok(v));
    }

    #[test]
    fn terms_and_vocabularies_are_checked() {
        for bad in [
            "",
            "Benefit",
            "1st",
            "with space",
            "dash-ed",
            &"x".repeat(65),
        ] {
            assert_eq!(
                bad.parse::<Category>(),
                Err(ParseError::TermFormat),
                "{bad:?}"
            );
        }
        let c = |s: &str| s.parse::<Category>().expect("term");
        let p = |s: &str| s.parse::<Purpose>().expect("term");
        let rule = CategoryRule {
            senders: [Role::Clinician].into(),
            approval_required: false,
        };
        let dup = Vocabulary::new([(c("a"), rule.clone()), (c("a"), rule.clone())], [p("x")]);
        assert_eq!(dup, Err(ParseError::DuplicateTerm("a".into())));
        let nobody = CategoryRule {
            senders: BTreeSet::new(),
            approval_required: false,
        };
        assert_eq!(
            Vocabulary::new([(c("a"), nobody)], [p("x")]),
            Err(ParseError::CategoryWithoutSenders("a".into()))
        );
        assert_eq!(
            Vocabulary::new([(c("a"), rule)], []),
            Err(ParseError::EmptyVocabulary)
        );
    }
}
