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
    #[error("national identity number check digits do not match (mod 11)")]
    SubjectIdCheckDigits,
    #[error("national identity number does not encode a plausible date of birth")]
    SubjectIdDate,
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
