//! Moving bytes between the guest's streams and a backend, the same way for
//! every backend: a request body read in bounded pieces, a response written
//! as the client takes it.

use crate::runtime::skiff::registry::objects::ObjectError;
use bytes::Bytes;
use wasmtime_wasi::p2::{DynInputStream, DynOutputStream, StreamError};

/// The most a read from a request body asks for at once.
pub const READ_PIECE: usize = 1 << 20;

/// A request body being read, at most `limit` bytes of it.
pub struct BodyReader<'a> {
    src: &'a mut DynInputStream,
    limit: Option<u64>,
    /// Bytes read so far.
    pub total: u64,
}

impl<'a> BodyReader<'a> {
    pub fn new(src: &'a mut DynInputStream, limit: Option<u64>) -> Self {
        BodyReader {
            src,
            limit,
            total: 0,
        }
    }

    /// The next piece, or `None` at the end of the body or of the limit.
    pub async fn next(&mut self) -> Result<Option<Bytes>, ObjectError> {
        let want = match self.limit {
            Some(l) if self.total >= l => return Ok(None),
            Some(l) => (l - self.total).min(READ_PIECE as u64) as usize,
            None => READ_PIECE,
        };
        let chunk = match self.src.blocking_read(want).await {
            Ok(c) => c,
            Err(StreamError::Closed) => return Ok(None),
            Err(e) => return Err(ObjectError::Io(format!("reading the request body: {e}"))),
        };
        self.total = self
            .total
            .checked_add(chunk.len() as u64)
            .ok_or_else(|| ObjectError::Io("upload size overflows".into()))?;
        Ok(Some(chunk))
    }
}

fn client_gone(e: StreamError) -> ObjectError {
    ObjectError::Io(format!("writing the response: {e}"))
}

/// Write all of `bytes` to `dst`, as fast as the client takes them.
pub async fn write_all(dst: &mut DynOutputStream, mut bytes: Bytes) -> Result<(), ObjectError> {
    while !bytes.is_empty() {
        let permit = dst.write_ready().await.map_err(client_gone)?;
        let n = permit.min(bytes.len());
        dst.write(bytes.split_to(n)).map_err(client_gone)?;
    }
    Ok(())
}

/// Flush `dst` and wait until the flush is done.
pub async fn finish(dst: &mut DynOutputStream) -> Result<(), ObjectError> {
    dst.flush().map_err(client_gone)?;
    dst.write_ready().await.map_err(client_gone)?;
    Ok(())
}
