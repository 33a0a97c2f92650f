//! Reads the MBR and the chain of extended boot records of a mutated disk image.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|image: &[u8]| {
    let run = mender_preauth::fuzzing::partition_table(image).expect("writing the temporary image failed");
    if let Ok(table) = run {
        for partition in &table.partitions {
            assert!(
                partition.end() <= image.len() as u64,
                "partition past the end of the image: {partition:?}"
            );
        }
    }
});
