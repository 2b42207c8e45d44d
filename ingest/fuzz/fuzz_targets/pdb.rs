//! Fuzzes the pdb parser: any bytes must give a result or a typed error, never a panic.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = scalefold_ingest::parse_pdb("fuzz.pdb", data);
});
