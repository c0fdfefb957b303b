//! Time in Europe/Oslo, where casegate's users are: calendar days and office hours for audit
//! summaries, and the times the web pages show. From the IANA time zone database bundled into
//! the binary (`jiff`), so it does not depend on the host's `/usr/share/zoneinfo`.

use std::sync::LazyLock;

use jiff::{Timestamp, Zoned, civil::Weekday, tz::TimeZone};

static OSLO: LazyLock<TimeZone> =
    LazyLock::new(|| TimeZone::get("Europe/Oslo").unwrap_or(TimeZone::UTC));

/// `micros` since the Unix epoch as a zoned time in Oslo; `None` outside jiff's range.
pub(crate) fn zoned(micros: i64) -> Option<Zoned> {
    Timestamp::from_microsecond(micros)
        .ok()
        .map(|t| t.to_zoned(OSLO.clone()))
}

/// Midnight at the start of a civil date in Oslo, in microseconds since the Unix epoch.
pub(crate) fn start_of(date: jiff::civil::Date) -> Option<i64> {
    date.to_zoned(OSLO.clone())
        .ok()
        .map(|z| z.timestamp().as_microsecond())
}

/// The calendar day in Oslo, `YYYY-MM-DD`.
pub(crate) fn day(micros: i64) -> String {
    zoned(micros).map_or_else(String::new, |z| z.strftime("%Y-%m-%d").to_string())
}

/// Start of office hours in Oslo (inclusive), and their end (exclusive).
pub(crate) const OFFICE_HOURS: (i8, i8) = (8, 16);

/// Whether `micros` falls outside office hours: Monday–Friday, 08:00–16:00 in Oslo.
pub(crate) fn outside_office_hours(micros: i64) -> bool {
    zoned(micros).is_none_or(|z| {
        matches!(z.weekday(), Weekday::Saturday | Weekday::Sunday)
            || z.hour() < OFFICE_HOURS.0
            || z.hour() >= OFFICE_HOURS.1
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_office_hours_follow_oslo_summer_and_winter_time() {
        // Wed 2026-07-01 05:59:59Z is 07:59:59 CEST; 06:00:00Z is 08:00 CEST.
        let summer_morning = 1_782_885_600_000_000;
        assert!(outside_office_hours(summer_morning - 1_000_000));
        assert!(!outside_office_hours(summer_morning));
        // Tue 2026-12-01 15:00:00Z is 16:00 CET: closed.
        let winter_afternoon = 1_796_137_200_000_000;
        assert!(outside_office_hours(winter_afternoon));
        assert!(!outside_office_hours(winter_afternoon - 1_000_000));
        // Sat 2026-12-05 11:00 CET.
        assert!(outside_office_hours(1_796_464_800_000_000));
        // 2026-12-01 23:30Z is already 2 December in Oslo.
        assert_eq!(day(1_796_167_800_000_000), "2026-12-02");
    }
}
