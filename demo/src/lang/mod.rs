//! The languages of the demo mixture. Each file writes one language's own words: cardinal numbers
//! 0..=99, month names, the language's usual long date format, and a few plain sentences about them
//! (the "language knowledge" the base model is pretrained on).
//!
//! Only languages whose number words are regular and well known are included, and each file
//! spells out its few irregularities next to the rule they break.

use super::date::Date;

mod de;
mod en;
mod es;
mod fr;
mod it;
mod nl;
mod pt;
mod sv;

/// Largest number the demo writes out in words.
pub const MAX_NUMBER: u32 = 99;

/// One language's words. Methods return `None` for a number above [`MAX_NUMBER`] or a month
/// outside 1..=12.
pub trait Language: Send + Sync {
    /// ISO 639-3 code, as in the real mixture (`eng`, `deu`, ...).
    fn code(&self) -> &'static str;
    /// English name of the language.
    fn name(&self) -> &'static str;
    /// The cardinal `n` written out, as one counts (`37` -> `thirty-seven`).
    fn number(&self, n: u32) -> Option<String>;
    /// Month names, January first, spelled (and capitalised) as inside a sentence.
    fn months(&self) -> &'static [&'static str; 12];
    /// Ordinal words first..twelfth, in the form used before the word for "month".
    fn month_ordinals(&self) -> &'static [&'static str; 12];
    /// The long date, as written in running text (`5 March 2024`).
    fn date(&self, date: Date) -> String;

    /// "The number 37 is written thirty-seven."
    fn number_sentence(&self, n: u32) -> Option<String>;
    /// "March is the third month of the year."
    fn month_order_sentence(&self, month: u32) -> Option<String>;
    /// "The 3rd month of the year is March." (the ordinal written with digits)
    fn month_number_sentence(&self, month: u32) -> Option<String>;
    /// "Today is 5 March 2024."
    fn date_sentence(&self, date: Date) -> String;

    /// The name of `month` (1 = January).
    fn month(&self, month: u32) -> Option<&'static str> {
        index_of_month(month).map(|i| self.months()[i])
    }
}

/// Every language the demo knows, in the demo's default order.
pub fn all_languages() -> [&'static dyn Language; 8] {
    [
        &en::English,
        &de::German,
        &fr::French,
        &es::Spanish,
        &it::Italian,
        &nl::Dutch,
        &sv::Swedish,
        &pt::Portuguese,
    ]
}

/// The language with ISO 639-3 code `code`.
pub fn language(code: &str) -> Option<&'static dyn Language> {
    all_languages().into_iter().find(|l| l.code() == code)
}

/// 0-based index of a 1-based month.
pub(crate) fn index_of_month(month: u32) -> Option<usize> {
    (1..=12).contains(&month).then(|| month as usize - 1)
}

/// `(name, ordinal word)` of a 1-based month from a language's tables.
pub(crate) fn month_words(lang: &dyn Language, month: u32) -> Option<(&'static str, &'static str)> {
    let i = index_of_month(month)?;
    Some((lang.months()[i], lang.month_ordinals()[i]))
}

/// Numbers below twenty from a table, tens and units composed by `compose(tens_word, unit)` (unit
/// 1..=9); `tens[t]` is the word for `10 * t`, for t in 2..=9.
pub(crate) fn compose_number(
    n: u32,
    below_twenty: &[&str; 20],
    tens: &[&str; 10],
    compose: impl Fn(&str, u32) -> String,
) -> Option<String> {
    match n {
        0..=19 => Some(below_twenty[n as usize].to_string()),
        20..=MAX_NUMBER => {
            let (t, u) = ((n / 10) as usize, n % 10);
            Some(if u == 0 {
                tens[t].to_string()
            } else {
                compose(tens[t], u)
            })
        }
        _ => None,
    }
}

/// `mars` -> `Mars`, for a word that starts a sentence.
pub(crate) fn capitalize(word: &str) -> String {
    let mut chars = word.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
