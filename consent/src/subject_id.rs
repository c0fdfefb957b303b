//! Norwegian national identity numbers (fødselsnummer) and D-numbers: the jobseeker's identity.
//!
//! Eleven digits: date of birth (DDMMYY), a three-digit individual number and two mod-11 check
//! digits. D-numbers add 40 to the day; H-numbers 40 to the month; synthetic test identities
//! (as issued for test environments) add 80 to the month.

use std::{fmt, str::FromStr};

use crate::{ParseError, mod11::check_digit};

const K1: [u32; 9] = [3, 7, 6, 1, 8, 9, 4, 5, 2];
const K2: [u32; 10] = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2];

/// A national identity number or D-number whose check digits and date are valid.
///
/// This is personal data: `Debug` hides it, there is no `Display`, and reading it takes an
/// explicit [`SubjectId::expose`].
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SubjectId([u8; 11]);

impl SubjectId {
    /// The eleven digits, for the places that must have them (the consent store, the wire).
    pub fn expose(&self) -> String {
        self.0.iter().map(|d| char::from(b'0' + d)).collect()
    }

    /// A synthetic test identity (month + 80) for the given date of birth and individual
    /// number, if that combination has valid check digits. For fixtures and dev data only.
    pub fn synthetic(day: u8, month: u8, year: u16, individual: u16) -> Option<Self> {
        let yy = u8::try_from(year % 100).ok()?;
        if individual > 999 || century(individual, yy) != Some(year - u16::from(yy)) {
            return None;
        }
        let head = [
            day / 10,
            day % 10,
            (month + 80) / 10,
            (month + 80) % 10,
            yy / 10,
            yy % 10,
            u8::try_from(individual / 100).ok()?,
            u8::try_from(individual / 10 % 10).ok()?,
            u8::try_from(individual % 10).ok()?,
        ];
        let k1 = check_digit(&head, &K1)?;
        let mut ten = [0u8; 10];
        ten[..9].copy_from_slice(&head);
        ten[9] = k1;
        let k2 = check_digit(&ten, &K2)?;
        let mut digits = [0u8; 11];
        digits[..10].copy_from_slice(&ten);
        digits[10] = k2;
        let id = Self(digits);
        id.date_is_plausible().then_some(id)
    }

    /// Every synthetic test identity, in a fixed order (for fixtures and benchmarks).
    pub fn synthetic_all() -> impl Iterator<Item = Self> {
        (1950u16..2000).flat_map(|year| {
            (1u8..=12).flat_map(move |month| {
                (1u8..=28).flat_map(move |day| {
                    (100u16..500).filter_map(move |i| Self::synthetic(day, month, year, i))
                })
            })
        })
    }

    fn date_is_plausible(&self) -> bool {
        let d = &self.0;
        let mut day = d[0] * 10 + d[1];
        let mut month = d[2] * 10 + d[3];
        let yy = d[4] * 10 + d[5];
        let individual = u16::from(d[6]) * 100 + u16::from(d[7]) * 10 + u16::from(d[8]);
        if day > 40 {
            day -= 40; // D-number
        }
        if month > 80 {
            month -= 80; // synthetic test identity
        } else if month > 40 {
            month -= 40; // H-number
        }
        let Some(century) = century(individual, yy) else {
            return false;
        };
        let year = century + u16::from(yy);
        (1..=12).contains(&month) && day >= 1 && day <= days_in_month(month, year)
    }
}

/// The century implied by the individual number and two-digit year, per the population
/// register's allocation rules.
fn century(individual: u16, yy: u8) -> Option<u16> {
    match individual {
        0..=499 => Some(1900),
        500..=749 if yy >= 54 => Some(1800),
        500..=999 if yy <= 39 => Some(2000),
        900..=999 if yy >= 40 => Some(1900),
        _ => None,
    }
}

