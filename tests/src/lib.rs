//! Shared test support: the conformance vectors of `../shared/conformance/` and the rules to
//! compare an answer with them (that folder's README), and a driver for the real binary.

pub mod apiserver;
pub mod cases;
pub mod server;
pub mod vectors;
