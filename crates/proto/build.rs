//! Compiles the protos with protox (pure Rust), so no system protoc is needed. With the `grpc`
//! feature, tonic service code is generated too.
fn main() {
    println!("cargo:rerun-if-changed=proto");
    let fds = protox::compile(["kdns/v1/kdns.proto", "coredns/dns.proto"], ["proto"]).expect("the protos compile");
    if std::env::var_os("CARGO_FEATURE_GRPC").is_some() {
        tonic_prost_build::configure()
            .btree_map(".")
            // Update carries already-encoded messages, shared between watchers without copies.
            .bytes(".kdns.v1.Update")
            .build_client(true)
            .build_transport(false)
            .build_server(true)
            .compile_fds(fds)
            .expect("tonic generates the services");
    } else {
        prost_build::Config::new().btree_map(["."]).bytes([".kdns.v1.Update"]).compile_fds(fds).expect("prost generates the messages");
    }
}
