//! The store's errors as the client sees them.

use crate::bindings::skiff::registry::store::Error;
use skiff_core::{ErrorCode, RegistryError};

impl From<Error> for RegistryError {
    fn from(e: Error) -> Self {
        let (code, detail) = match e {
            Error::NameUnknown => (ErrorCode::NameUnknown, String::new()),
            Error::BlobUnknown => (ErrorCode::BlobUnknown, String::new()),
            Error::BlobUploadUnknown => (ErrorCode::BlobUploadUnknown, String::new()),
            Error::ManifestUnknown => (ErrorCode::ManifestUnknown, String::new()),
            Error::ManifestBlobUnknown(d) => (ErrorCode::ManifestBlobUnknown, d),
            Error::ManifestInvalid(d) => (ErrorCode::ManifestInvalid, d),
            Error::DigestInvalid(d) => (ErrorCode::DigestInvalid, d),
            Error::SizeInvalid(d) => (ErrorCode::SizeInvalid, d),
            Error::UploadOffset(at) => (
                ErrorCode::RangeInvalid,
                format!("the upload holds {at} bytes; the next chunk must start there"),
            ),
            Error::BlobTooLarge(max) => (
                ErrorCode::BlobTooLarge,
                format!("blobs are limited to {max} bytes here"),
            ),
            Error::InUse(d) => (ErrorCode::InUse, d),
            Error::Busy(d) => (ErrorCode::TooManyRequests, d),
            Error::Unsupported(d) => (ErrorCode::Unsupported, d),
            Error::Internal(d) => (ErrorCode::Internal, d),
        };
        RegistryError::new(code, detail)
    }
}
