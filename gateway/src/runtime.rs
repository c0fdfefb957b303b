//! Running a gateway: the configuration, the data folder, server assembly, the admin listener,
//! background tasks and shutdown. Uses `api`, `edge`, `app`, `crypto` and `base`.

pub(crate) mod admin;
pub mod config;
pub(crate) mod data_dir;
pub mod server;
pub mod shutdown;
pub(crate) mod supervisor;
