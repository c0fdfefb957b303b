//! Norwegian organisation numbers (organisasjonsnummer): 9 digits, the last a mod-11 check digit.

use std::{fmt, str::FromStr};

use crate::ParseError;

const WEIGHTS: [u32; 8] = [3, 2, 7, 6, 5, 4, 3, 2];

/// A syntactically valid organisation number (check digit verified).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct OrgNumber([u8; 9]);

impl OrgNumber {
    /// Completes the first eight digits with their check digit, if one exists (a remainder
    /// that would need check digit 10 has none).
    pub fn from_base(base: [u8; 8]) -> Option<Self> {
        if base.iter().any(|d| *d > 9) {
            return None;
        }
        let check = check_digit(&base)?;
        let mut digits = [0; 9];
        digits[..8].copy_from_slice(&base);
        digits[8] = check;
        Some(Self(digits))
    }

    /// The number as an integer (for compact encodings).
    pub fn as_u32(&self) -> u32 {
        self.0.iter().fold(0u32, |n, d| n * 10 + u32::from(*d))
    }

    /// The nine digits as text.
    pub fn as_string(&self) -> String {
        self.to_string()
    }
}

fn check_digit(base: &[u8; 8]) -> Option<u8> {
    crate::mod11::check_digit(base, &WEIGHTS)
}

impl FromStr for OrgNumber {
    type Err = ParseError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bytes = s.as_bytes();
        if bytes.len() != 9 || !bytes.iter().all(u8::is_ascii_digit) {
            return Err(ParseError::OrgNumberFormat);
        }
        let mut digits = [0u8; 9];
        for (d, b) in digits.iter_mut().zip(bytes) {
            *d = b - b'0';
        }
        let mut base = [0u8; 8];
        base.copy_from_slice(&digits[..8]);
        match check_digit(&base) {
            Some(c) if c == digits[8] => Ok(Self(digits)),
            _ => Err(ParseError::OrgNumberCheckDigit),
        }
    }
}

impl fmt::Display for OrgNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in self.0 {
            write!(f, "{d}")?;
        }
        Ok(())
    }
}

// Organisation numbers are public register data, so Debug shows them.
impl fmt::Debug for OrgNumber {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "OrgNumber({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(input: &str, expected: Result<(), ParseError>) {
        assert_eq!(input.parse::<OrgNumber>().map(|_| ()), expected, "{input}");
    }

    #[test]
    fn parses_and_rejects() {
        check("910000144", Ok(()));
        check("910000145", Err(ParseError::OrgNumberCheckDigit));
        check("97476067", Err(ParseError::OrgNumberFormat));
        check("9100001443", Err(ParseError::OrgNumberFormat));
        check("97476067a", Err(ParseError::OrgNumberFormat));
        check(" 910000144", Err(ParseError::OrgNumberFormat));
        check("", Err(ParseError::OrgNumberFormat));
    }

    #[test]
    fn from_base_round_trips_and_refuses_remainder_ten() {
        let mut made = 0;
        for n in 91_000_000u32..91_000_100 {
            let mut base = [0u8; 8];
            for (i, d) in n.to_string().bytes().enumerate() {
                base[i] = d - b'0';
            }
            match OrgNumber::from_base(base) {
                Some(org) => {
                    made += 1;
                    assert_eq!(org.to_string().parse::<OrgNumber>(), Ok(org));
                }
                None => {
                    // No check digit exists: every completion must be refused.
                    for c in 0..10 {
                        let s = format!("{n}{c}");
                        assert!(s.parse::<OrgNumber>().is_err(), "{s}");
                    }
                }
            }
        }
        assert!(made > 80, "only {made} of 100 bases had a check digit");
    }
}
