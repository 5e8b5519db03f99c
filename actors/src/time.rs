//! Wall-clock formatting: the IMF-fixdate of the SIP Date header and RFC 3339 timestamps of
//! charging records, from one civil-calendar conversion.

use std::time::{SystemTime, UNIX_EPOCH};

/// (year, month 1..=12, day, hour, minute, second, weekday 0 = Thursday) of `t`, UTC.
fn civil(t: SystemTime) -> (i64, i64, i64, u64, u64, u64, usize) {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = secs / 86_400;
    let rem = secs % 86_400;
    // Civil from days (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    (
        y,
        mo,
        d,
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        (days % 7) as usize,
    )
}

/// An RFC 7231 IMF-fixdate for the Date header (RFC 3261 §20.17).
pub fn httpdate(t: SystemTime) -> String {
    let (y, mo, d, h, m, s, wd) = civil(t);
    let wd = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"][wd];
    let mon = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ][(mo - 1) as usize];
    format!("{wd}, {d:02} {mon} {y} {h:02}:{m:02}:{s:02} GMT")
}

/// An RFC 3339 UTC timestamp with millisecond precision when there is a fraction
/// (`2023-11-14T22:13:20Z`, `2023-11-14T22:13:20.250Z`).
pub fn rfc3339(t: SystemTime) -> String {
    let (y, mo, d, h, m, s, _) = civil(t);
    let ms = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_millis())
        .unwrap_or(0);
    if ms == 0 {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}Z")
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{m:02}:{s:02}.{ms:03}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn formats() {
        assert_eq!(httpdate(UNIX_EPOCH), "Thu, 01 Jan 1970 00:00:00 GMT");
        let t = UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(httpdate(t), "Tue, 14 Nov 2023 22:13:20 GMT");
        assert_eq!(rfc3339(t), "2023-11-14T22:13:20Z");
        assert_eq!(
            rfc3339(t + Duration::from_millis(250)),
            "2023-11-14T22:13:20.250Z"
        );
        // A leap day.
        let leap = UNIX_EPOCH + Duration::from_secs(1_709_208_000);
        assert_eq!(rfc3339(leap), "2024-02-29T12:00:00Z");
    }
}
