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
        if let Err(e) = std::fs::copy(&prebuilt, &dest) {
            fail(&format!("KDNS_PLUGIN_WASM={prebuilt}: {e}"));
        }
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    for dir in ["crates/core/src", "crates/core/Cargo.toml", "crates/proto", "plugin-wasm", "Cargo.lock", "Cargo.toml", ".cargo/config.toml"] {
        println!("cargo:rerun-if-changed={}", root.join(dir).display());
    }
    // <target>/<profile>/build/kdns-host-*/out -> <target>/wasm-embed: a target directory of its
    // own, so this nested build never waits on the outer one's lock.
    let target_dir = out.ancestors().nth(4).map(|t| t.join("wasm-embed")).unwrap_or_else(|| out.join("wasm-embed"));
    ensure_wasm_target();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.current_dir(&root)
        .args(["build", "-p", "kdns-plugin", "--target", "wasm32-unknown-unknown", "--profile", "wasm-release", "--target-dir"])
        .arg(&target_dir);
    for var in ["RUSTFLAGS", "CARGO_ENCODED_RUSTFLAGS", "CARGO_TARGET_DIR", "CARGO_BUILD_TARGET", "CARGO_BUILD_RUSTFLAGS"] {
        cmd.env_remove(var);
    }
    match cmd.status() {
        Ok(status) if status.success() => {}
        Ok(_) => fail("building the embedded wasm module (plugin-wasm for wasm32-unknown-unknown) failed; its errors are above"),
        Err(e) => fail(&format!("cannot run cargo to build the embedded wasm module: {e}")),
    }
    let built = target_dir.join("wasm32-unknown-unknown/wasm-release/kdns_plugin.wasm");
    if let Err(e) = std::fs::copy(&built, &dest) {
        fail(&format!("{}: {e}", built.display()));
    }
}

/// A build-script failure as one line, not a panic's backtrace.
fn fail(message: &str) -> ! {
    println!("cargo::error={message}");
    std::process::exit(1);
}

/// Installs the wasm32 target with rustup when the toolchain building kdns lacks it, so that
/// `cargo build` works on a fresh machine (rustup does not add a rust-toolchain.toml's targets
/// to a toolchain that is already installed).
fn ensure_wasm_target() {
    let rustc = std::env::var("RUSTC").unwrap_or_else(|_| "rustc".into());
    let sysroot = Command::new(&rustc).args(["--print", "sysroot"]).output().ok().filter(|o| o.status.success()).map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string());
    let Some(sysroot) = sysroot else { return };
    if Path::new(&sysroot).join("lib/rustlib/wasm32-unknown-unknown/lib").is_dir() {
        return;
    }
    println!("cargo::warning=the wasm32-unknown-unknown target is missing; installing it with `rustup target add wasm32-unknown-unknown`");
    // rustup's proxies set RUSTUP_TOOLCHAIN for the build, so this adds it to the right toolchain.
    match Command::new("rustup").args(["target", "add", "wasm32-unknown-unknown"]).status() {
        Ok(s) if s.success() => {}
        Ok(_) => fail("`rustup target add wasm32-unknown-unknown` failed (see above); install the target and build again"),
        Err(_) => fail(&format!("the wasm32-unknown-unknown target is missing and rustup is not on PATH; install the target for the toolchain at {sysroot}, or set KDNS_PLUGIN_WASM=FILE to embed a prebuilt module")),
    }
}
