//! Storage backends beyond the embedded one (DESIGN §7, national deployment): PostgreSQL over
//! its wire protocol, reached through a pool of TLS connections, with the schema applied by
//! versioned migrations. Uses `edge` (outgoing TLS), `app`, `crypto` and `base`.

pub mod postgres;
