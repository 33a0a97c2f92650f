//! Opens a mutated ext2/3/4 image in memory and runs a sequence of writes on it. A write may
//! fail, but only before its first write to the volume; what the writes leave behind is read
//! back.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|image: &[u8]| {
    let run = mender_preauth::fuzzing::ext_write(image);
    assert!(
        run.wrote_on_error.is_empty(),
        "operations wrote to the volume and then failed: {:?}; errors: {:?}",
        run.wrote_on_error,
        run.errors
    );
});
