//! Foundations every layer may use: the clock that never goes backwards, the one way blocking work
//! leaves the runtime, the metrics recorder, Europe/Oslo time, the one rule for outside text, and
//! the settings reader with the configuration problems it collects. Uses nothing else in the crate.

pub(crate) mod blocking;
pub(crate) mod clock;
pub mod metrics;
pub(crate) mod oslo;
pub(crate) mod problem;
pub(crate) mod settings;
pub(crate) mod text;
