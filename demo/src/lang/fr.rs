//! French, traditional spelling (hyphens, except around "et"; `1er mars 2024`).

use super::{capitalize, month_words, Language, MAX_NUMBER};
use crate::date::Date;

pub(crate) struct French;

const BELOW_TWENTY: [&str; 20] = [
    "zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf", "dix", "onze",
    "douze", "treize", "quatorze", "quinze", "seize", "dix-sept", "dix-huit", "dix-neuf",
];
// Only 20..60 have a tens word of their own; 70 and 90 count on from 60 and 80.
const TENS: [&str; 7] = [
    "",
    "",
    "vingt",
    "trente",
    "quarante",
    "cinquante",
    "soixante",
];
const MONTHS: [&str; 12] = [
    "janvier",
    "février",
    "mars",
    "avril",
    "mai",
    "juin",
    "juillet",
    "août",
    "septembre",
    "octobre",
    "novembre",
    "décembre",
];
const ORDINALS: [&str; 12] = [
    "premier",
    "deuxième",
    "troisième",
    "quatrième",
    "cinquième",
    "sixième",
    "septième",
    "huitième",
    "neuvième",
    "dixième",
    "onzième",
    "douzième",
];

/// `1er`, `2e`, `3e`: an ordinal written with digits.
fn short_ordinal(n: u32) -> String {
    if n == 1 {
        "1er".to_string()
    } else {
        format!("{n}e")
    }
}

impl Language for French {
    fn code(&self) -> &'static str {
        "fra"
    }
    fn name(&self) -> &'static str {
        "French"
    }
    fn number(&self, n: u32) -> Option<String> {
        let word = match n {
            0..=19 => BELOW_TWENTY[n as usize].to_string(),
            20..=69 => {
                let (tens, u) = (TENS[(n / 10) as usize], n % 10);
                match u {
                    0 => tens.to_string(),
                    1 => format!("{tens} et un"), // vingt et un ... soixante et un
                    _ => format!("{tens}-{}", BELOW_TWENTY[u as usize]),
                }
            }
            // 70..79 = soixante + 10..19; 71 alone keeps "et": soixante et onze.
            71 => "soixante et onze".to_string(),
            70..=79 => format!("soixante-{}", BELOW_TWENTY[(n - 60) as usize]),
            // 80 = quatre-vingts (plural s only when nothing follows); 81 has no "et".
            80 => "quatre-vingts".to_string(),
            81..=MAX_NUMBER => format!("quatre-vingt-{}", BELOW_TWENTY[(n - 80) as usize]),
            _ => return None,
        };
        Some(word)
    }
    fn months(&self) -> &'static [&'static str; 12] {
        &MONTHS
    }
    fn month_ordinals(&self) -> &'static [&'static str; 12] {
        &ORDINALS
    }
    fn date(&self, date: Date) -> String {
        // The first of the month is an ordinal (1er), every other day a cardinal.
        let month = MONTHS[date.month() as usize - 1];
        let day = if date.day() == 1 {
            short_ordinal(1)
        } else {
            date.day().to_string()
        };
        format!("{day} {month} {}", date.year())
    }
    fn number_sentence(&self, n: u32) -> Option<String> {
        Some(format!("Le nombre {n} s'écrit {}.", self.number(n)?))
    }
    fn month_order_sentence(&self, month: u32) -> Option<String> {
        let (name, ordinal) = month_words(self, month)?;
        let name = capitalize(name);
        Some(format!("{name} est le {ordinal} mois de l'année."))
    }
    fn month_number_sentence(&self, month: u32) -> Option<String> {
        let (name, _) = month_words(self, month)?;
        let ordinal = short_ordinal(month);
        Some(format!("Le {ordinal} mois de l'année est {name}."))
    }
    fn date_sentence(&self, date: Date) -> String {
        format!("Nous sommes le {}.", self.date(date))
    }
}
