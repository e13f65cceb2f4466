//! Byte ranges: the `Range` header of a blob GET and the `Content-Range` of an
//! upload chunk.

/// A non-empty span of bytes: `start..start+len`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: u64,
    pub len: u64,
}

impl Span {
    /// The offset of the span's last byte; `None` for an empty span or one
    /// whose end lies past `u64::MAX`.
    pub fn last(&self) -> Option<u64> {
        self.start.checked_add(self.len.checked_sub(1)?)
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
    let span = || -> Option<Span> {
        let span = match (a.trim().is_empty(), b.trim().is_empty()) {
            // bytes=-N: the last N bytes.
            (true, false) => {
                let len = num(b)?.min(size);
                Span {
                    start: size.checked_sub(len)?,
                    len,
                }
            }
            // bytes=A-: from A to the end.
            (false, true) => {
                let start = num(a)?;
                Span {
                    start,
                    len: size.checked_sub(start)?,
                }
            }
            // bytes=A-B, B clamped to the end.
            (false, false) => {
                let (start, end) = (num(a)?, num(b)?);
                if start > end {
                    return None;
                }
                let last = end.min(size.checked_sub(1)?);
                Span {
                    start,
                    len: last.checked_sub(start)?.checked_add(1)?,
                }
            }
            (true, true) => return None,
        };
        // Nothing to serve (`bytes=-0`, a start at or past the end) is unsatisfiable.
        (span.len > 0).then_some(span)
    };
    span().map_or(RangeAnswer::Unsatisfiable, RangeAnswer::Partial)
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
    // `end` is inclusive, so `0-18446744073709551615` spans 2^64 bytes, one
    // more than a length can say: refused rather than wrapped to 0.
    let len = end.checked_sub(start)?.checked_add(1)?;
    Some(Span { start, len })
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
        assert_eq!(parse_chunk_range("5-5"), Some(Span { start: 5, len: 1 }));
        assert_eq!(upload_range_header(0), "0-0");
        assert_eq!(upload_range_header(10), "0-9");
    }

    const MAX: u64 = u64::MAX;

    #[test]
    fn chunk_range_lengths_do_not_wrap() {
        // 2^64 bytes: one more than a u64 length holds. This used to wrap to
        // a length of 0 and match `Content-Length: 0`.
        assert_eq!(parse_chunk_range("0-18446744073709551615"), None);
        assert_eq!(parse_chunk_range("bytes=0-18446744073709551615"), None);
        assert_eq!(parse_chunk_range("bytes 0-18446744073709551615"), None);
        // The longest and the last spans a u64 can say are still ranges.
        assert_eq!(
            parse_chunk_range("1-18446744073709551615"),
            Some(Span { start: 1, len: MAX })
        );
        assert_eq!(
            parse_chunk_range("18446744073709551615-18446744073709551615"),
            Some(Span { start: MAX, len: 1 })
        );
        // Numbers past u64 are not numbers.
        assert_eq!(parse_chunk_range("0-18446744073709551616"), None);
        assert_eq!(
            parse_chunk_range("18446744073709551616-18446744073709551617"),
            None
        );
        assert_eq!(parse_chunk_range("18446744073709551615-0"), None);
    }

    #[test]
    fn span_last_is_checked() {
        assert_eq!(Span { start: 0, len: 10 }.last(), Some(9));
        assert_eq!(Span { start: 7, len: 1 }.last(), Some(7));
        assert_eq!(Span { start: 1, len: MAX }.last(), Some(MAX));
        assert_eq!(Span { start: MAX, len: 1 }.last(), Some(MAX));
        assert_eq!(Span { start: MAX, len: 2 }.last(), None);
        assert_eq!(Span { start: 2, len: MAX }.last(), None);
        assert_eq!(Span { start: 5, len: 0 }.last(), None);
    }

    #[test]
    fn get_ranges_at_the_limits() {
        assert_eq!(
            resolve_range(Some("bytes=0-18446744073709551615"), 10),
            p(0, 10)
        );
        assert_eq!(
            resolve_range(Some("bytes=-18446744073709551615"), 10),
            p(0, 10)
        );
        assert_eq!(
            resolve_range(Some("bytes=9-18446744073709551615"), 10),
            p(9, 1)
        );
        for bad in [
            "bytes=18446744073709551615-",
            "bytes=18446744073709551615-18446744073709551615",
            "bytes=0-18446744073709551616",
            "bytes=18446744073709551616-",
            "bytes=-18446744073709551616",
        ] {
            assert_eq!(
                resolve_range(Some(bad), 10),
                RangeAnswer::Unsatisfiable,
                "{bad}"
            );
        }
        // A blob as large as a u64 can say.
        assert_eq!(resolve_range(Some("bytes=0-"), MAX), p(0, MAX));
        assert_eq!(resolve_range(Some("bytes=-1"), MAX), p(MAX - 1, 1));
        assert_eq!(
            resolve_range(Some("bytes=0-18446744073709551615"), MAX),
            p(0, MAX)
        );
        assert_eq!(
            resolve_range(Some("bytes=18446744073709551614-"), MAX),
            p(MAX - 1, 1)
        );
        assert_eq!(
            resolve_range(Some("bytes=18446744073709551615-"), MAX),
            RangeAnswer::Unsatisfiable
        );
        // Nothing can be served from an empty blob.
        for h in ["bytes=0-0", "bytes=-1", "bytes=0-18446744073709551615"] {
            assert_eq!(resolve_range(Some(h), 0), RangeAnswer::Unsatisfiable, "{h}");
        }
    }
}
