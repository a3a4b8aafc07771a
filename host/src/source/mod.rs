//! Where the cluster view comes from: manifest files (watched) or, later, the Kubernetes API.

pub mod manifest;
pub mod watch;
