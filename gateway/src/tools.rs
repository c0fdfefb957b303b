//! The command line and the development setup (`casegate dev`). The top layer.

pub mod cli;
pub mod dev;
