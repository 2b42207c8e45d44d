//! Fuzzes the a3m parser: any bytes must give a result or a typed error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = scalefold_ingest::parse_a3m("fuzz.a3m", data);
});
