//! The Mender client's data: partition roles, device key, mender-store, the target's binary
//! layout, and the files on the data partition.

pub mod artifact_info;
pub mod data_partition;
pub mod device_key;
pub mod provides;
pub mod records;
pub mod roles;
pub mod rootfs;
pub mod store;
pub mod target;
