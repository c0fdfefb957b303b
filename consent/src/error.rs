//! What can be wrong with a value handed to the consent domain.

/// A value that does not parse into a domain type. Messages never repeat the offending value:
/// it may be a national identity number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("an organisation number has exactly 9 digits")]
    OrgNumberFormat,
    #[error("organisation number check digit does not match (mod 11)")]
    OrgNumberCheckDigit,
    #[error("a national identity number or D-number has exactly 11 digits")]
    SubjectIdFormat,
    #[error("FH numbers (the health sector's help numbers, first digit 8 or 9) are not supported")]
    SubjectIdFhNumber,
    #[error(
        "national identity number check digits do not match: the first leaves a mod-11 \
         remainder other than 0-3"
    )]
    SubjectIdFirstCheckDigit,
    #[error(
        "national identity number check digits do not match: the second leaves a mod-11 \
         remainder other than 0"
    )]
    SubjectIdSecondCheckDigit,
    #[error(
        "national identity number month of birth is not 01-12 (41-52 for H-numbers and NAV's \
         synthetic identities, 81-92 for Skatteetaten's)"
    )]
    SubjectIdMonth,
    #[error("national identity number day of birth is not a day of its month (D-numbers add 40)")]
    SubjectIdDay,
    #[error("unknown role (expected one of: {expected})")]
    UnknownRole { expected: &'static str },
    #[error("a vocabulary term is 1-64 characters of a-z, 0-9 and _, starting with a letter")]
    TermFormat,
    #[error("vocabulary term {0:?} appears more than once")]
    DuplicateTerm(String),
    #[error("category {0:?} names no role that may send it")]
    CategoryWithoutSenders(String),
    #[error("the vocabulary needs at least one category and one purpose")]
    EmptyVocabulary,
}
