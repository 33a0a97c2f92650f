//! Reads the partition table (MBR with its chain of extended boot records, or GPT) of a mutated
//! disk image, with the sector size detected and with each size given.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|image: &[u8]| {
    let runs = mender_preauth::fuzzing::partition_table(image).expect("writing the temporary image failed");
    for table in runs.iter().flatten() {
        for partition in &table.partitions {
            assert!(
                partition.end() <= image.len() as u64,
                "partition past the end of the image: {partition:?}"
            );
        }
    }
});
