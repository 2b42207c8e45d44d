//! Fuzzes mmCIF → structure, tokenizer included.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = scalefold_ingest::parse_mmcif("fuzz.cif", data, &Default::default());
});
