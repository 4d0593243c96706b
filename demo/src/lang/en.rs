//! English (British date order: `5 March 2024`).

use super::{compose_number, month_words, Language};
use crate::date::Date;

pub(crate) struct English;

const BELOW_TWENTY: [&str; 20] = [
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
];
const TENS: [&str; 10] = [
    "", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety",
];
const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const ORDINALS: [&str; 12] = [
    "first", "second", "third", "fourth", "fifth", "sixth", "seventh", "eighth", "ninth", "tenth",
    "eleventh", "twelfth",
];

/// `1st 2nd 3rd 4th ... 11th 12th` (11th and 12th are not "11st", "12nd").
fn ordinal_suffix(n: u32) -> &'static str {
    match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    }
}

impl Language for English {
    fn code(&self) -> &'static str {
        "eng"
    }
    fn name(&self) -> &'static str {
        "English"
    }
    fn number(&self, n: u32) -> Option<String> {
        // thirty-seven: tens and unit joined by a hyphen.
        compose_number(n, &BELOW_TWENTY, &TENS, |tens, u| {
            format!("{tens}-{}", BELOW_TWENTY[u as usize])
        })
    }
    fn months(&self) -> &'static [&'static str; 12] {
        &MONTHS
    }
    fn month_ordinals(&self) -> &'static [&'static str; 12] {
        &ORDINALS
    }
    fn date(&self, date: Date) -> String {
        let month = MONTHS[date.month() as usize - 1];
        format!("{} {month} {}", date.day(), date.year())
    }
    fn number_sentence(&self, n: u32) -> Option<String> {
        Some(format!("The number {n} is written {}.", self.number(n)?))
    }
    fn month_order_sentence(&self, month: u32) -> Option<String> {
        let (name, ordinal) = month_words(self, month)?;
        Some(format!("{name} is the {ordinal} month of the year."))
    }
    fn month_number_sentence(&self, month: u32) -> Option<String> {
        let (name, _) = month_words(self, month)?;
        let suffix = ordinal_suffix(month);
        Some(format!("The {month}{suffix} month of the year is {name}."))
    }
    fn date_sentence(&self, date: Date) -> String {
        format!("Today is {}.", self.date(date))
    }
}
