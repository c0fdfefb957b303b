//! The roles a person acts in (DESIGN §2). Each RPC says which roles may call it.

use std::{fmt, str::FromStr};

use crate::ParseError;

/// The role of the person acting, as stated by their verified access token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Role {
    /// A therapist or psychiatrist in the treatment team (`clinician`).
    Clinician,
    /// A social worker at the NAV office, "NAV-veileder" (`nav_counsellor`).
    NavCounsellor,
    /// The IPS employment specialist, "jobbspesialist" (`employment_specialist`).
    EmploymentSpecialist,
    /// An organisation's privacy officer, "personvernombud" (`privacy_officer`).
    PrivacyOfficer,
    /// The jobseeker, acting for themself (`jobseeker`).
    Jobseeker,
    /// An operator of the gateway (`admin`).
    Admin,
}

impl Role {
    /// Every role, in declaration order. The consent store's decision index encodes a role as
    /// bit `i` for `ALL[i]` ([`crate::terms`]), so this order must not change.
    pub const ALL: [Role; 6] = [
        Role::Clinician,
        Role::NavCounsellor,
        Role::EmploymentSpecialist,
        Role::PrivacyOfficer,
        Role::Jobseeker,
        Role::Admin,
    ];

    const NAMES: &'static str =
        "clinician, nav_counsellor, employment_specialist, privacy_officer, jobseeker, admin";

    /// The token and configuration spelling, e.g. `nav_counsellor`.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Clinician => "clinician",
            Role::NavCounsellor => "nav_counsellor",
            Role::EmploymentSpecialist => "employment_specialist",
            Role::PrivacyOfficer => "privacy_officer",
            Role::Jobseeker => "jobseeker",
            Role::Admin => "admin",
        }
    }
}

impl FromStr for Role {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or(ParseError::UnknownRole {
                expected: Role::NAMES,
            })
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_role_round_trips_and_names_are_listed() {
        for role in Role::ALL {
            assert_eq!(role.as_str().parse::<Role>(), Ok(role));
            assert!(Role::NAMES.contains(role.as_str()));
        }
        assert!("Clinician".parse::<Role>().is_err());
        assert!("root".parse::<Role>().is_err());
    }
}
