//! Dutch (`5 maart 2024`).

use super::{capitalize, compose_number, month_words, Language};
use crate::date::Date;

pub(crate) struct Dutch;

const BELOW_TWENTY: [&str; 20] = [
    "nul",
    "een",
    "twee",
    "drie",
    "vier",
    "vijf",
    "zes",
    "zeven",
    "acht",
    "negen",
    "tien",
    "elf",
    "twaalf",
    "dertien",
    "veertien",
    "vijftien",
    "zestien",
    "zeventien",
    "achttien",
    "negentien",
];
// 80 is tachtig (with a t), 40 veertig (ee, like veertien).
const TENS: [&str; 10] = [
    "", "", "twintig", "dertig", "veertig", "vijftig", "zestig", "zeventig", "tachtig", "negentig",
];
const MONTHS: [&str; 12] = [
    "januari",
    "februari",
    "maart",
    "april",
    "mei",
    "juni",
    "juli",
    "augustus",
    "september",
    "oktober",
    "november",
    "december",
];
const ORDINALS: [&str; 12] = [
    "eerste", "tweede", "derde", "vierde", "vijfde", "zesde", "zevende", "achtste", "negende",
    "tiende", "elfde", "twaalfde",
];

impl Language for Dutch {
    fn code(&self) -> &'static str {
        "nld"
    }
    fn name(&self) -> &'static str {
        "Dutch"
    }
    fn number(&self, n: u32) -> Option<String> {
        // Unit, "en", tens in one word: zevenendertig. After a unit ending in e the "en" takes a
        // diaeresis so the vowels stay apart: tweeëntwintig, drieëntwintig.
        compose_number(n, &BELOW_TWENTY, &TENS, |tens, u| {
            let unit = BELOW_TWENTY[u as usize];
            let and = if unit.ends_with('e') { "ën" } else { "en" };
            format!("{unit}{and}{tens}")
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
        Some(format!("Het getal {n} schrijf je als {}.", self.number(n)?))
    }
    fn month_order_sentence(&self, month: u32) -> Option<String> {
        let (name, ordinal) = month_words(self, month)?;
        let name = capitalize(name);
        Some(format!("{name} is de {ordinal} maand van het jaar."))
    }
    fn month_number_sentence(&self, month: u32) -> Option<String> {
        // Ordinals with digits take "e" in Dutch: 1e, 2e, 3e.
        let (name, _) = month_words(self, month)?;
        Some(format!("De {month}e maand van het jaar is {name}."))
    }
    fn date_sentence(&self, date: Date) -> String {
        format!("Vandaag is het {}.", self.date(date))
    }
}
