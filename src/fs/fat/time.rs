//! FAT timestamps: a date from 1980 to 2107 and a time of day in two-second steps, stored
//! without a time zone ("FAT: General Overview of On-Disk Format", its date and time formats). This module
//! reads and writes them as UTC, as Linux does when mounted with `tz=UTC` and as mtools does when
//! `TZ` is unset.

use std::cell::Cell;

/// Seconds from 1970-01-01 to 1980-01-01, the first moment FAT can store.
const FAT_EPOCH: i64 = 315_532_800;
/// 2107-12-31 23:59:58, the last moment FAT can store.
const FAT_END: i64 = 4_354_819_198;

/// The time `fatfs` stamps on files and directories it creates or changes. `fatfs` asks a
/// provider it holds by a `'static` reference, so each open filesystem leaks one of these.
#[derive(Debug, Default)]
pub(super) struct WriteClock {
    seconds: Cell<i64>,
}

impl WriteClock {
    /// Sets the time of the next writes, in seconds since the epoch.
    pub(super) fn set(&self, seconds: i64) {
        self.seconds.set(seconds);
    }
}

impl fatfs::TimeProvider for WriteClock {
    fn get_current_date(&self) -> fatfs::Date {
        to_fat(self.seconds.get()).date
    }

    fn get_current_date_time(&self) -> fatfs::DateTime {
        to_fat(self.seconds.get())
    }
}

/// Converts seconds since the epoch to a FAT date and time, clamped to the range FAT can store.
pub(super) fn to_fat(seconds: i64) -> fatfs::DateTime {
    let seconds = seconds.clamp(FAT_EPOCH, FAT_END);
    let (year, month, day) = civil_from_days(seconds.div_euclid(86_400));
    let second_of_day = seconds.rem_euclid(86_400);
    fatfs::DateTime {
        date: fatfs::Date { year: year as u16, month: month as u16, day: day as u16 },
        time: fatfs::Time {
            hour: (second_of_day / 3600) as u16,
            min: (second_of_day % 3600 / 60) as u16,
            sec: (second_of_day % 60) as u16,
            millis: 0,
        },
    }
}

/// Converts a FAT date and time to seconds since the epoch. Out-of-range fields, which a
/// damaged entry can hold, still give a number, never a panic.
pub(super) fn from_fat(date_time: fatfs::DateTime) -> i64 {
    let date = date_time.date;
    let time = date_time.time;
    let days = days_from_civil(i64::from(date.year), i64::from(date.month), i64::from(date.day));
    days * 86_400 + i64::from(time.hour) * 3600 + i64::from(time.min) * 60 + i64::from(time.sec)
}

/// Converts days since 1970-01-01 to a proleptic Gregorian (year, month, day), counting in
/// eras of 400 years, which repeat exactly.
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let shifted = days + 719_468;
    let era = shifted.div_euclid(146_097);
    let day_of_era = shifted.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 { month_index + 3 } else { month_index - 9 };
    (year_of_era + era * 400 + i64::from(month <= 2), month, day)
}

/// Converts a proleptic Gregorian date to days since 1970-01-01, the inverse of
/// [`civil_from_days`].
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year.rem_euclid(400);
    let month_index = if month > 2 { month - 3 } else { month + 9 };
    let day_of_year = (153 * month_index + 2) / 5 + day - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_round_trip_in_two_second_steps() {
        for seconds in [FAT_EPOCH, 1_700_000_000, 951_782_400, FAT_END] {
            assert_eq!(from_fat(to_fat(seconds)), seconds);
        }
    }

    #[test]
    fn times_outside_fat_are_clamped() {
        assert_eq!(from_fat(to_fat(0)), FAT_EPOCH);
        assert_eq!(from_fat(to_fat(i64::MAX)), FAT_END);
    }

    #[test]
    fn date_fields_match_the_calendar() {
        let date_time = to_fat(1_700_000_000);

        assert_eq!((date_time.date.year, date_time.date.month, date_time.date.day), (2023, 11, 14));
        assert_eq!((date_time.time.hour, date_time.time.min, date_time.time.sec), (22, 13, 20));
    }
}
