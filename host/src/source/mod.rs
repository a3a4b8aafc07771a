//! Where the cluster view comes from: manifest files (watched), or the Kubernetes API.

pub mod kube;
pub mod manifest;
pub mod watch;
