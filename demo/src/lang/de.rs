//! German (`5. März 2024`).

use super::{compose_number, month_words, Language};
use crate::date::Date;

pub(crate) struct German;

// 16 and 17 shorten their unit: sechzehn (not sechszehn), siebzehn (not siebenzehn).
const BELOW_TWENTY: [&str; 20] = [
    "null",
    "eins",
    "zwei",
    "drei",
    "vier",
    "fünf",
    "sechs",
    "sieben",
    "acht",
    "neun",
    "zehn",
    "elf",
    "zwölf",
    "dreizehn",
    "vierzehn",
    "fünfzehn",
    "sechzehn",
    "siebzehn",
    "achtzehn",
    "neunzehn",
];
// Likewise sechzig and siebzig; 30 is dreißig (with ß, not -zig).
const TENS: [&str; 10] = [
    "", "", "zwanzig", "dreißig", "vierzig", "fünfzig", "sechzig", "siebzig", "achtzig", "neunzig",
];
const MONTHS: [&str; 12] = [
    "Januar",
    "Februar",
    "März",
    "April",
    "Mai",
    "Juni",
    "Juli",
    "August",
    "September",
    "Oktober",
    "November",
    "Dezember",
];
// Ordinals before a masculine noun after the definite article ("der dritte Monat").
const ORDINALS: [&str; 12] = [
    "erste", "zweite", "dritte", "vierte", "fünfte", "sechste", "siebte", "achte", "neunte",
    "zehnte", "elfte", "zwölfte",
];

impl Language for German {
    fn code(&self) -> &'static str {
        "deu"
    }
    fn name(&self) -> &'static str {
        "German"
    }
    fn number(&self, n: u32) -> Option<String> {
        // Unit first, then "und", then the tens, in one word: siebenunddreißig.
        // The unit 1 is "ein" inside a compound (einundzwanzig), "eins" alone.
        compose_number(n, &BELOW_TWENTY, &TENS, |tens, u| {
            let unit = if u == 1 {
                "ein"
            } else {
                BELOW_TWENTY[u as usize]
            };
            format!("{unit}und{tens}")
        })
    }
    fn months(&self) -> &'static [&'static str; 12] {
        &MONTHS
    }
    fn month_ordinals(&self) -> &'static [&'static str; 12] {
        &ORDINALS
    }
    fn date(&self, date: Date) -> String {
        // The day is an ordinal written with a full stop: "5. März 2024".
        let month = MONTHS[date.month() as usize - 1];
        format!("{}. {month} {}", date.day(), date.year())
    }
    fn number_sentence(&self, n: u32) -> Option<String> {
        Some(format!("Die Zahl {n} schreibt man {}.", self.number(n)?))
    }
    fn month_order_sentence(&self, month: u32) -> Option<String> {
        // Month names are masculine and take the article: "Der März ist ...".
        let (name, ordinal) = month_words(self, month)?;
        Some(format!("Der {name} ist der {ordinal} Monat des Jahres."))
    }
    fn month_number_sentence(&self, month: u32) -> Option<String> {
        let (name, _) = month_words(self, month)?;
        Some(format!("Der {month}. Monat des Jahres ist der {name}."))
    }
    fn date_sentence(&self, date: Date) -> String {
        format!("Heute ist der {}.", self.date(date))
    }
}
