//! Time: now (leases, `modified-ms` of a PUT), waiting between retries,
//! and the two ways S3 writes a time (`Last-Modified: Wed, 21 Oct 2015
//! 07:28:00 GMT` on objects, `2015-10-21T07:28:00.000Z` in XML), read
//! here rather than with a date library for these two fixed formats.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Block this instance for `d` (nothing else runs in it meanwhile).
pub fn sleep(d: Duration) {
    let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
    wasip2::clocks::monotonic_clock::subscribe_duration(ns).block();
}

/// Days from 1970-01-01 to a date of the proleptic Gregorian calendar.
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(m) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

fn ms_of(y: i64, mo: u32, d: u32, h: u32, mi: u32, s: u32, ms: u32) -> Option<u64> {
    if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || s > 60 {
        return None;
    }
    let days = days_from_civil(y, mo, d);
    let secs = days * 86_400 + i64::from(h * 3600 + mi * 60 + s);
    u64::try_from(secs * 1000 + i64::from(ms)).ok()
}

fn hms(t: &str) -> Option<(u32, u32, u32)> {
    let mut it = t.split(':').map(|p| p.parse::<u32>().ok());
    let v = (it.next()??, it.next()??, it.next()??);
    it.next().is_none().then_some(v)
}

/// An HTTP date (RFC 9110's IMF-fixdate), as S3 sends `Last-Modified`.
pub fn http_date_ms(s: &str) -> Option<u64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let mut it = s.split_ascii_whitespace();
    let (_weekday, d, mon, y, t) = (it.next()?, it.next()?, it.next()?, it.next()?, it.next()?);
    let mo = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(mon))? as u32 + 1;
    let (h, mi, sec) = hms(t)?;
    ms_of(y.parse().ok()?, mo, d.parse().ok()?, h, mi, sec, 0)
}

/// An ISO 8601 time in UTC as S3's XML gives it (`LastModified`).
pub fn iso_ms(s: &str) -> Option<u64> {
    let s = s.trim().strip_suffix('Z')?;
    let (date, time) = s.split_once('T')?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, mo, day) = (d.next()??, d.next()??, d.next()??);
    let (time, frac) = time.split_once('.').unwrap_or((time, ""));
    let (h, mi, sec) = hms(time)?;
    // Milliseconds from however many fraction digits there are.
    let ms = format!("{frac:0<3}").get(..3)?.parse::<u32>().ok()?;
    ms_of(
        y,
        u32::try_from(mo).ok()?,
        u32::try_from(day).ok()?,
        h,
        mi,
        sec,
        ms,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_formats_of_one_time_agree() {
        // 2015-10-21T07:28:00Z is 1445412480 s after the epoch.
        assert_eq!(
            http_date_ms("Wed, 21 Oct 2015 07:28:00 GMT"),
            Some(1_445_412_480_000)
        );
        assert_eq!(iso_ms("2015-10-21T07:28:00.000Z"), Some(1_445_412_480_000));
        assert_eq!(iso_ms("2015-10-21T07:28:00.25Z"), Some(1_445_412_480_250));
        assert_eq!(iso_ms("2015-10-21T07:28:00Z"), Some(1_445_412_480_000));
        assert_eq!(http_date_ms("Thu, 01 Jan 1970 00:00:00 GMT"), Some(0));
        assert_eq!(
            http_date_ms("Tue, 29 Feb 2000 12:00:00 GMT"),
            Some(951_825_600_000)
        );
    }

    #[test]
    fn nonsense_is_none() {
        assert_eq!(http_date_ms("yesterday"), None);
        assert_eq!(iso_ms("2015-13-01T00:00:00Z"), None);
        assert_eq!(iso_ms("2015-10-21 07:28:00"), None);
    }
}
