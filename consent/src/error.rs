//! What can be wrong with a value handed to the consent domain.

/// A value that does not parse into a domain type. Messages never repeat the offending value:
/// it may be a national identity number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// An organisation number that is not exactly 9 ASCII digits.
    #[error("an organisation number has exactly 9 digits")]
    OrgNumberFormat,
    /// The ninth digit of an organisation number is not the mod-11 check digit of the first
    /// eight (weights 3 2 7 6 5 4 3 2), or no check digit exists for them.
    #[error("organisation number check digit does not match (mod 11)")]
    OrgNumberCheckDigit,
    /// An identity number that is not exactly 11 ASCII digits.
    #[error("a national identity number or D-number has exactly 11 digits")]
    SubjectIdFormat,
    /// An FH number (first digit 8 or 9): the health sector's help number, not an identity in
    /// the population register.
    #[error("FH numbers (the health sector's help numbers, first digit 8 or 9) are not supported")]
    SubjectIdFhNumber,
    /// The first ten digits (weights 3 7 6 1 8 9 4 5 2 1) leave a mod-11 remainder other than
    /// 0-3: 0 before 2032, 0-3 for numbers issued from 2032.
    #[error(
        "national identity number check digits do not match: the first leaves a mod-11 \
         remainder other than 0-3"
    )]
    SubjectIdFirstCheckDigit,
    /// All eleven digits (weights 5 4 3 2 7 6 5 4 3 2 1) leave a mod-11 remainder other than 0.
    #[error(
        "national identity number check digits do not match: the second leaves a mod-11 \
         remainder other than 0"
    )]
    SubjectIdSecondCheckDigit,
    /// Digits 3-4, less 80 (Skatteetaten's synthetic identities) or 40 (H-numbers, NAV's
    /// synthetic identities) when above those, are not a month 1-12.
    #[error(
        "national identity number month of birth is not 01-12 (41-52 for H-numbers and NAV's \
         synthetic identities, 81-92 for Skatteetaten's)"
    )]
    SubjectIdMonth,
    /// Digits 1-2, less 40 for a D-number, are not a day of the month; 29 February passes for
    /// every two-digit year divisible by 4, since the century is not known.
    #[error("national identity number day of birth is not a day of its month (D-numbers add 40)")]
    SubjectIdDay,
    /// A role name that is not one of [`Role::as_str`](crate::Role::as_str)'s spellings.
    #[error("unknown role (expected one of: {expected})")]
    UnknownRole {
        /// Every valid spelling, comma-separated.
        expected: &'static str,
    },
    /// A category or purpose that is not 1-64 characters of `a-z`, `0-9` and `_` starting with
    /// a letter.
    #[error("a vocabulary term is 1-64 characters of a-z, 0-9 and _, starting with a letter")]
    TermFormat,
    /// A category or purpose named twice in one vocabulary; holds the term.
    #[error("vocabulary term {0:?} appears more than once")]
    DuplicateTerm(String),
    /// A category whose rule names no sender role; holds the category.
    #[error("category {0:?} names no role that may send it")]
    CategoryWithoutSenders(String),
    /// A vocabulary without a category or without a purpose.
    #[error("the vocabulary needs at least one category and one purpose")]
    EmptyVocabulary,
}
