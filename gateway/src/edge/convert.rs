//! Wire ↔ domain conversions, all in one place. Requests are parsed field by field into domain
//! types; every bad field becomes `INVALID_ARGUMENT` naming the field and the rule. Wire
//! messages are destructured without `..`, so a new proto field does not compile until it is
//! handled here.

pub(crate) mod audit;
pub(crate) mod consent;
pub(crate) mod disclosure;

use casegate_consent::{Role, SubjectId, record::Timestamp};
use casegate_proto::v1;

/// A request field that breaks a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    pub field: String,
    pub rule: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, rule: impl ToString) -> Self {
        Self {
            field: field.into(),
            rule: rule.to_string(),
        }
    }
}

pub(crate) type Parsed<T> = Result<T, FieldError>;

/// A required identity number.
pub(crate) fn subject(field: &str, text: &str) -> Parsed<SubjectId> {
    if text.is_empty() {
        return Err(FieldError::new(field, "required"));
    }
    text.parse().map_err(|e| FieldError::new(field, e))
}

/// A wire role; `ROLE_UNSPECIFIED` and unknown values are errors.
pub(crate) fn role(field: &str, value: i32) -> Parsed<Role> {
    match v1::Role::try_from(value) {
        Ok(v1::Role::Clinician) => Ok(Role::Clinician),
        Ok(v1::Role::NavCounsellor) => Ok(Role::NavCounsellor),
        Ok(v1::Role::EmploymentSpecialist) => Ok(Role::EmploymentSpecialist),
        Ok(v1::Role::PrivacyOfficer) => Ok(Role::PrivacyOfficer),
        Ok(v1::Role::Jobseeker) => Ok(Role::Jobseeker),
        Ok(v1::Role::Admin) => Ok(Role::Admin),
        Ok(v1::Role::Unspecified) => Err(FieldError::new(field, "a role must be specified")),
        Err(_) => Err(FieldError::new(
            field,
            format!("unknown role value {value}"),
        )),
    }
}

/// An optional wire role: `ROLE_UNSPECIFIED` means none.
pub(crate) fn optional_role(field: &str, value: i32) -> Parsed<Option<Role>> {
    if value == v1::Role::Unspecified as i32 {
        Ok(None)
    } else {
        role(field, value).map(Some)
    }
}

pub(crate) fn role_to_wire(role: Role) -> i32 {
    (match role {
        Role::Clinician => v1::Role::Clinician,
        Role::NavCounsellor => v1::Role::NavCounsellor,
        Role::EmploymentSpecialist => v1::Role::EmploymentSpecialist,
        Role::PrivacyOfficer => v1::Role::PrivacyOfficer,
        Role::Jobseeker => v1::Role::Jobseeker,
        Role::Admin => v1::Role::Admin,
    }) as i32
}

/// A required timestamp.
pub(crate) fn timestamp(field: &str, value: Option<&prost_types::Timestamp>) -> Parsed<Timestamp> {
    let t = value.ok_or_else(|| FieldError::new(field, "required"))?;
    if !(0..1_000_000_000).contains(&t.nanos) {
        return Err(FieldError::new(field, "nanos must be within 0..1e9"));
    }
    t.seconds
        .checked_mul(1_000_000)
        .and_then(|micros| micros.checked_add(i64::from(t.nanos / 1000)))
        .map(Timestamp)
        .ok_or_else(|| FieldError::new(field, "out of range"))
}

pub(crate) fn timestamp_to_wire(t: Timestamp) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: t.0.div_euclid(1_000_000),
        nanos: i32::try_from(t.0.rem_euclid(1_000_000) * 1000).unwrap_or(0),
    }
}

/// A required SHA-256 digest.
pub(crate) fn sha256(field: &str, bytes: &[u8]) -> Parsed<[u8; 32]> {
    bytes.try_into().map_err(|_| {
        FieldError::new(
            field,
            format!("must be 32 bytes (SHA-256), got {}", bytes.len()),
        )
    })
}

/// A required, bounded, single-line text without control or format characters
/// ([`crate::base::text::check`]).
pub(crate) fn text(field: &str, value: &str, max: usize) -> Parsed<String> {
    crate::base::text::check(value, max).map_err(|rule| FieldError::new(field, rule))?;
    Ok(value.to_owned())
}
