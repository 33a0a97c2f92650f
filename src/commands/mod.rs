//! The subcommands of the `mender-preauth` binary.
