//! Portuguese, Brazilian spelling (dezesseis, not European dezasseis; `1º de março de 2024`).

use super::{capitalize, compose_number, month_words, Language};
use crate::date::Date;

pub(crate) struct Portuguese;

// 14 is catorze (quatorze is also used in Brazil; catorze is the form both standards accept).
const BELOW_TWENTY: [&str; 20] = [
    "zero",
    "um",
    "dois",
    "três",
    "quatro",
    "cinco",
    "seis",
    "sete",
    "oito",
    "nove",
    "dez",
    "onze",
    "doze",
    "treze",
    "catorze",
    "quinze",
    "dezesseis",
    "dezessete",
    "dezoito",
    "dezenove",
];
const TENS: [&str; 10] = [
    "",
    "",
    "vinte",
    "trinta",
    "quarenta",
    "cinquenta",
    "sessenta",
    "setenta",
    "oitenta",
    "noventa",
];
const MONTHS: [&str; 12] = [
    "janeiro",
    "fevereiro",
    "março",
    "abril",
    "maio",
    "junho",
    "julho",
    "agosto",
    "setembro",
    "outubro",
    "novembro",
    "dezembro",
];
const ORDINALS: [&str; 12] = [
    "primeiro",
    "segundo",
    "terceiro",
    "quarto",
    "quinto",
    "sexto",
    "sétimo",
    "oitavo",
    "nono",
    "décimo",
    "décimo primeiro",
    "décimo segundo",
];

/// The day of a date: the first is an ordinal (1º), the rest cardinals.
fn day_number(day: u32) -> String {
    if day == 1 {
        "1º".to_string()
    } else {
        day.to_string()
    }
}

impl Language for Portuguese {
    fn code(&self) -> &'static str {
        "por"
    }
    fn name(&self) -> &'static str {
        "Portuguese"
    }
    fn number(&self, n: u32) -> Option<String> {
        // Tens "e" unit as separate words: trinta e sete.
        compose_number(n, &BELOW_TWENTY, &TENS, |tens, u| {
            format!("{tens} e {}", BELOW_TWENTY[u as usize])
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
        format!("{} de {month} de {}", day_number(date.day()), date.year())
    }
    fn number_sentence(&self, n: u32) -> Option<String> {
        Some(format!("O número {n} se escreve {}.", self.number(n)?))
    }
    fn month_order_sentence(&self, month: u32) -> Option<String> {
        let (name, ordinal) = month_words(self, month)?;
        let name = capitalize(name);
        Some(format!("{name} é o {ordinal} mês do ano."))
    }
    fn month_number_sentence(&self, month: u32) -> Option<String> {
        let (name, _) = month_words(self, month)?;
        Some(format!("O {month}º mês do ano é {name}."))
    }
    fn date_sentence(&self, date: Date) -> String {
        format!("Hoje é dia {}.", self.date(date))
    }
}
