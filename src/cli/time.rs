//! Times on the command line: `--to` takes Unix seconds or RFC 3339, and output prints RFC 3339
//! in UTC. A small strict parser, so no date library is needed.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prost_types::Timestamp;

const SECONDS_PER_DAY: i64 = 86_400;

/// Parses `--to`: Unix seconds (`1488718862`) or RFC 3339 (`2017-03-05T13:01:02Z`,
/// `2017-03-05T21:01:02.5+08:00`).
pub fn parse_time(text: &str) -> Result<SystemTime, String> {
    let (seconds, nanos) = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        let seconds = text
            .parse::<i64>()
            .map_err(|_| format!("{text:?} is too large for Unix seconds"))?;
        (seconds, 0)
    } else {
        parse_rfc3339(text)?
    };
    system_time(seconds, nanos).ok_or_else(|| format!("{text:?} is out of range"))
}

fn system_time(seconds: i64, nanos: u32) -> Option<SystemTime> {
    let base = if seconds >= 0 {
        UNIX_EPOCH.checked_add(Duration::from_secs(seconds.unsigned_abs()))?
    } else {
        UNIX_EPOCH.checked_sub(Duration::from_secs(seconds.unsigned_abs()))?
    };
    base.checked_add(Duration::from_nanos(u64::from(nanos)))
}

/// Parses an RFC 3339 date-time (section 5.6): `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)`, with
/// `T` and `Z` in either case. Returns seconds since the Unix epoch and nanoseconds
/// (fractions finer than a nanosecond are dropped).
pub fn parse_rfc3339(text: &str) -> Result<(i64, u32), String> {
    let bad = |why: &str| {
        format!(
            "{text:?} is not a time: {why} (expected Unix seconds, or RFC 3339 such as \
             2017-03-05T13:01:02Z or 2017-03-05T21:01:02+08:00)"
        )
    };
    let bytes = text.as_bytes();
    let mut cursor = Cursor { bytes, at: 0 };
    let year = cursor.digits(4).ok_or_else(|| bad("no 4-digit year"))?;
    cursor
        .accept(b"-")
        .ok_or_else(|| bad("no '-' after the year"))?;
    let month = cursor.digits(2).ok_or_else(|| bad("no 2-digit month"))?;
    cursor
        .accept(b"-")
        .ok_or_else(|| bad("no '-' after the month"))?;
    let day = cursor.digits(2).ok_or_else(|| bad("no 2-digit day"))?;
    cursor
        .accept(b"Tt")
        .ok_or_else(|| bad("no 'T' between date and time"))?;
    let hour = cursor.digits(2).ok_or_else(|| bad("no 2-digit hour"))?;
    cursor
        .accept(b":")
        .ok_or_else(|| bad("no ':' after the hour"))?;
    let minute = cursor.digits(2).ok_or_else(|| bad("no 2-digit minute"))?;
    cursor
        .accept(b":")
        .ok_or_else(|| bad("no ':' after the minute"))?;
    let second = cursor.digits(2).ok_or_else(|| bad("no 2-digit second"))?;
    let mut nanos = 0u32;
    if cursor.accept(b".").is_some() {
        let start = cursor.at;
        while cursor.peek().is_some_and(|b| b.is_ascii_digit()) {
            let digit = u32::from(bytes[cursor.at] - b'0');
            let position = cursor.at - start;
            if position < 9 {
                nanos += digit * 10u32.pow(8 - position as u32);
            }
            cursor.at += 1;
        }
        if cursor.at == start {
            return Err(bad("no digits after '.'"));
        }
    }
    let offset_seconds = match cursor.peek() {
        Some(b'Z' | b'z') => {
            cursor.at += 1;
            0
        }
        Some(sign @ (b'+' | b'-')) => {
            cursor.at += 1;
            let hours = cursor
                .digits(2)
                .ok_or_else(|| bad("no 2-digit offset hour"))?;
            cursor
                .accept(b":")
                .ok_or_else(|| bad("no ':' in the offset"))?;
            let minutes = cursor
                .digits(2)
                .ok_or_else(|| bad("no 2-digit offset minute"))?;
            if hours > 23 || minutes > 59 {
                return Err(bad("the offset is out of range"));
            }
            let offset = i64::from(hours * 3_600 + minutes * 60);
            if sign == b'+' { offset } else { -offset }
        }
        _ => return Err(bad("no time zone ('Z' or an offset such as +08:00)")),
    };
    if cursor.at != bytes.len() {
        return Err(bad("unexpected text after the time zone"));
    }
    if !(1..=12).contains(&month) {
        return Err(bad("the month is out of range"));
    }
    if day < 1 || day > days_in_month(year, month) {
        return Err(bad("the day is out of range for its month"));
    }
    // 60 is a leap second; like most systems, it counts as the first second of the next minute.
    if hour > 23 || minute > 59 || second > 60 {
        return Err(bad("the time of day is out of range"));
    }
    let days = days_from_civil(i64::from(year), month, day);
    let seconds =
        days * SECONDS_PER_DAY + i64::from(hour * 3_600 + minute * 60 + second) - offset_seconds;
    Ok((seconds, nanos))
}

