//! Parses mutated device keys (PEM: RSA, EC P-256, Ed25519; private and public) and identity
//! data (an identity script's `key=value` output and `--identity` arguments).

#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let _ = mender_preauth::fuzzing::keys_identity(input);
});
