//! Builds the kdns wasm module (plugin-wasm) and embeds it, so `kdns serve --engine wasm`
//! needs no extra file. KDNS_PLUGIN_WASM=FILE embeds a prebuilt module instead.

use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let dest = out.join("kdns_plugin.wasm");
    println!("cargo:rerun-if-env-changed=KDNS_PLUGIN_WASM");
    if let Ok(prebuilt) = std::env::var("KDNS_PLUGIN_WASM") {
        println!("cargo:rerun-if-changed={prebuilt}");
        std::fs::copy(&prebuilt, &dest).unwrap_or_else(|e| panic!("KDNS_PLUGIN_WASM={prebuilt}: {e}"));
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    for dir in ["crates/core/src", "crates/core/Cargo.toml", "crates/proto", "plugin-wasm", "Cargo.lock", "Cargo.toml", ".cargo/config.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    // <target>/<profile>/build/kdns-host-*/out -> <target>/wasm-embed: a target directory of its
    // own, so this nested build never waits on the outer one's lock.
    let target_dir = out.ancestors().nth(4).map(|t| t.join("wasm-embed")).unwrap_or_else(|| out.join("wasm-embed"));
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "-p", "kdns-plugin", "--target", "wasm32-unknown-unknown", "--profile", "wasm-release", "--target-dir"])
        .arg(&target_dir);
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "CARGO_BUILD_RUSTFLAGS"] {
        cmd.env_remove(var);
    }
    let status = cmd.status().expect("running cargo to build the wasm module");
    if !status.success() {
        panic!("building plugin-wasm for wasm32-unknown-unknown failed; is the target installed? (rustup target add wasm32-unknown-unknown, or run tests/setup)");
    }
    let built = target_dir.join("wasm32-unknown-unknown/wasm-release/kdns_plugin.wasm");
    std::fs::copy(&built, &dest).unwrap_or_else(|e| panic!("{}: {e}", built.display()));
}
