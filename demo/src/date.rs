//! Calendar dates of the proleptic Gregorian calendar, as the `date` task and the language
//! knowledge use them.

use super::rng::SplitMix64;

/// A valid calendar date (construct with [`Date::new`], which checks it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Date {
    year: u32,
    month: u32,
    day: u32,
}

/// First and last year the demo draws dates from.
pub const FIRST_YEAR: u32 = 1900;
pub const LAST_YEAR: u32 = 2099;

impl Date {
    /// `None` unless `month` is 1..=12 and `day` exists in that month of that year.
    pub fn new(year: u32, month: u32, day: u32) -> Option<Self> {
        let valid = (1..=12).contains(&month) && day >= 1 && day <= days_in_month(year, month);
        valid.then_some(Self { year, month, day })
    }

    pub fn year(&self) -> u32 {
        self.year
    }

    /// 1 = January.
    pub fn month(&self) -> u32 {
        self.month
    }

    pub fn day(&self) -> u32 {
        self.day
    }

    /// ISO 8601, `2024-03-05`: the input of the `date` task.
    pub fn iso(&self) -> String {
        format!("{:04}-{:02}-{:02}", self.year, self.month, self.day)
    }

    /// A uniformly random year in [`FIRST_YEAR`, `LAST_YEAR`], month, then day of that month.
    pub(crate) fn random(rng: &mut SplitMix64) -> Self {
        let year = FIRST_YEAR + rng.below(u64::from(LAST_YEAR - FIRST_YEAR + 1)) as u32;
        let month = 1 + rng.below(12) as u32;
        let day = 1 + rng.below(u64::from(days_in_month(year, month))) as u32;
        Self { year, month, day }
    }
}

pub fn is_leap_year(year: u32) -> bool {
    (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400)
}

/// Days in `month` (1..=12) of `year`; 0 for a month outside 1..=12.
pub fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        1 | 3 | 5 | 7 | 8 | 10 | 12 => 31,
        4 | 6 | 9 | 11 => 30,
        2 if is_leap_year(year) => 29,
        2 => 28,
        _ => 0,
    }
}
