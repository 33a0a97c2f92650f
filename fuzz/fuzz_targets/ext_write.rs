//! Opens a mutated ext2/3/4 image in memory and runs a sequence of writes on it. A write may
//! fail, but only before it changes the volume; what the writes leave behind is read back.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|image: &[u8]| {
    let run = mender_preauth::fuzzing::ext_write(image);
    assert!(run.changed_on_error.is_empty(), "operations changed the volume and then failed: {run:?}");
});
