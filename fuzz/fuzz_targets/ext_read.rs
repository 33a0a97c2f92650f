//! Opens a mutated ext2/3/4 image and reads everything reachable: directories (linear and
//! htree), metadata, file contents, symbolic links and extended attributes.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|image: &[u8]| {
    let _ = mender_preauth::fuzzing::ext_read(image);
});
