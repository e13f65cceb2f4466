//! The distribution spec's error codes and the one place that maps each to an
//! HTTP status and renders the `{"errors":[...]}` body.

use serde::Serialize;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorCode {
    BlobUnknown,
    BlobUploadInvalid,
    BlobUploadUnknown,
    DigestInvalid,
    ManifestBlobUnknown,
    ManifestInvalid,
    ManifestUnknown,
    NameInvalid,
    NameUnknown,
    SizeInvalid,
    Unsupported,
    /// `n` of a paginated list is not a count.
    PaginationInvalid,
    /// A `Range` that cannot be served (not in the spec's list; 416).
    RangeInvalid,
    /// A manifest over the size limit (413).
    ManifestTooLarge,
    /// The route exists but not for this method (405).
    MethodNotAllowed,
    /// No such route (404).
    NotFound,
    /// A blob over `storage.maxBlobSize` (413, SIZE_INVALID).
    BlobTooLarge,
    /// A delete of something still in use, a tag or an index (409, DENIED).
    InUse,
    /// Too much contention or load; retry later (503 with Retry-After).
    TooManyRequests,
    /// No or wrong credentials (401, with a `WWW-Authenticate` challenge).
    Unauthorized,
    /// Signed in, but the policy does not allow it (403).
    Denied,
    /// The identity provider (LDAP) did not answer (503).
    AuthUnavailable,
    Internal,
}

impl ErrorCode {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "BLOB_UNKNOWN",
            ErrorCode::BlobUploadInvalid => "BLOB_UPLOAD_INVALID",
            ErrorCode::BlobUploadUnknown => "BLOB_UPLOAD_UNKNOWN",
            ErrorCode::DigestInvalid => "DIGEST_INVALID",
            ErrorCode::ManifestBlobUnknown => "MANIFEST_BLOB_UNKNOWN",
            ErrorCode::ManifestInvalid | ErrorCode::ManifestTooLarge => "MANIFEST_INVALID",
            ErrorCode::ManifestUnknown => "MANIFEST_UNKNOWN",
            ErrorCode::NameInvalid => "NAME_INVALID",
            ErrorCode::NameUnknown => "NAME_UNKNOWN",
            ErrorCode::SizeInvalid | ErrorCode::BlobTooLarge => "SIZE_INVALID",
            ErrorCode::InUse => "DENIED",
            ErrorCode::TooManyRequests | ErrorCode::AuthUnavailable => "TOOMANYREQUESTS",
            ErrorCode::Unauthorized => "UNAUTHORIZED",
            ErrorCode::Denied => "DENIED",
            ErrorCode::PaginationInvalid => "PAGINATION_NUMBER_INVALID",
            ErrorCode::Unsupported | ErrorCode::MethodNotAllowed => "UNSUPPORTED",
            ErrorCode::RangeInvalid => "RANGE_INVALID",
            ErrorCode::NotFound => "NOT_FOUND",
            ErrorCode::Internal => "INTERNAL_ERROR",
        }
    }

    pub fn status(self) -> u16 {
        match self {
            ErrorCode::BlobUnknown
            | ErrorCode::BlobUploadUnknown
            | ErrorCode::ManifestUnknown
            | ErrorCode::NameUnknown
            | ErrorCode::NotFound => 404,
            ErrorCode::BlobUploadInvalid
            | ErrorCode::DigestInvalid
            | ErrorCode::ManifestBlobUnknown
            | ErrorCode::ManifestInvalid
            | ErrorCode::NameInvalid
            | ErrorCode::SizeInvalid
            | ErrorCode::PaginationInvalid
            | ErrorCode::Unsupported => 400,
            ErrorCode::MethodNotAllowed => 405,
            ErrorCode::ManifestTooLarge | ErrorCode::BlobTooLarge => 413,
            ErrorCode::InUse => 409,
            ErrorCode::TooManyRequests | ErrorCode::AuthUnavailable => 503,
            ErrorCode::Unauthorized => 401,
            ErrorCode::Denied => 403,
            ErrorCode::RangeInvalid => 416,
            ErrorCode::Internal => 500,
        }
    }

    fn default_message(self) -> &'static str {
        match self {
            ErrorCode::BlobUnknown => "blob unknown to registry",
            ErrorCode::BlobUploadInvalid => "blob upload invalid",
            ErrorCode::BlobUploadUnknown => "blob upload unknown to registry",
            ErrorCode::DigestInvalid => "provided digest did not match uploaded content",
            ErrorCode::ManifestBlobUnknown => {
                "manifest references a manifest or blob unknown to registry"
            }
            ErrorCode::ManifestInvalid => "manifest invalid",
            ErrorCode::ManifestTooLarge => "manifest too large",
            ErrorCode::ManifestUnknown => "manifest unknown to registry",
            ErrorCode::NameInvalid => "invalid repository name",
            ErrorCode::NameUnknown => "repository name not known to registry",
            ErrorCode::SizeInvalid => "provided length did not match content length",
            ErrorCode::Unsupported => "the operation is unsupported",
            ErrorCode::PaginationInvalid => "invalid number of results requested",
            ErrorCode::MethodNotAllowed => "method not allowed on this route",
            ErrorCode::RangeInvalid => "requested range not satisfiable",
            ErrorCode::NotFound => "no such route",
            ErrorCode::BlobTooLarge => "blob exceeds the maximum size",
            ErrorCode::InUse => "still in use; not deleted",
            ErrorCode::TooManyRequests => "too many concurrent requests; retry later",
            ErrorCode::Unauthorized => "authentication required",
            ErrorCode::Denied => "requested access to the resource is denied",
            ErrorCode::AuthUnavailable => "the identity provider is unavailable; retry later",
            ErrorCode::Internal => "internal error",
        }
    }
}

