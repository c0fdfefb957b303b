//! Norwegian national identity numbers (fødselsnummer) and D-numbers: the jobseeker's identity.
//!
//! Eleven digits: date of birth (DDMMYY), a three-digit individual number and two mod-11 check
//! digits (Skatteetaten, "Fødselsnummer"; Folkeregisteret, "Nytt fødselsnummer fra 2032").
//!
//! - D-numbers add 40 to the day; H-numbers and NAV's synthetic test identities add 40 to the
//!   month, Skatteetaten's synthetic test identities (Tenor) 80.
//! - First check digit: the weighted sum of the first ten digits (weights 3 7 6 1 8 9 4 5 2 1)
//!   modulo 11 must be 0 under the rules before 2032, and may be 0, 1, 2 or 3 for numbers
//!   issued from 1 January 2032. Both are accepted: no number changes when the rules do.
//! - Second check digit: the weighted sum of all eleven digits (5 4 3 2 7 6 5 4 3 2 1) modulo
//!   11 must be 0, as before.
//! - From 2032 the individual number no longer says the century, so the date is checked
//!   against every century it may be in (29 February wherever a year ending in those two digits
//!   can be a leap year).
//! - FH numbers (the health sector's help numbers, first digit 8 or 9) are not identity
//!   numbers of the population register and are refused as such.

use std::{fmt, str::FromStr};

use crate::{
    ParseError,
    mod11::{check_digit, remainder},
};

/// Weights of the first check digit (over the first nine digits; the check digit itself
/// weighs 1).
const K1: [u32; 10] = [3, 7, 6, 1, 8, 9, 4, 5, 2, 1];
/// Weights of the second check digit (over the first ten digits; itself weighs 1).
const K2: [u32; 11] = [5, 4, 3, 2, 7, 6, 5, 4, 3, 2, 1];
/// The remainders the first check digit may leave: 0 before 2032, 0 to 3 from 2032.
const K1_REMAINDERS: std::ops::RangeInclusive<u32> = 0..=3;

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
    /// number, if that combination has valid check digits under the rules before 2032 (whose
    /// individual numbers still say the century). For fixtures and dev data only.
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
        let k1 = check_digit(&head, &K1[..9])?;
        let mut ten = [0u8; 10];
        ten[..9].copy_from_slice(&head);
        ten[9] = k1;
        let k2 = check_digit(&ten, &K2[..10])?;
        let mut digits = [0u8; 11];
        digits[..10].copy_from_slice(&ten);
        digits[10] = k2;
        let id = Self(digits);
        date_error(&id.0).is_none().then_some(id)
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
}

/// What is wrong with the date of birth in `d`, if anything: the month first (after taking
/// off the H-number or synthetic offset), then the day (after the D-number offset).
fn date_error(d: &[u8; 11]) -> Option<ParseError> {
    let mut day = d[0] * 10 + d[1];
    let mut month = d[2] * 10 + d[3];
    let yy = d[4] * 10 + d[5];
    if day > 40 {
        day -= 40; // D-number
    }
    if month > 80 {
        month -= 80; // synthetic test identity (Skatteetaten)
    } else if month > 40 {
        month -= 40; // H-number, synthetic test identity (NAV)
    }
    if !(1..=12).contains(&month) {
        return Some(ParseError::SubjectIdMonth);
    }
    // The individual number no longer fixes the century: a year ending in 00 may be 2000
    // (a leap year), and every other year ending in a multiple of 4 is one in any century.
    let leap = yy.is_multiple_of(4);
    let days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    (day == 0 || day > days).then_some(ParseError::SubjectIdDay)
}

/// The century implied by the individual number and two-digit year under the allocation rules
/// before 2032; used only to make synthetic identities that are valid under both.
fn century(individual: u16, yy: u8) -> Option<u16> {
    match individual {
        0..=499 => Some(1900),
        500..=749 if yy >= 54 => Some(1800),
        500..=999 if yy <= 39 => Some(2000),
        900..=999 if yy >= 40 => Some(1900),
        _ => None,
    }
}

impl FromStr for SubjectId {
    type Err = ParseError;

