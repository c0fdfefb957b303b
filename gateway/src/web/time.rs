//! Times as people read them: in Europe/Oslo ([`crate::base::oslo`]), in the page's language.

use super::text::Lang;
use crate::base::oslo;

fn format(micros: i64, nordic: &str, english: &str, lang: Lang) -> String {
    oslo::zoned(micros).map_or_else(String::new, |z| {
        z.strftime(match lang {
            Lang::Nb | Lang::Nn => nordic,
            Lang::En => english,
        })
        .to_string()
    })
}

/// `micros` since the Unix epoch as a date and time in Oslo: `5.12.2026 kl. 20.15` (nb, nn),
/// `5 Dec 2026, 20:15` (en).
pub(super) fn date_time(micros: i64, lang: Lang) -> String {
    format(micros, "%-d.%-m.%Y kl. %H.%M", "%-d %b %Y, %H:%M", lang)
}

/// `micros` as a date in Oslo: `1.7.2027` (nb, nn), `1 Jul 2027` (en).
pub(super) fn date(micros: i64, lang: Lang) -> String {
    format(micros, "%-d.%-m.%Y", "%-d %b %Y", lang)
}

/// Only the time of day in Oslo: `20.15` (nb, nn), `20:15` (en).
pub(super) fn clock(micros: i64, lang: Lang) -> String {
    format(micros, "%H.%M", "%H:%M", lang)
}

/// Midnight at the start of `date` (`YYYY-MM-DD`, as an `<input type=date>` sends it) in Oslo,
/// as microseconds since the Unix epoch.
pub(super) fn parse_date(date: &str) -> Option<i64> {
    oslo::start_of(date.parse().ok()?)
}

/// The end of `date` (`YYYY-MM-DD`) in Oslo: midnight at the start of the next day, as
/// microseconds — the exclusive end of a period that includes the whole of `date`.
pub(super) fn end_of(date: &str) -> Option<i64> {
    let day: jiff::civil::Date = date.parse().ok()?;
    oslo::start_of(day.tomorrow().ok()?)
}

/// The last instant a period with exclusive end `end_micros` includes, for showing its last day
/// ("until and including").
pub(super) fn last_instant(end_micros: i64) -> i64 {
    end_micros.saturating_sub(1)
}

/// `micros` as `YYYY-MM-DD` in Oslo, for an `<input type=date>` value.
pub(super) fn input_date(micros: i64) -> String {
    oslo::day(micros)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oslo_summer_and_winter_time() {
        // 2026-07-01T10:00:00Z is 12:00 CEST; 2026-12-01T10:00:00Z is 11:00 CET.
        let summer = 1_782_900_000_000_000;
        let winter = 1_796_119_200_000_000;
        assert_eq!(date_time(summer, Lang::Nb), "1.7.2026 kl. 12.00");
        assert_eq!(date_time(winter, Lang::En), "1 Dec 2026, 11:00");
        assert_eq!(clock(winter, Lang::Nn), "11.00");
        assert_eq!(parse_date("2026-07-01"), Some(summer - 12 * 3_600_000_000));
        assert_eq!(input_date(summer), "2026-07-01");
        // A consent "until and including 1 July" ends at midnight starting 2 July, and shows
        // 1 July again.
        let end = end_of("2026-07-01").expect("a date");
        assert_eq!(end, parse_date("2026-07-02").expect("a date"));
        assert_eq!(date(last_instant(end), Lang::Nb), "1.7.2026");
        assert_eq!(input_date(last_instant(end)), "2026-07-01");
    }
}
