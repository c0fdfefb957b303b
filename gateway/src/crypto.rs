//! Keys and what is done with them: the note-sealing keyring, jobseeker pseudonyms and the
//! access-token issuer. Uses only `base`.

pub(crate) mod issuer;
pub mod keyring;
pub mod pseudonym;