fn days_in_month(month: u8, year: u16) -> u8 {
    match month {
        2 if (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400) => {
            29
        }
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

impl FromStr for SubjectId {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 11 || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::SubjectIdFormat);
        }
        let mut digits = [0u8; 11];
        for (d, b) in digits.iter_mut().zip(bytes) {
            *d = b - b'0';
        }
        if check_digit(&digits[..9], &K1) != Some(digits[9])
            || check_digit(&digits[..10], &K2) != Some(digits[10])
        {
            return Err(ParseError::SubjectIdCheckDigits);
        }
        let id = Self(digits);
        if !id.date_is_plausible() {
            return Err(ParseError::SubjectIdDate);
        }
        Ok(id)
    }
}

impl fmt::Debug for SubjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SubjectId(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_check_digits(first9: &str) -> String {
        let d: Vec<u8> = first9.bytes().map(|b| b - b'0').collect();
        let k1 = check_digit(&d, &K1).expect("k1 exists");
        let mut ten = d.clone();
        ten.push(k1);
        let k2 = check_digit(&ten, &K2).expect("k2 exists");
        format!("{first9}{k1}{k2}")
    }

    #[test]
    fn synthetic_identities_parse() {
        let id = SubjectId::synthetic(1, 1, 1990, 123).expect("valid synthetic identity");
        assert_eq!(id.expose().parse::<SubjectId>(), Ok(id));
        assert_eq!(&id.expose()[2..4], "81");
    }

    #[test]
    fn table() {
        // (first nine digits, expected outcome once completed with valid check digits)
        let cases: &[(&str, Result<(), ParseError>)] = &[
            ("018190123", Ok(())),                         // synthetic, 1 Jan 1990
            ("410190123", Ok(())),                         // D-number, 1 Jan 1990
            ("014190123", Ok(())),                         // H-number
            ("290200500", Ok(())),                         // 29 Feb 2000 (leap year)
            ("290290123", Err(ParseError::SubjectIdDate)), // 29 Feb 1990
            ("320190123", Err(ParseError::SubjectIdDate)), // day 32
            ("011390123", Err(ParseError::SubjectIdDate)), // month 13
            ("000190123", Err(ParseError::SubjectIdDate)), // day 0
            ("010145600", Err(ParseError::SubjectIdDate)), // 500-899 with yy 40-53: unused
        ];
        for (first9, expected) in cases {
            // Some heads have no valid check digits; the table only uses ones that do.
            let full = with_check_digits(first9);
            assert_eq!(full.parse::<SubjectId>().map(|_| ()), *expected, "{first9}");
        }
    }

    #[test]
    fn rejects_format_and_check_digits() {
        let good = with_check_digits("018190123");
        let mut bad = good.clone().into_bytes();
        bad[10] = if bad[10] == b'9' { b'0' } else { bad[10] + 1 };
        let bad = String::from_utf8(bad).expect("ascii");
        assert_eq!(
            bad.parse::<SubjectId>(),
            Err(ParseError::SubjectIdCheckDigits)
        );
        assert_eq!(
            good[..10].parse::<SubjectId>(),
            Err(ParseError::SubjectIdFormat)
        );
        assert_eq!(
            format!("{good}0").parse::<SubjectId>(),
            Err(ParseError::SubjectIdFormat)
        );
        assert_eq!(
            "0181901234a".parse::<SubjectId>(),
            Err(ParseError::SubjectIdFormat)
        );
    }

    #[test]
    fn synthetic_identities_are_plentiful_and_distinct() {
        let ids: Vec<SubjectId> = SubjectId::synthetic_all().take(1000).collect();
        let mut unique = ids.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 1000);
        assert!(
            ids.iter()
                .all(|id| id.expose().parse::<SubjectId>() == Ok(*id))
        );
    }

    #[test]
    fn debug_never_shows_the_number() {
        let id = SubjectId::synthetic(1, 1, 1990, 123).expect("valid");
        assert!(!format!("{id:?}").contains(&id.expose()));
    }
}
