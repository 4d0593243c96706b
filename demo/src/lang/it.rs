//! Italian (`5 marzo 2024`, `1º marzo 2024`).

use super::{capitalize, compose_number, month_words, Language};
use crate::date::Date;

pub(crate) struct Italian;

const BELOW_TWENTY: [&str; 20] = [
    "zero",
    "uno",
    "due",
    "tre",
    "quattro",
    "cinque",
    "sei",
    "sette",
    "otto",
    "nove",
    "dieci",
    "undici",
    "dodici",
    "tredici",
    "quattordici",
    "quindici",
    "sedici",
    "diciassette",
    "diciotto",
    "diciannove",
];
const TENS: [&str; 10] = [
    "",
    "",
    "venti",
    "trenta",
    "quaranta",
    "cinquanta",
    "sessanta",
    "settanta",
    "ottanta",
    "novanta",
];
const MONTHS: [&str; 12] = [
    "gennaio",
    "febbraio",
    "marzo",
    "aprile",
    "maggio",
    "giugno",
    "luglio",
    "agosto",
    "settembre",
    "ottobre",
    "novembre",
    "dicembre",
];
const ORDINALS: [&str; 12] = [
    "primo",
    "secondo",
    "terzo",
    "quarto",
    "quinto",
    "sesto",
    "settimo",
    "ottavo",
    "nono",
    "decimo",
    "undicesimo",
    "dodicesimo",
];

/// The masculine singular article before a word read as `n` or its ordinal: "l'" before a vowel
/// (otto, ottavo, undici, undicesimo), "il" otherwise. Among 1..=31 only 8 and 11 start with one.
fn article_before(n: u32) -> &'static str {
    if n == 8 || n == 11 {
        "l'"
    } else {
        "il "
    }
}

/// The day of a date: the first is an ordinal (1º), the rest cardinals.
fn day_number(day: u32) -> String {
    if day == 1 {
        "1º".to_string()
    } else {
        day.to_string()
    }
}

impl Language for Italian {
    fn code(&self) -> &'static str {
        "ita"
    }
    fn name(&self) -> &'static str {
        "Italian"
    }
    fn number(&self, n: u32) -> Option<String> {
        // One word, tens then unit: trentasette. The tens lose their final vowel before "uno" and
        // "otto" (ventuno, trentotto), and "tre" at the end takes an accent (ventitré).
        compose_number(n, &BELOW_TWENTY, &TENS, |tens, u| match u {
            1 | 8 => {
                let stem = &tens[..tens.len() - 1];
                format!("{stem}{}", BELOW_TWENTY[u as usize])
            }
            3 => format!("{tens}tré"),
            _ => format!("{tens}{}", BELOW_TWENTY[u as usize]),
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
        format!("{} {month} {}", day_number(date.day()), date.year())
    }
    fn number_sentence(&self, n: u32) -> Option<String> {
        Some(format!("Il numero {n} si scrive {}.", self.number(n)?))
    }
    fn month_order_sentence(&self, month: u32) -> Option<String> {
        let (name, ordinal) = month_words(self, month)?;
        let name = capitalize(name);
        let article = article_before(month);
        Some(format!("{name} è {article}{ordinal} mese dell'anno."))
    }
    fn month_number_sentence(&self, month: u32) -> Option<String> {
        let (name, _) = month_words(self, month)?;
        let article = capitalize(article_before(month));
        Some(format!("{article}{month}º mese dell'anno è {name}."))
    }
    fn date_sentence(&self, date: Date) -> String {
        let article = article_before(date.day());
        format!("Oggi è {article}{}.", self.date(date))
    }
}
