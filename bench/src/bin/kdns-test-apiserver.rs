//! The list/watch test API server (kdns-tests) as a process, for benchmarks that need a
//! Kubernetes API: serves the manifests under a directory, writes a kubeconfig for it, prints
//! its address, and runs until killed.
//!
//!   kdns-test-apiserver --manifests DIR --kubeconfig FILE

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use kdns_tests::apiserver::ApiServer;

#[derive(Parser)]
struct Args {
    /// A file or a directory of .yaml files.
    #[arg(long)]
    manifests: PathBuf,
    /// Where to write the kubeconfig that points at the server.
    #[arg(long)]
    kubeconfig: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut text = String::new();
    let files: Vec<PathBuf> = if args.manifests.is_dir() {
        let mut f: Vec<PathBuf> = std::fs::read_dir(&args.manifests)?.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml")).collect();
        f.sort();
        f
    } else {
        vec![args.manifests.clone()]
    };
    for f in files {
        text += &std::fs::read_to_string(&f).with_context(|| f.display().to_string())?;
        text += "\n---\n";
    }
    let api = ApiServer::start(&text);
    api.write_kubeconfig(&args.kubeconfig);
    println!("serving {} objects' API at http://{}", api.resource_version() - 100, api.addr);
    loop {
        std::thread::park();
    }
}
