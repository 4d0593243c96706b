//! "Language knowledge": plain sentences in each language about its numbers, months and dates, for
//! pretraining the demo's base model. They teach the words, never a task in its task format:
//! counting goes in steps of two and of ten (so no line pairs a number with its successor), and no
//! line holds an ISO date. [`check_knowledge`] verifies this against the held-out examples.

use serde::{Deserialize, Serialize};

use super::date::Date;
use super::lang::{Language, MAX_NUMBER};
use super::rng::SplitMix64;
use super::{DemoError, DemoExample};

/// What a knowledge line is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum KnowledgeKind {
    /// `twenty, thirty, forty, ...` or `thirty-six, thirty-eight, forty, ...`.
    Counting,
    /// `The number 37 is written thirty-seven.`
    NumberSentence,
    /// `January, February, ..., December`
    MonthList,
    /// `March is the third month of the year.`
    MonthOrder,
    /// `The 3rd month of the year is March.`
    MonthNumber,
    /// `Today is 5 March 2024.`
    DateSentence,
}

/// One line of plain pretraining text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnowledgeLine {
    pub lang: String,
    pub kind: KnowledgeKind,
    pub text: String,
}

/// Numbers per counting line in steps of two.
const COUNTING_RUN: u32 = 6;

/// Every knowledge line of `lang`: decade counting, counting in twos from every start, a sentence
/// per number 0..=99 and, when `with_months` (the mixture has a date task), the month list, two
/// sentences per month and `dates` date sentences.
pub(crate) fn knowledge_lines(
    lang: &dyn Language,
    seed: u64,
    with_months: bool,
    dates: usize,
) -> Vec<KnowledgeLine> {
    let line = |kind, text: String| KnowledgeLine {
        lang: lang.code().to_string(),
        kind,
        text,
    };
    let words = |n: u32| lang.number(n).unwrap_or_default();
    let join =
        |numbers: &mut dyn Iterator<Item = u32>| numbers.map(words).collect::<Vec<_>>().join(", ");
    let mut lines = vec![line(
        KnowledgeKind::Counting,
        join(&mut (10..=90).step_by(10)),
    )];
    let last_start = MAX_NUMBER - 2 * (COUNTING_RUN - 1);
    for start in 0..=last_start {
        let run = (0..COUNTING_RUN).map(|i| start + 2 * i);
        lines.push(line(KnowledgeKind::Counting, join(&mut run.into_iter())));
    }
    for n in 0..=MAX_NUMBER {
        if let Some(text) = lang.number_sentence(n) {
            lines.push(line(KnowledgeKind::NumberSentence, text));
        }
    }
    if !with_months {
        return lines;
    }
    lines.push(line(KnowledgeKind::MonthList, lang.months().join(", ")));
    for month in 1..=12 {
        if let Some(text) = lang.month_order_sentence(month) {
            lines.push(line(KnowledgeKind::MonthOrder, text));
        }
        if let Some(text) = lang.month_number_sentence(month) {
            lines.push(line(KnowledgeKind::MonthNumber, text));
        }
    }
    let mut rng = SplitMix64::for_stream(seed, &[lang.code(), "knowledge", "dates"]);
    for _ in 0..dates {
        let text = lang.date_sentence(Date::random(&mut rng));
        lines.push(line(KnowledgeKind::DateSentence, text));
    }
    lines
}

/// Fails if a knowledge line of an example's language holds that example in task form: its input
/// then its target as whole items, with nothing but spaces and punctuation (at most [`MAX_GAP`]
/// characters) between, or its input or target as the whole line. Pass the held-out examples.
///
/// "Whole items": the input starts the line or follows a non-alphanumeric character, and the target
/// ends the line or is followed by punctuation (not a space), so that `..., cincuenta y nueve,
/// sesenta y uno` does not count as holding the pair 59 -> `sesenta` (60).
pub fn check_knowledge(
    knowledge: &[KnowledgeLine],
    examples: &[DemoExample],
) -> Result<(), DemoError> {
    for example in examples {
        for line in knowledge.iter().filter(|l| l.lang == example.lang) {
            let whole = line.text == example.input || line.text == example.target;
            if whole || holds_pair(&line.text, &example.input, &example.target) {
                return Err(DemoError::KnowledgeLeak {
                    id: example.id.clone(),
                    line: line.text.clone(),
                });
            }
        }
    }
    Ok(())
}

/// Most non-alphanumeric characters allowed between an input and its target in [`check_knowledge`].
pub const MAX_GAP: usize = 4;

/// Whether `text` has the item `input`, then at most [`MAX_GAP`] non-alphanumeric characters, then
/// the item `target` (see [`check_knowledge`] for what an item is).
fn holds_pair(text: &str, input: &str, target: &str) -> bool {
    if input.is_empty() || target.is_empty() {
        return false;
    }
    text.match_indices(input).any(|(at, _)| {
        let starts_item = text[..at]
            .chars()
            .next_back()
            .is_none_or(|c| !c.is_alphanumeric());
        let rest = &text[at + input.len()..];
        let gap_chars = rest
            .chars()
            .take_while(|c| !c.is_alphanumeric())
            .take(MAX_GAP + 1)
            .count();
        if !starts_item || gap_chars > MAX_GAP {
            return false;
        }
        let gap_bytes: usize = rest.chars().take(gap_chars).map(char::len_utf8).sum();
        let Some(after_target) = rest[gap_bytes..].strip_prefix(target) else {
            return false;
        };
        after_target
            .chars()
            .next()
            .is_none_or(|c| !c.is_alphanumeric() && !c.is_whitespace())
    })
}

#[cfg(test)]
mod tests {
    use super::holds_pair;

    #[test]
    fn holds_pair_finds_a_pair_only_across_punctuation() {
        assert!(holds_pair("37: thirty-seven", "37", "thirty-seven"));
        assert!(holds_pair(
            "x thirty-six, thirty-seven",
            "thirty-six",
            "thirty-seven"
        ));
        assert!(holds_pair("37thirty-seven", "37", "thirty-seven"));
        assert!(!holds_pair("37 is thirty-seven", "37", "thirty-seven"));
        assert!(!holds_pair("37 ::   thirty-seven", "37", "thirty-seven"));
        assert!(!holds_pair("thirty-seven, 37", "37", "thirty-seven"));
        assert!(!holds_pair("anything", "", "anything"));
    }
}
