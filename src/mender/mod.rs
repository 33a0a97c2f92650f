//! The Mender client's data: device key, mender-store and the target's binary layout.

pub mod store;
pub mod target;
