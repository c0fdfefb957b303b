//! The weighted modulus-11 check digit used by organisation and identity numbers.

/// The check digit of `digits` under `weights`, or `None` when the remainder would need the
/// digit 10 (such numbers are never issued).
pub(crate) fn check_digit(digits: &[u8], weights: &[u32]) -> Option<u8> {
    match 11 - remainder(digits, weights) {
        11 => Some(0),
        10 => None,
        c => u8::try_from(c).ok(),
    }
}

/// The weighted sum of `digits` under `weights`, modulo 11 (the "rest" of a modulus check).
pub(crate) fn remainder(digits: &[u8], weights: &[u32]) -> u32 {
    let sum: u32 = digits
        .iter()
        .zip(weights)
        .map(|(d, w)| u32::from(*d) * w)
        .sum();
    sum % 11
}
