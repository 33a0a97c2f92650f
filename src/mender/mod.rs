//! The Mender client's data: partition roles, device key, mender-store, the target's binary
//! layout, the files on the data partition, and the files of the whole image as the device
//! sees them (`image_path`, `image_files`).

pub mod artifact_info;
pub mod data_partition;
pub mod device_key;
pub mod facts;
pub mod image_config;
pub mod image_files;
pub mod image_path;
pub mod mender_conf;
pub mod provides;
pub mod records;
pub mod roles;
pub mod rootfs;
pub mod store;
pub mod target;
