//! Compiles `proto/kdns/v1/kdns.proto` with protox (pure Rust), so no system protoc is needed.
fn main() {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["kdns/v1/kdns.proto"], ["proto"]).expect("kdns.proto compiles");
    prost_build::Config::new()
        .btree_map(["."])
        .compile_fds(fds)
        .expect("prost generates kdns.v1");
}
