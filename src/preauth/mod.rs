//! Identity data and the request bodies of the preauthorization API.
pub mod identity;
pub mod json;
pub mod request;
