//! kdns-host: everything around the core that touches the world: sources of the cluster view,
//! the snapshot builder, engines, DNS servers and the `kdns` command line.

pub mod cli;
pub mod cluster;
pub mod dig;
pub mod engine;
pub mod server;
pub mod source;
