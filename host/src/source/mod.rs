//! Where the cluster view comes from: manifest files (watched), the Kubernetes API, or another
//! kdns's snapshot stream.

pub mod kube;
pub mod manifest;
pub mod stream;
pub mod watch;
