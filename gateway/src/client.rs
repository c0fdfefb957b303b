//! A gateway as its clients see it: the bearer token on each call, subject access reports
//! verified offline, decisions replayed from the log, and entries rendered safely for
//! terminals, spreadsheets and JSON. Used by the command line and the web pages. Uses `edge`
//! (the wire conversions), `app`, `crypto` and `base`.

pub(crate) mod bearer;
pub(crate) mod output;
pub(crate) mod render;
pub mod replay;
pub mod report;
