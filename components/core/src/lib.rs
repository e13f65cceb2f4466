//! The rules of OCI distribution and the OCI image layout, as plain data and
//! functions: no I/O, so every rule is unit-tested natively and shared by the
//! `dist-api` and `storage` components.
//!
//! Everything a request carries is parsed once, at the edge, into one of these
//! types; code past the edge never handles an unchecked string.

pub mod access;
#[cfg(feature = "auth")]
pub mod caller;
pub mod digest;
pub mod error;
#[cfg(feature = "auth")]
pub mod htpasswd;
pub mod layout;
pub mod manifest;
pub mod name;
pub mod object_key;
pub mod range;
pub mod reference;
pub mod resumable;
pub mod s3_layout;
#[cfg(feature = "auth")]
pub mod token;

pub use digest::{Algorithm, Digest};
pub use error::{ErrorCode, RegistryError};
pub use name::RepoName;
pub use reference::{Reference, Tag};
