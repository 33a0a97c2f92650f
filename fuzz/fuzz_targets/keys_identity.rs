//! Parses mutated device keys (PEM: RSA, EC P-256, Ed25519; private and public) and identity
//! data (an identity script's `key=value` output and `--identity` arguments). A private key that
//! parses must survive being written as the device's PEM and read back.

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let run = mender_preauth::fuzzing::keys_identity(input);
    if let Some(round_trip) = &run.private_key_round_trip {
        assert!(matches!(round_trip, Ok(true)), "private key does not round-trip: {run:?}");
    }
});