/// Formats a timestamp as RFC 3339 in UTC, with as many fraction digits as it needs (0, 3, 6
/// or 9), like protobuf's JSON mapping: `2017-03-05T13:01:02.500Z`.
pub fn format_timestamp(timestamp: &Timestamp) -> String {
    let seconds = timestamp.seconds;
    let nanos = timestamp.nanos.clamp(0, 999_999_999);
    let days = seconds.div_euclid(SECONDS_PER_DAY);
    let in_day = seconds.rem_euclid(SECONDS_PER_DAY);
    let (year, month, day) = civil_from_days(days);
    let (hour, minute, second) = (in_day / 3_600, in_day % 3_600 / 60, in_day % 60);
    let fraction = if nanos == 0 {
        String::new()
    } else if nanos % 1_000_000 == 0 {
        format!(".{:03}", nanos / 1_000_000)
    } else if nanos % 1_000 == 0 {
        format!(".{:06}", nanos / 1_000)
    } else {
        format!(".{nanos:09}")
    };
    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}{fraction}Z")
}

struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl Cursor<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.at).copied()
    }

    /// Exactly `count` ASCII digits, as a number.
    fn digits(&mut self, count: usize) -> Option<u32> {
        let digits = self.bytes.get(self.at..self.at + count)?;
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        self.at += count;
        Some(
            digits
                .iter()
                .fold(0, |value, digit| value * 10 + u32::from(digit - b'0')),
        )
    }

    /// One byte among `choices`.
    fn accept(&mut self, choices: &[u8]) -> Option<()> {
        self.peek().filter(|byte| choices.contains(byte))?;
        self.at += 1;
        Some(())
    }
}

