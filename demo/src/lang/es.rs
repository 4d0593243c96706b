//! Spanish (`5 de marzo de 2024`).

use super::{capitalize, month_words, Language, MAX_NUMBER};
use crate::date::Date;

pub(crate) struct Spanish;

// 16..29 are written as one word (dieciséis, veintiuno), with an accent on the stressed final
// syllable: dieciséis, veintidós, veintitrés, veintiséis.
const BELOW_THIRTY: [&str; 30] = [
    "cero",
    "uno",
    "dos",
    "tres",
    "cuatro",
    "cinco",
    "seis",
    "siete",
    "ocho",
    "nueve",
    "diez",
    "once",
    "doce",
    "trece",
    "catorce",
    "quince",
    "dieciséis",
    "diecisiete",
    "dieciocho",
    "diecinueve",
    "veinte",
    "veintiuno",
    "veintidós",
    "veintitrés",
    "veinticuatro",
    "veinticinco",
    "veintiséis",
    "veintisiete",
    "veintiocho",
    "veintinueve",
];
const TENS: [&str; 10] = [
    "",
    "",
    "veinte",
    "treinta",
    "cuarenta",
    "cincuenta",
    "sesenta",
    "setenta",
    "ochenta",
    "noventa",
];
const MONTHS: [&str; 12] = [
    "enero",
    "febrero",
    "marzo",
    "abril",
    "mayo",
    "junio",
    "julio",
    "agosto",
    "septiembre",
    "octubre",
    "noviembre",
    "diciembre",
];
// Before a masculine noun "primero" and "tercero" lose their final o: "el tercer mes".
const ORDINALS: [&str; 12] = [
    "primer",
    "segundo",
    "tercer",
    "cuarto",
    "quinto",
    "sexto",
    "séptimo",
    "octavo",
    "noveno",
    "décimo",
    "undécimo",
    "duodécimo",
];

impl Language for Spanish {
    fn code(&self) -> &'static str {
        "spa"
    }
    fn name(&self) -> &'static str {
        "Spanish"
    }
    fn number(&self, n: u32) -> Option<String> {
        let word = match n {
            0..=29 => BELOW_THIRTY[n as usize].to_string(),
            // From 31 on, tens "y" unit as separate words: treinta y siete.
            30..=MAX_NUMBER => {
                let (tens, u) = (TENS[(n / 10) as usize], n % 10);
                if u == 0 {
                    tens.to_string()
                } else {
                    format!("{tens} y {}", BELOW_THIRTY[u as usize])
                }
            }
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
        let month = MONTHS[date.month() as usize - 1];
        format!("{} de {month} de {}", date.day(), date.year())
    }
    fn number_sentence(&self, n: u32) -> Option<String> {
        Some(format!("El número {n} se escribe {}.", self.number(n)?))
    }
    fn month_order_sentence(&self, month: u32) -> Option<String> {
        let (name, ordinal) = month_words(self, month)?;
        let name = capitalize(name);
        Some(format!("{name} es el {ordinal} mes del año."))
    }
    fn month_number_sentence(&self, month: u32) -> Option<String> {
        let (name, _) = month_words(self, month)?;
        Some(format!("El mes número {month} del año es {name}."))
    }
    fn date_sentence(&self, date: Date) -> String {
        format!("Hoy es {}.", self.date(date))
    }
}
