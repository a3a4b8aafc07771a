//! Writes a synthetic cluster as manifests (one YAML file per namespace) and, optionally, a
//! dnsperf query file for it.

use std::path::PathBuf;

use clap::Parser;
use kdns_bench::{Shape, manifests, queries};

#[derive(Parser)]
#[command(about = "Generate a synthetic cluster as Kubernetes manifests")]
struct Args {
    #[arg(long, default_value_t = 1000)]
    services: usize,
    #[arg(long, default_value_t = 10000)]
    endpoints: usize,
    #[arg(long, default_value_t = 20)]
    namespaces: usize,
    /// Directory to write into (created).
    #[arg(long)]
    out: PathBuf,
    /// Also write this many queries to OUT/queries.txt (dnsperf format).
    #[arg(long, default_value_t = 0)]
    queries: usize,
}

fn main() -> anyhow::Result<()> {
    let a = Args::parse();
    let shape = Shape { services: a.services, endpoints: a.endpoints, namespaces: a.namespaces };
    let manifests_dir = a.out.join("manifests");
    std::fs::create_dir_all(&manifests_dir)?;
    for (name, text) in manifests(&shape) {
        std::fs::write(manifests_dir.join(name), text)?;
    }
    if a.queries > 0 {
        let text: String = queries(&shape, a.queries).into_iter().map(|(n, t)| format!("{n} {t}\n")).collect();
        std::fs::write(a.out.join("queries.txt"), text)?;
    }
    eprintln!("wrote {} services, {} endpoints in {} namespaces to {}", a.services, a.endpoints, a.namespaces, manifests_dir.display());
    Ok(())
}
