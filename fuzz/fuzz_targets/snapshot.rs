//! Snapshot, delta and config decoding: any bytes are an error or a state that still answers.
#![no_main]

use kdns_core::Resolver;
use libfuzzer_sys::fuzz_target;

const QUERY: [u8; 45] = [
    0x12, 0x34, 0x01, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 3, b'w', b'e', b'b', 2, b'n', b's', 3, b's', b'v', b'c', 7,
    b'c', b'l', b'u', b's', b't', b'e', b'r', 5, b'l', b'o', b'c', b'a', b'l', 0, 0x00, 0x01, 0x00, 0x01, 0, 0, 0,
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else { return };
    let mut r = Resolver::default();
    let _ = match which % 3 {
        0 => r.load_bytes(bytes),
        1 => r.apply_bytes(bytes),
        _ => r.configure_bytes(bytes),
    };
    // Whatever was accepted, the engine answers.
    let _ = r.resolve(&QUERY[..42], 0).expect("an answer");
    let _ = r.resolve(&QUERY[..42], 512).expect("an answer");
});
