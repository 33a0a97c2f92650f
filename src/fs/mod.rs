//! Filesystems read and written in place through a [`crate::image::volume::Volume`].

pub mod ext;
pub mod fat;
