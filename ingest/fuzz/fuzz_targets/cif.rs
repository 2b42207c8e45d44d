//! Fuzzes the CIF tokenizer/parser: any bytes must give a document or an error.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = scalefold_ingest::cif::parse("fuzz.cif", text);
    }
});