/// An error to send to a client: a code and a human detail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegistryError {
    pub code: ErrorCode,
    pub detail: String,
}

impl RegistryError {
    pub fn new(code: ErrorCode, detail: impl Into<String>) -> Self {
        RegistryError {
            code,
            detail: detail.into(),
        }
    }

    pub fn status(&self) -> u16 {
        self.code.status()
    }

    /// The spec's error body.
    pub fn to_json(&self) -> String {
        #[derive(Serialize)]
        struct Entry<'a> {
            code: &'a str,
            message: &'a str,
            detail: &'a str,
        }
        #[derive(Serialize)]
        struct Body<'a> {
            errors: [Entry<'a>; 1],
        }
        let body = Body {
            errors: [Entry {
                code: self.code.as_str(),
                message: self.code.default_message(),
                detail: &self.detail,
            }],
        };
        serde_json::to_string(&body).unwrap_or_else(|_| String::from(r#"{"errors":[]}"#))
    }
}

impl fmt::Display for RegistryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.code.as_str(), self.detail)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_spec_body() {
        let e = RegistryError::new(ErrorCode::BlobUnknown, "sha256:00");
        let v: serde_json::Value = serde_json::from_str(&e.to_json()).unwrap();
        assert_eq!(v["errors"][0]["code"], "BLOB_UNKNOWN");
        assert_eq!(v["errors"][0]["detail"], "sha256:00");
        assert!(v["errors"][0]["message"].as_str().unwrap().contains("blob"));
        assert_eq!(e.status(), 404);
    }

    #[test]
    fn statuses() {
        assert_eq!(ErrorCode::ManifestTooLarge.status(), 413);
        assert_eq!(ErrorCode::RangeInvalid.status(), 416);
        assert_eq!(ErrorCode::DigestInvalid.status(), 400);
        assert_eq!(ErrorCode::ManifestBlobUnknown.status(), 400);
        assert_eq!(ErrorCode::BlobTooLarge.status(), 413);
        assert_eq!(ErrorCode::InUse.status(), 409);
        assert_eq!(ErrorCode::TooManyRequests.status(), 503);
        assert_eq!(ErrorCode::TooManyRequests.as_str(), "TOOMANYREQUESTS");
    }
}
