//! Keys and what is done with them: the note-sealing keyring, jobseeker pseudonyms, the access-
//! token issuer, and base64 for the stores. Uses only `base`.

pub(crate) mod b64;
pub(crate) mod issuer;
pub mod keyring;
pub mod pseudonym;
