//! Identity data and the request bodies of the preauthorization API.
