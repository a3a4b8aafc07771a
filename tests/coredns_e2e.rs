//! kdns behind a stock CoreDNS (built from its Go module by tests/setup): the `grpc` plugin
//! forwards every name to `kdns serve --grpc-listen`, and dig asks CoreDNS.

use kdns_tests::cases::{run_case_raw_tcp, run_case_with_dig};
use kdns_tests::server::{CoreDns, Kdns, TempDir};
use kdns_tests::vectors;

#[test]
fn every_vector_through_stock_coredns_grpc() {
    let dir = TempDir::new("coredns-grpc");
    let mut failures = Vec::new();
    let mut asked = 0;
    for v in vectors::load_all() {
        let file = dir.path(&format!("{}.yaml", v.name()));
        std::fs::write(&file, &v.cluster).unwrap();
        let mut args = v.flags();
        args.extend(["--manifests".into(), file.display().to_string(), "--grpc-listen".into(), "127.0.0.1:0".into()]);
        let kdns = Kdns::start(&args);
        let grpc = kdns.grpc.expect("grpc address in the start line");
        let coredns = CoreDns::start(&format!(".:{{PORT}} {{\n    bind 127.0.0.1\n    grpc . {grpc}\n}}\n"));
        for (i, case) in v.cases.iter().enumerate() {
            let (_, rtype) = case.name_and_type();
            let transfer = matches!(rtype.to_string().as_str(), "AXFR" | "IXFR");
            let tcp = case.is_tcp();
            asked += 1;
            let result = if transfer { run_case_raw_tcp(coredns.addr, case) } else { run_case_with_dig(coredns.addr, coredns.addr, case, tcp) };
            if let Err(e) = result {
                failures.push(format!("{} #{i} `{}`: {e}", v.name(), case.query));
            }
        }
    }
    assert!(failures.is_empty(), "{} of {asked} failed through CoreDNS:\n{}", failures.len(), failures.join("\n"));
    println!("{asked} vector cases passed through stock CoreDNS + grpc + kdns");
}
