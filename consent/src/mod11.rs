//! The weighted modulus-11 check digit used by organisation and identity numbers.

/// The check digit of `digits` under `weights`, or `None` when the remainder would need the
/// digit 10 (such numbers are never issued).
pub(crate) fn check_digit(digits: &[u8], weights: &[u32]) -> Option<u8> {
    let sum: u32 = digits
        .iter()
        .zip(weights)
        .map(|(d, w)| u32::from(*d) * w)
        .sum();
    match 11 - sum % 11 {
        11 => Some(0),
        10 => None,
        c => u8::try_from(c).ok(),
    }
}
