//! Times as an operator reads them: "12 s ago", "in 14 min", "3 h 5 min".

use crate::clock::UnixMillis;

/// A duration in the largest units that keep it short: `850 ms`, `12 s`, `14 min`,
/// `3 h 5 min`, `2 d 4 h`.
pub fn span(ms: u64) -> String {
    const S: u64 = 1_000;
    const MIN: u64 = 60 * S;
    const H: u64 = 60 * MIN;
    const D: u64 = 24 * H;
    match ms {
        0..S => format!("{ms} ms"),
        S..MIN => format!("{} s", ms / S),
        MIN..H => format!("{} min", ms / MIN),
        H..D => with_rest(ms / H, "h", (ms % H) / MIN, "min"),
        _ => with_rest(ms / D, "d", (ms % D) / H, "h"),
    }
}

fn with_rest(big: u64, big_unit: &str, small: u64, small_unit: &str) -> String {
    if small == 0 {
        format!("{big} {big_unit}")
    } else {
        format!("{big} {big_unit} {small} {small_unit}")
    }
}

/// How long ago `then` was: `12 s ago`, `never` for 0, `just now` within a second.
pub fn ago(now: UnixMillis, then: UnixMillis) -> String {
    if then == 0 {
        return "never".into();
    }
    match now.checked_sub(then) {
        Some(ms) if ms >= 1_000 => format!("{} ago", span(ms)),
        Some(_) => "just now".into(),
        None => format!("in {}", span(then - now)),
    }
}

/// How long until `then`: `in 14 min`, or `expired 3 s ago`.
pub fn until(now: UnixMillis, then: UnixMillis) -> String {
    match then.checked_sub(now) {
        Some(ms) => format!("in {}", span(ms)),
        None => format!("expired {} ago", span(now - then)),
    }
}

/// A Unix time as an HTTP date, `Fri, 15 Jan 2027 08:00:00 GMT` (tooltips next to
/// relative times).
pub fn utc(ms: UnixMillis) -> String {
    httpdate::fmt_http_date(std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_like_an_operator_would_say_them() {
        assert_eq!(span(850), "850 ms");
        assert_eq!(span(12_400), "12 s");
        assert_eq!(span(14 * 60_000 + 59_000), "14 min");
        assert_eq!(span(3 * 3_600_000), "3 h");
        assert_eq!(span(3 * 3_600_000 + 5 * 60_000), "3 h 5 min");
        assert_eq!(span(2 * 86_400_000 + 4 * 3_600_000), "2 d 4 h");
    }

    #[test]
    fn relative_times_say_which_way() {
        assert_eq!(ago(100_000, 88_000), "12 s ago");
        assert_eq!(ago(100_000, 99_500), "just now");
        assert_eq!(ago(100_000, 0), "never");
        assert_eq!(until(100_000, 940_000), "in 14 min");
        assert_eq!(until(100_000, 97_000), "expired 3 s ago");
    }

    #[test]
    fn utc_dates_are_calendar_dates() {
        assert_eq!(utc(0), "Thu, 01 Jan 1970 00:00:00 GMT");
        assert_eq!(utc(1_800_000_000_000), "Fri, 15 Jan 2027 08:00:00 GMT");
    }
}