    /// Parses eleven digits, checking in this order (each refusal names the rule and never
    /// the number): the format, not an FH number, the first check digit (remainder 0-3), the
    /// second check digit (remainder 0), the month, the day.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 11 || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::SubjectIdFormat);
        }
        let mut digits = [0u8; 11];
        for (d, b) in digits.iter_mut().zip(bytes) {
            *d = b - b'0';
        }
        if digits[0] >= 8 {
            return Err(ParseError::SubjectIdFhNumber);
        }
        if !K1_REMAINDERS.contains(&remainder(&digits[..10], &K1)) {
            return Err(ParseError::SubjectIdFirstCheckDigit);
        }
        if remainder(&digits, &K2) != 0 {
            return Err(ParseError::SubjectIdSecondCheckDigit);
        }
        if let Some(e) = date_error(&digits) {
            return Err(e);
        }
        Ok(Self(digits))
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

    /// Completes nine digits with a first check digit leaving `k1_rest` (0 before 2032, 0-3
    /// from 2032) and the second check digit, if both exist.
    fn complete(first9: &str, k1_rest: u32) -> Option<String> {
        let mut d: Vec<u8> = first9.bytes().map(|b| b - b'0').collect();
        let k1 = (k1_rest + 11 - remainder(&d, &K1[..9])) % 11;
        d.push(u8::try_from(k1).ok().filter(|k| *k < 10)?);
        let k2 = (11 - remainder(&d, &K2[..10])) % 11;
        d.push(u8::try_from(k2).ok().filter(|k| *k < 10)?);
        Some(d.iter().map(|x| char::from(b'0' + x)).collect())
    }

    fn parse(number: &str) -> Result<(), ParseError> {
        let parsed = number.parse::<SubjectId>();
        if let Ok(id) = parsed {
            assert_eq!(id.expose(), number);
        }
        parsed.map(|_| ())
    }

    #[test]
    fn synthetic_identities_parse() {
        let id = SubjectId::synthetic(1, 1, 1990, 123).expect("valid synthetic identity");
        assert_eq!(id.expose().parse::<SubjectId>(), Ok(id));
        assert_eq!(&id.expose()[2..4], "81");
    }

    /// The worked examples of Folkeregisteret's "Nytt fødselsnummer fra 2032" (numbers for
    /// births and allocations after 2032, so no one holds them yet) and synthetic numbers that
    /// only the rules from 2032 allow.
    #[test]
    fn numbers_of_the_rules_from_2032_parse() {
        let cases = [
            "02013299997", // born 2 Jan 2032, first check digit rest 0
            "30108299920", // born 1982, allocated in 2032 from individual number 999, rest 0
            "30108299939", // the next one on that date: rest 1
            "15838510083", // synthetic, rest 1
            "15838510091", // synthetic, rest 2
            "15838510180", // synthetic, rest 3
            "15834060091", // synthetic, individual number 600 with year 40 (no century)
        ];
        for number in cases {
            assert_eq!(parse(number), Ok(()), "case {}", &number[..4]);
        }
        // The helper agrees with the published worked examples.
        assert_eq!(complete("020132999", 0).as_deref(), Some("02013299997"));
        assert_eq!(complete("301082999", 1).as_deref(), Some("30108299939"));
    }

    /// The first number with date digits `date` and an individual number at or below `from`
    /// that has check digits for `rest`.
    fn first_with(date: &str, from: u16, rest: u32) -> String {
        (0..=from)
            .rev()
            .find_map(|i| complete(&format!("{date}{i:03}"), rest))
            .unwrap_or_else(|| panic!("no individual number fits"))
    }

    /// One row per rule. Ordinary numbers and D-numbers are born 2032-2039 (individual
    /// numbers 500-999), so no one holds them; the others are synthetic.
    #[test]
    fn table() {
        use ParseError::*;
        // (date digits, highest individual number to try, rest of the first check digit,
        // expected)
        let cases: &[(&str, u16, u32, Result<(), ParseError>)] = &[
            ("020135", 999, 0, Ok(())), // fødselsnummer, rules before 2032
            ("020135", 999, 1, Ok(())), // fødselsnummer, rules from 2032
            ("020135", 999, 2, Ok(())),
            ("020135", 999, 3, Ok(())),
            ("020135", 999, 4, Err(SubjectIdFirstCheckDigit)), // rest 4: never valid
            ("020135", 999, 10, Err(SubjectIdFirstCheckDigit)),
            ("420135", 999, 0, Ok(())),              // D-number (day + 40)
            ("420135", 999, 3, Ok(())),              // D-number, rules from 2032
            ("710335", 999, 0, Ok(())),              // D-number, 31 March
            ("710435", 999, 0, Err(SubjectIdDay)),   // D-number, 31 April
            ("400135", 999, 0, Err(SubjectIdDay)),   // D-number, day 0
            ("024135", 999, 0, Ok(())),              // H-number / NAV synthetic (month + 40)
            ("028135", 999, 0, Ok(())),              // Skatteetaten synthetic (month + 80)
            ("428185", 499, 0, Ok(())),              // synthetic D-number
            ("018190", 499, 2, Ok(())),              // synthetic, rules from 2032
            ("018145", 899, 0, Ok(())),              // 500-899 with year 40-53: no century
            ("290236", 999, 0, Ok(())),              // 29 Feb 2036 (leap year)
            ("298200", 499, 0, Ok(())),              // 29 Feb of a year 00 (2000 is leap)
            ("298290", 499, 0, Err(SubjectIdDay)),   // 29 Feb of a year 90 (never leap)
            ("290237", 999, 0, Err(SubjectIdDay)),   // 29 Feb 2037
            ("310635", 999, 0, Err(SubjectIdDay)),   // 31 June
            ("320135", 999, 0, Err(SubjectIdDay)),   // day 32
            ("000135", 999, 0, Err(SubjectIdDay)),   // day 0
            ("011335", 999, 0, Err(SubjectIdMonth)), // month 13
            ("010035", 999, 0, Err(SubjectIdMonth)), // month 0
            ("012535", 999, 0, Err(SubjectIdMonth)), // month 25
            ("015335", 999, 0, Err(SubjectIdMonth)), // month 40 + 13
            ("019335", 999, 0, Err(SubjectIdMonth)), // month 80 + 13
            ("808190", 499, 0, Err(SubjectIdFhNumber)), // FH number (first digit 8)
            ("918190", 499, 0, Err(SubjectIdFhNumber)), // FH number (first digit 9)
        ];
        for (i, (date, from, rest, expected)) in cases.iter().enumerate() {
            let number = first_with(date, *from, *rest % 11);
            let parsed = parse(&number);
            assert_eq!(parsed, *expected, "row {i}");
            if let Err(e) = parsed {
                assert!(
                    !e.to_string().contains(&number),
                    "row {i} repeats the input"
                );
            }
        }
    }

    #[test]
    fn each_check_digit_is_named() {
        let good = complete("018190123", 0).expect("check digits");
        let mut digits = good.clone().into_bytes();
        // The second check digit off by one: only the second check fails.
        digits[10] = if digits[10] == b'9' {
            b'0'
        } else {
            digits[10] + 1
        };
        let bad_k2 = String::from_utf8(digits).expect("ascii");
        assert_eq!(parse(&bad_k2), Err(ParseError::SubjectIdSecondCheckDigit));
        // Rest 5 is never valid; the second check digit is made to fit.
        let bad_k1 = first_with("018190", 499, 5);
        assert_eq!(parse(&bad_k1), Err(ParseError::SubjectIdFirstCheckDigit));
    }

    #[test]
    fn rejects_format() {
        let good = complete("018190123", 0).expect("check digits");
        assert_eq!(parse(&good[..10]), Err(ParseError::SubjectIdFormat));
        assert_eq!(parse(&format!("{good}0")), Err(ParseError::SubjectIdFormat));
        assert_eq!(parse("0181901234a"), Err(ParseError::SubjectIdFormat));
        assert_eq!(
            parse("0181901234\u{0660}"),
            Err(ParseError::SubjectIdFormat)
        );
    }

    /// An FH number is refused as what it is, not as a number with an impossible date.
    #[test]
    fn fh_numbers_are_refused_as_fh_numbers() {
        let fh = first_with("808190", 499, 0);
        let e = parse(&fh).expect_err("FH number");
        assert!(e.to_string().starts_with("FH numbers"), "{e}");
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
