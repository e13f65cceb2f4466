//! The caller's streams: a request body read in bounded pieces, and a
//! response written as fast as its reader takes it.

use crate::bindings::exports::skiff::registry::objects::ObjectError;
use wasip2::io::streams::{InputStream, OutputStream, StreamError};

/// The most one read from the source asks for.
pub const READ_PIECE: u64 = 1 << 20;

fn failed(what: &str, e: StreamError) -> ObjectError {
    match e {
        StreamError::Closed => ObjectError::Io(format!("{what}: the stream was closed")),
        StreamError::LastOperationFailed(e) => {
            ObjectError::Io(format!("{what}: {}", e.to_debug_string()))
        }
    }
}

/// The next bytes of `src`, at most `max` of them; `None` at its end.
pub fn read(src: &InputStream, max: u64) -> Result<Option<Vec<u8>>, ObjectError> {
    match src.blocking_read(max.min(READ_PIECE)) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(StreamError::Closed) => Ok(None),
        Err(e) => Err(failed("reading the source", e)),
    }
}

/// Write all of `bytes` to `dst`, waiting whenever it has no room.
pub fn write_all(dst: &OutputStream, mut bytes: &[u8]) -> Result<(), ObjectError> {
    while !bytes.is_empty() {
        let room = dst
            .check_write()
            .map_err(|e| failed("writing the destination", e))?;
        if room == 0 {
            dst.subscribe().block();
            continue;
        }
        let n = usize::try_from(room).unwrap_or(usize::MAX).min(bytes.len());
        dst.write(&bytes[..n])
            .map_err(|e| failed("writing the destination", e))?;
        bytes = &bytes[n..];
    }
    Ok(())
}

/// Flush `dst` once everything is written. A reader that closed the
/// stream after taking every byte has all it asked for.
pub fn finish(dst: &OutputStream) -> Result<(), ObjectError> {
    match dst.blocking_flush() {
        Ok(()) | Err(StreamError::Closed) => Ok(()),
        Err(e) => Err(failed("flushing the destination", e)),
    }
}
