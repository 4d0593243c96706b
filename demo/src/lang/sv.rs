//! Swedish (`5 mars 2024`).

use super::{capitalize, compose_number, month_words, Language};
use crate::date::Date;

pub(crate) struct Swedish;

// "ett" is the counting form of 1 (and the neuter article form); 18 is arton.
const BELOW_TWENTY: [&str; 20] = [
    "noll", "ett", "två", "tre", "fyra", "fem", "sex", "sju", "åtta", "nio", "tio", "elva", "tolv",
    "tretton", "fjorton", "femton", "sexton", "sjutton", "arton", "nitton",
];
const TENS: [&str; 10] = [
    "", "", "tjugo", "trettio", "fyrtio", "femtio", "sextio", "sjuttio", "åttio", "nittio",
];
const MONTHS: [&str; 12] = [
    "januari",
    "februari",
    "mars",
    "april",
    "maj",
    "juni",
    "juli",
    "augusti",
    "september",
    "oktober",
    "november",
    "december",
];
const ORDINALS: [&str; 12] = [
    "första", "andra", "tredje", "fjärde", "femte", "sjätte", "sjunde", "åttonde", "nionde",
    "tionde", "elfte", "tolfte",
];

/// `1:a`, `2:a`, `3:e`, ..., `12:e`: an ordinal written with digits (first and second end in -a).
fn short_ordinal(n: u32) -> String {
    let ending = match (n % 10, n % 100) {
        (_, 11 | 12) => "e",
        (1 | 2, _) => "a",
        _ => "e",
    };
    format!("{n}:{ending}")
}

impl Language for Swedish {
    fn code(&self) -> &'static str {
        "swe"
    }
    fn name(&self) -> &'static str {
        "Swedish"
    }
    fn number(&self, n: u32) -> Option<String> {
        // Tens then unit in one word: trettiosju, tjugoett.
        compose_number(n, &BELOW_TWENTY, &TENS, |tens, u| {
            format!("{tens}{}", BELOW_TWENTY[u as usize])
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
        Some(format!("Talet {n} skrivs {}.", self.number(n)?))
    }
    fn month_order_sentence(&self, month: u32) -> Option<String> {
        // "Mars är årets tredje månad." (the genitive "årets" = "of the year").
        let (name, ordinal) = month_words(self, month)?;
        let name = capitalize(name);
        Some(format!("{name} är årets {ordinal} månad."))
    }
    fn month_number_sentence(&self, month: u32) -> Option<String> {
        let (name, _) = month_words(self, month)?;
        let ordinal = short_ordinal(month);
        Some(format!("Årets {ordinal} månad är {name}."))
    }
    fn date_sentence(&self, date: Date) -> String {
        format!("I dag är det den {}.", self.date(date))
    }
}