fn is_leap_year(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month = i64::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i64::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The date of a count of days since 1970-01-01 (the inverse of `days_from_civil`).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1_460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = (day_of_year - (153 * shifted_month + 2) / 5 + 1) as u32;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    } as u32;
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unix(text: &str) -> i64 {
        parse_rfc3339(text).expect(text).0
    }

    #[test]
    fn parses_utc_and_offsets() {
        // The CMQ guide's rewind time.
        assert_eq!(unix("2017-03-05T13:01:02Z"), 1_488_718_862);
        assert_eq!(unix("2017-03-05t13:01:02z"), 1_488_718_862);
        assert_eq!(unix("2017-03-05T21:01:02+08:00"), 1_488_718_862);
        assert_eq!(unix("2017-03-05T07:31:02-05:30"), 1_488_718_862);
        assert_eq!(unix("2017-03-05T13:01:02-00:00"), 1_488_718_862);
        assert_eq!(unix("1970-01-01T00:00:00Z"), 0);
        assert_eq!(unix("1969-12-31T23:59:59Z"), -1);
        assert_eq!(unix("2000-02-29T00:00:00Z"), 951_782_400);
        assert_eq!(unix("9999-12-31T23:59:59Z"), 253_402_300_799);
        // A leap second is the next minute's first second.
        assert_eq!(unix("2016-12-31T23:59:60Z"), unix("2017-01-01T00:00:00Z"));
    }

    #[test]
    fn parses_fractions_to_nanoseconds() {
        let cases = [
            ("2017-03-05T13:01:02.5Z", 500_000_000),
            ("2017-03-05T13:01:02.123Z", 123_000_000),
            ("2017-03-05T13:01:02.000001Z", 1_000),
            ("2017-03-05T13:01:02.123456789Z", 123_456_789),
            ("2017-03-05T13:01:02.1234567891234Z", 123_456_789),
        ];
        for (text, nanos) in cases {
            assert_eq!(parse_rfc3339(text), Ok((1_488_718_862, nanos)), "{text}");
        }
    }

    #[test]
    fn refuses_what_is_not_strict_rfc_3339() {
        for bad in [
            "",
            "2017-03-05",
            "2017-03-05T13:01:02",
            "2017-03-05 13:01:02Z",
            "2017-3-05T13:01:02Z",
            "17-03-05T13:01:02Z",
            "2017-03-05T13:01Z",
            "2017-03-05T13:01:02.Z",
            "2017-03-05T13:01:02+0800",
            "2017-03-05T13:01:02+08",
            "2017-03-05T13:01:02+24:00",
            "2017-03-05T13:01:02+08:60",
            "2017-03-05T13:01:02ZZ",
            "2017-03-05T13:01:02Z ",
            " 2017-03-05T13:01:02Z",
            "2017-13-05T13:01:02Z",
            "2017-00-05T13:01:02Z",
            "2017-02-29T13:01:02Z",
            "1900-02-29T00:00:00Z",
            "2017-04-31T13:01:02Z",
            "2017-03-00T13:01:02Z",
            "2017-03-05T24:00:00Z",
            "2017-03-05T13:60:00Z",
            "2017-03-05T13:01:61Z",
            "２017-03-05T13:01:02Z",
        ] {
            assert!(parse_rfc3339(bad).is_err(), "{bad:?} was accepted");
        }
    }

    #[test]
    fn parse_time_takes_unix_seconds_or_rfc_3339() {
        let expected = UNIX_EPOCH + Duration::from_secs(1_488_718_862);
        assert_eq!(parse_time("1488718862"), Ok(expected));
        assert_eq!(parse_time("2017-03-05T13:01:02Z"), Ok(expected));
        assert_eq!(
            parse_time("2017-03-05T13:01:02.25Z"),
            Ok(expected + Duration::from_millis(250))
        );
        assert_eq!(
            parse_time("1969-12-31T23:59:59.5Z"),
            Ok(UNIX_EPOCH - Duration::from_millis(500))
        );
        for bad in ["-5", "+5", "1.5", "99999999999999999999", "now", "12 34"] {
            let error = parse_time(bad).expect_err(bad);
            assert!(error.contains(bad), "{error}");
        }
    }

    #[test]
    fn formats_utc_with_the_digits_needed() {
        let at = |seconds, nanos| format_timestamp(&Timestamp { seconds, nanos });
        assert_eq!(at(1_488_718_862, 0), "2017-03-05T13:01:02Z");
        assert_eq!(at(1_488_718_862, 500_000_000), "2017-03-05T13:01:02.500Z");
        assert_eq!(at(1_488_718_862, 1_000), "2017-03-05T13:01:02.000001Z");
        assert_eq!(at(1_488_718_862, 7), "2017-03-05T13:01:02.000000007Z");
        assert_eq!(at(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(at(-1, 0), "1969-12-31T23:59:59Z");
        assert_eq!(at(951_782_400, 0), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn formatting_and_parsing_agree_across_the_calendar() {
        // Every day from 1900 to 2100, at a time that moves through the day.
        let start = unix("1900-01-01T00:00:00Z");
        for day in 0..(201 * 366) {
            let seconds = start + day * SECONDS_PER_DAY + (day * 7_919) % SECONDS_PER_DAY;
            let text = format_timestamp(&Timestamp { seconds, nanos: 0 });
            assert_eq!(unix(&text), seconds, "{text}");
        }
    }
}
