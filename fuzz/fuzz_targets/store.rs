//! Validates and reads a mutated mender-store (LMDB) file: the safe-Rust validation walk first,
//! then LMDB itself on files the walk accepted, which must read the same records.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|store_file: &[u8]| {
    let _ = mender_preauth::fuzzing::store(store_file);
});
