//! kdns-host: everything around the core that touches the world: sources of the cluster view,
//! the snapshot builder, engines, DNS servers and the `kdns` command line.

pub mod cluster;
pub mod source;
