//! Ed25519 public keys taken from outside the gateway, and strict signature verification.
//!
//! Every Ed25519 key the project accepts from a file, a configuration or a network peer — a
//! token issuer's JWKS key (RFC 8037 §2), a C2SP signed-note verifier key — goes through
//! [`PublicKey::from_bytes`], which refuses the encodings that make signatures meaningless:
//!
//! - a **small-order point** (one of the eight points of order dividing 8, the identity among
//!   them): with such a key `A`, the signature `R = identity, S = 0` verifies for every message
//!   under the cofactorless equation `[S]B = R + [k]A`;
//! - a **non-canonical encoding** (a `y` coordinate not reduced modulo p = 2^255 − 19): two
//!   byte strings would then name one key, and a key id computed over the bytes would not
//!   identify the key.
//!
//! Signatures are checked by [`PublicKey::verify_strict`], RFC 8032 §5.1.7 with the stricter
//! rules of ed25519-dalek's `verify_strict`: `S` must be canonical (`S < L`), `R` must not be a
//! small-order point, and `R` must be the canonical encoding of the recomputed point.

use ed25519_dalek::{Signature, VerifyingKey};

/// Length of an Ed25519 public key, in bytes (RFC 8032 §5.1.5).
pub const PUBLIC_KEY_LENGTH: usize = 32;
/// Length of an Ed25519 signature, in bytes (RFC 8032 §5.1.6).
pub const SIGNATURE_LENGTH: usize = 64;

/// Why bytes are not an acceptable Ed25519 public key. Messages never repeat the key bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    /// Not 32 bytes; holds the length given.
    #[error("an Ed25519 public key is 32 bytes, not {0}")]
    Length(usize),
    /// The bytes do not decompress to a point on the curve.
    #[error("not a point on the Ed25519 curve")]
    NotOnCurve,
    /// A `y` coordinate not reduced modulo p = 2^255 - 19.
    #[error("non-canonical Ed25519 point encoding (y not reduced modulo 2^255-19)")]
    NonCanonical,
    /// A point of small order (dividing 8): signatures under it can be forged.
    #[error(
        "small-order Ed25519 point (a weak key: signatures under it can be forged for any message)"
    )]
    SmallOrder,
}

/// Why a signature did not verify.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// Not 64 bytes; holds the length given.
    #[error("an Ed25519 signature is 64 bytes, not {0}")]
    Length(usize),
    /// The signature fails verification under the strict rules.
    #[error("Ed25519 signature does not verify (strict RFC 8032 rules)")]
    Invalid,
}

/// An Ed25519 public key that is a canonically encoded point of large order.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl std::fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("PublicKey").field(self.0.as_bytes()).finish()
    }
}

