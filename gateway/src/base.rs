//! Foundations every layer may use: the clock that never goes backwards, the metrics recorder and
//! its listener, Europe/Oslo time, and the one rule for outside text. Uses nothing else in the
//! crate.

pub mod clock;
pub mod metrics;
pub mod oslo;
pub mod problem;
pub mod text;
