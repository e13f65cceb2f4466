//! Byte ranges: the `Range` header of a blob GET and the `Content-Range` of an
//! upload chunk.

/// A non-empty span of bytes: `start..start+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub len: u64,
}

impl Span {
    pub fn last(&self) -> u64 {
        self.start + self.len - 1
    }
}

/// What to serve for a GET with an optional `Range` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RangeAnswer {
    /// No range asked: the whole blob, 200.
    Whole,
    /// One satisfiable range: 206 with `Content-Range`.
    Partial(Span),
    /// 416 with `Content-Range: bytes */size`.
    Unsatisfiable,
}

/// Resolve a `Range` header against a blob of `size` bytes. Only single
/// `bytes=` ranges are served; anything else is refused with 416 rather than
/// silently answered with the whole blob, so a client never mistakes a full
/// body for the part it asked for.
pub fn resolve_range(header: Option<&str>, size: u64) -> RangeAnswer {
    let Some(h) = header else {
        return RangeAnswer::Whole;
    };
    let Some(spec) = h.trim().strip_prefix("bytes=") else {
        return RangeAnswer::Unsatisfiable;
    };
    let Some((a, b)) = spec.trim().split_once('-') else {
        return RangeAnswer::Unsatisfiable;
    };
    let num = |s: &str| -> Option<u64> {
        let s = s.trim();
        if s.is_empty() || !s.bytes().all(|c| c.is_ascii_digit()) {
            None
        } else {
            s.parse().ok()
        }
    };
    let span = match (a.trim().is_empty(), b.trim().is_empty()) {
        // bytes=-N: the last N bytes.
        (true, false) => match num(b) {
            Some(n) if n > 0 && size > 0 => {
                let len = n.min(size);
                Some(Span {
                    start: size - len,
                    len,
                })
            }
            _ => None,
        },
        // bytes=A-: from A to the end.
        (false, true) => match num(a) {
            Some(start) if start < size => Some(Span {
                start,
                len: size - start,
            }),
            _ => None,
        },
        // bytes=A-B, B clamped to the end.
        (false, false) => match (num(a), num(b)) {
            (Some(start), Some(end)) if start <= end && start < size => Some(Span {
                start,
                len: end.min(size - 1) - start + 1,
            }),
            _ => None,
        },
        (true, true) => None,
    };
    span.map_or(RangeAnswer::Unsatisfiable, RangeAnswer::Partial)
}

/// Parse an upload chunk's `Content-Range: <start>-<end>` (inclusive; a
/// `bytes ` or `bytes=` prefix is tolerated, as docker sends one).
pub fn parse_chunk_range(h: &str) -> Option<Span> {
    let s = h.trim();
    let s = s
        .strip_prefix("bytes=")
        .or_else(|| s.strip_prefix("bytes "))
        .unwrap_or(s);
    let (a, b) = s.split_once('-')?;
    let digits = |x: &str| !x.is_empty() && x.bytes().all(|c| c.is_ascii_digit());
    if !digits(a) || !digits(b) {
        return None;
    }
    let (start, end): (u64, u64) = (a.parse().ok()?, b.parse().ok()?);
    (end >= start).then(|| Span {
        start,
        len: end - start + 1,
    })
}

/// The `Range` header of an upload session holding `size` bytes.
pub fn upload_range_header(size: u64) -> String {
    format!("0-{}", size.saturating_sub(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(start: u64, len: u64) -> RangeAnswer {
        RangeAnswer::Partial(Span { start, len })
    }

    #[test]
    fn get_ranges() {
        assert_eq!(resolve_range(None, 10), RangeAnswer::Whole);
        assert_eq!(resolve_range(Some("bytes=0-0"), 10), p(0, 1));
        assert_eq!(resolve_range(Some("bytes=2-5"), 10), p(2, 4));
        assert_eq!(resolve_range(Some("bytes=2-"), 10), p(2, 8));
        assert_eq!(resolve_range(Some("bytes=-3"), 10), p(7, 3));
        assert_eq!(resolve_range(Some("bytes=-30"), 10), p(0, 10));
        assert_eq!(resolve_range(Some("bytes=5-100"), 10), p(5, 5));
    }

    #[test]
    fn unsatisfiable_ranges() {
        for bad in [
            "bytes=10-",
            "bytes=10-20",
            "bytes=5-2",
            "bytes=-0",
            "bytes=-",
            "bytes=a-b",
            "bytes=0-1,3-4",
            "items=0-1",
            "0-1",
            "bytes=+1-2",
        ] {
            assert_eq!(
                resolve_range(Some(bad), 10),
                RangeAnswer::Unsatisfiable,
                "{bad}"
            );
        }
        assert_eq!(
            resolve_range(Some("bytes=0-"), 0),
            RangeAnswer::Unsatisfiable
        );
    }

    #[test]
    fn chunk_ranges() {
        assert_eq!(parse_chunk_range("0-9"), Some(Span { start: 0, len: 10 }));
        assert_eq!(
            parse_chunk_range("bytes=10-19"),
            Some(Span { start: 10, len: 10 })
        );
        assert_eq!(
            parse_chunk_range("bytes 10-19"),
            Some(Span { start: 10, len: 10 })
        );
        assert_eq!(parse_chunk_range("9-0"), None);
        assert_eq!(parse_chunk_range("x-1"), None);
        assert_eq!(parse_chunk_range("1"), None);
        assert_eq!(upload_range_header(0), "0-0");
        assert_eq!(upload_range_header(10), "0-9");
    }
}