impl PublicKey {
    /// Parses a 32-byte compressed Edwards point (RFC 8032 §5.1.3), refusing points off the
    /// curve, non-canonical encodings and small-order points.
    ///
    /// # Errors
    /// [`KeyError`] naming the rule the bytes break.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let array: &[u8; PUBLIC_KEY_LENGTH] = bytes
            .try_into()
            .map_err(|_| KeyError::Length(bytes.len()))?;
        let key = VerifyingKey::from_bytes(array).map_err(|_| KeyError::NotOnCurve)?;
        // Decompression reduces y modulo p, so a non-canonical encoding decodes to the same
        // point as its canonical one; re-encoding tells them apart.
        if key.to_edwards().compress().as_bytes() != array {
            return Err(KeyError::NonCanonical);
        }
        if key.is_weak() {
            return Err(KeyError::SmallOrder);
        }
        Ok(Self(key))
    }

    /// The key's 32 bytes (its canonical encoding).
    pub fn as_bytes(&self) -> &[u8; PUBLIC_KEY_LENGTH] {
        self.0.as_bytes()
    }

    /// Verifies a 64-byte signature over `message` under the strict rules in the module
    /// documentation.
    ///
    /// # Errors
    /// [`SignatureError::Length`] for a signature of the wrong size, [`SignatureError::Invalid`]
    /// for one that does not verify.
    pub fn verify_strict(&self, message: &[u8], signature: &[u8]) -> Result<(), SignatureError> {
        let signature = Signature::from_slice(signature)
            .map_err(|_| SignatureError::Length(signature.len()))?;
        self.0
            .verify_strict(message, &signature)
            .map_err(|_| SignatureError::Invalid)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The eight small-order points' canonical encodings (the torsion subgroup E[8]), as
    /// listed in libsodium's `ge25519_has_small_order` and "Taming the many EdDSAs" (Chalkias
    /// et al., 2020), table 5.
    const SMALL_ORDER: [&str; 8] = [
        "0100000000000000000000000000000000000000000000000000000000000000",
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
        "0000000000000000000000000000000000000000000000000000000000000000",
        "0000000000000000000000000000000000000000000000000000000000000080",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05",
        "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc85",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac037a",
        "c7176a703d4dd84fba3c0b760d10670f2a2053fa2c39ccc64ec7fd7792ac03fa",
    ];

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
            .collect()
    }

    /// p + y in little-endian, for y < 19: the non-canonical encoding of the point with that y.
    fn non_canonical(y: u8) -> [u8; 32] {
        // p = 2^255 - 19 = 0x7fff…ffed
        let mut bytes = [0xffu8; 32];
        bytes[0] = 0xed + y;
        bytes[31] = 0x7f;
        bytes
    }

    #[test]
    fn every_small_order_point_is_refused() {
        for hex in SMALL_ORDER {
            let bytes = unhex(hex);
            let refused = PublicKey::from_bytes(&bytes);
            assert!(
                matches!(
                    refused,
                    Err(KeyError::SmallOrder | KeyError::NonCanonical | KeyError::NotOnCurve)
                ),
                "{hex}: {refused:?}"
            );
        }
        assert_eq!(
            PublicKey::from_bytes(&unhex(SMALL_ORDER[0])),
            Err(KeyError::SmallOrder)
        );
    }

    #[test]
    fn non_canonical_encodings_are_refused() {
        let mut on_curve = 0;
        for y in 0..19u8 {
            let bytes = non_canonical(y);
            if VerifyingKey::from_bytes(&bytes).is_ok() {
                on_curve += 1;
                assert!(
                    matches!(
                        PublicKey::from_bytes(&bytes),
                        Err(KeyError::NonCanonical | KeyError::SmallOrder)
                    ),
                    "y = p + {y} accepted"
                );
            }
        }
        assert!(on_curve > 0, "no non-canonical encoding decoded at all");
    }

    #[test]
    fn wrong_lengths_and_points_off_the_curve_are_refused() {
        assert_eq!(PublicKey::from_bytes(&[1u8; 31]), Err(KeyError::Length(31)));
        assert_eq!(PublicKey::from_bytes(&[1u8; 33]), Err(KeyError::Length(33)));
        // y = 2 has no x on the curve.
        let mut off = [0u8; 32];
        off[0] = 2;
        assert_eq!(PublicKey::from_bytes(&off), Err(KeyError::NotOnCurve));
    }

    #[test]
    fn forged_signature_under_the_identity_verifies_under_ring_but_the_key_is_refused() {
        // R = identity, S = 0: verifies for any message under a small-order key with the
        // cofactorless equation, which is what ring checks.
        let mut forged = [0u8; SIGNATURE_LENGTH];
        forged[0] = 1;
        let identity = unhex(SMALL_ORDER[0]);
        let ring_key =
            ring::signature::UnparsedPublicKey::new(&ring::signature::ED25519, &identity);
        assert!(ring_key.verify(b"any message", &forged).is_ok());
        assert_eq!(PublicKey::from_bytes(&identity), Err(KeyError::SmallOrder));
    }

    #[test]
    fn strict_verification_accepts_real_signatures_and_refuses_altered_ones() {
        use ring::signature::{Ed25519KeyPair, KeyPair};
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).expect("key");
        let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).expect("key");
        let key = PublicKey::from_bytes(pair.public_key().as_ref()).expect("a real key");
        let signature = pair.sign(b"message");
        assert_eq!(key.verify_strict(b"message", signature.as_ref()), Ok(()));
        assert_eq!(
            key.verify_strict(b"massage", signature.as_ref()),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            key.verify_strict(b"message", &signature.as_ref()[..63]),
            Err(SignatureError::Length(63))
        );
        // S + L is the same scalar, non-canonically encoded: refused.
        let mut malleated = [0u8; SIGNATURE_LENGTH];
        malleated.copy_from_slice(signature.as_ref());
        add_group_order(&mut malleated[32..]);
        assert_eq!(
            key.verify_strict(b"message", &malleated),
            Err(SignatureError::Invalid)
        );
        // A small-order R with S = 0 is refused even though the key is good.
        let mut small_r = [0u8; SIGNATURE_LENGTH];
        small_r[0] = 1;
        assert_eq!(
            key.verify_strict(b"message", &small_r),
            Err(SignatureError::Invalid)
        );
    }

    /// Adds the group order L (RFC 8032 §5.1) to a 32-byte little-endian scalar.
    fn add_group_order(s: &mut [u8]) {
        const L: [u8; 32] = [
            0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9,
            0xde, 0x14, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
        ];
        let mut carry = 0u16;
        for (byte, l) in s.iter_mut().zip(L) {
            let sum = u16::from(*byte) + u16::from(l) + carry;
            *byte = sum as u8;
            carry = sum >> 8;
        }
    }
}
