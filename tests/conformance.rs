//! Every conformance vector against the core in-process (the native engine as a pure function).

use kdns_core::{Resolver, STREAM};
use kdns_tests::vectors;

/// The UDP response limit the kdns server uses by default.
const SERVER_MAX_UDP: u16 = 1232;

#[test]
fn all_vectors_pass_in_process() {
    let mut failures = Vec::new();
    let mut cases = 0;
    for vector in vectors::load_all() {
        let mut resolver = Resolver::new(vector.config()).expect("vector config is valid");
        resolver.load(vector.snapshot()).expect("vector cluster loads");
        for (i, case) in vector.cases.iter().enumerate() {
            cases += 1;
            let id = 0x1000 + i as u16;
            let max_udp = if case.is_tcp() { STREAM } else { SERVER_MAX_UDP };
            let result = match resolver.resolve(&case.message(id), max_udp) {
                Some(resp) => case.check(id, &resp),
                None => Err("no response".into()),
            };
            if let Err(e) = result {
                failures.push(format!("{} #{i} `{}`: {e}", vector.name(), case.query));
            }
        }
    }
    assert!(cases > 0, "no conformance cases found");
    assert!(failures.is_empty(), "{} of {cases} cases failed:\n{}", failures.len(), failures.join("\n"));
    println!("{cases} conformance cases passed in-process");
}
