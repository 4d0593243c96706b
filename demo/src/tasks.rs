//! The demo's tasks. Each task's structure is the same in every language; only the words differ.
//! Targets are a few words at most, so a tiny model can learn them and exact match scores them.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::date::Date;
use super::lang::{Language, MAX_NUMBER};
use super::rng::SplitMix64;

/// A demo task. Serialised as its [`Task::name`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// `37` -> `thirty-seven`, for 0..=99.
    Num2Words,
    /// `thirty-seven` -> `37`, for 0..=99.
    Words2Num,
    /// `2024-03-05` -> `5 March 2024`, in the language's long date format.
    Date,
    /// `thirty-seven` -> `thirty-eight`, for 0..=98.
    Successor,
    /// `37` -> `thirty-eight`, for 0..=98: digits in, the next number out in words.
    Next,
    /// `37` -> `thirty-six`, for 1..=99: digits in, the previous number out in words.
    Previous,
    /// `37` -> `seventy-three`, for 10..=99: the digits swapped, out in words (`30` -> `three`).
    Reverse,
    /// `37` -> `seventy-four`, for 0..=49: twice the number, out in words.
    Double,
    /// `37` -> `forty-seven`, for 0..=89: ten more, out in words.
    Plus10,
    /// `37` -> `twenty-seven`, for 10..=99: ten less, out in words.
    Minus10,
}

impl Task {
    /// The demo's default tasks: digits in, a number out in the example's language. Every task
    /// writes the same words (the cardinals 0..=99), so a held-out cell needs only what its
    /// language's other tasks and its task's other languages train: the language says how to write
    /// a number, the task which number to write.
    pub const DEMO: [Task; 4] = [Task::Num2Words, Task::Next, Task::Previous, Task::Reverse];

    /// Every task.
    pub const ALL: [Task; 10] = [
        Task::Num2Words,
        Task::Words2Num,
        Task::Date,
        Task::Successor,
        Task::Next,
        Task::Previous,
        Task::Reverse,
        Task::Double,
        Task::Plus10,
        Task::Minus10,
    ];

    /// The name used in the `task` field of an example.
    pub fn name(self) -> &'static str {
        match self {
            Task::Num2Words => "num2words",
            Task::Words2Num => "words2num",
            Task::Date => "date",
            Task::Successor => "successor",
            Task::Next => "next",
            Task::Previous => "previous",
            Task::Reverse => "reverse",
            Task::Double => "double",
            Task::Plus10 => "plus10",
            Task::Minus10 => "minus10",
        }
    }

    /// Writes `count` (input, target) pairs of this task in `lang`, drawn from `rng`.
    ///
    /// Number tasks deal from a shuffled deck of their whole input range, reshuffled when it runs
    /// out, so every number appears equally often (±1) in a split; dates are drawn at random.
    pub(crate) fn pairs(
        self,
        lang: &dyn Language,
        count: usize,
        rng: &mut SplitMix64,
    ) -> Vec<(String, String)> {
        let words = |n: u32| lang.number(n).unwrap_or_default();
        match self {
            Task::Num2Words => digits_in(lang, 0..=MAX_NUMBER, |n| n, count, rng),
            Task::Next => digits_in(lang, 0..=MAX_NUMBER - 1, |n| n + 1, count, rng),
            Task::Previous => digits_in(lang, 1..=MAX_NUMBER, |n| n - 1, count, rng),
            // `30` -> `03`, written `three`.
            Task::Reverse => digits_in(
                lang,
                10..=MAX_NUMBER,
                |n| 10 * (n % 10) + n / 10,
                count,
                rng,
            ),
            Task::Double => digits_in(lang, 0..=MAX_NUMBER / 2, |n| 2 * n, count, rng),
            Task::Plus10 => digits_in(lang, 0..=MAX_NUMBER - 10, |n| n + 10, count, rng),
            Task::Minus10 => digits_in(lang, 10..=MAX_NUMBER, |n| n - 10, count, rng),
            Task::Words2Num => deal_numbers(0..=MAX_NUMBER, count, rng)
                .map(|n| (words(n), n.to_string()))
                .collect(),
            Task::Successor => deal_numbers(0..=MAX_NUMBER - 1, count, rng)
                .map(|n| (words(n), words(n + 1)))
                .collect(),
            Task::Date => (0..count)
                .map(|_| {
                    let date = Date::random(rng);
                    (date.iso(), lang.date(date))
                })
                .collect(),
        }
    }
}

/// `count` pairs of a task that takes digits and writes a number in words: `n` of `inputs`, dealt
/// as [`deal_numbers`] does, and `rule(n)` written out in `lang`.
fn digits_in(
    lang: &dyn Language,
    inputs: std::ops::RangeInclusive<u32>,
    rule: fn(u32) -> u32,
    count: usize,
    rng: &mut SplitMix64,
) -> Vec<(String, String)> {
    deal_numbers(inputs, count, rng)
        .map(|n| (n.to_string(), lang.number(rule(n)).unwrap_or_default()))
        .collect()
}

/// `count` numbers of `range`, dealt from a deck that is reshuffled each time it runs out.
fn deal_numbers(
    range: std::ops::RangeInclusive<u32>,
    count: usize,
    rng: &mut SplitMix64,
) -> impl Iterator<Item = u32> + '_ {
    let deck: Vec<u32> = range.collect();
    let mut hand: Vec<u32> = Vec::new();
    (0..count).map(move |_| {
        if hand.is_empty() {
            hand = deck.clone();
            rng.shuffle(&mut hand);
        }
        hand.pop().unwrap_or_default()
    })
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The name is not one of [`Task::ALL`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown demo task {0:?} (known: {known})", known = known_names())]
pub struct UnknownTask(pub String);

/// The names of [`Task::ALL`], comma-separated.
fn known_names() -> String {
    Task::ALL.map(Task::name).join(", ")
}

impl FromStr for Task {
    type Err = UnknownTask;

    fn from_str(name: &str) -> Result<Self, Self::Err> {
        Task::ALL
            .into_iter()
            .find(|t| t.name() == name)
            .ok_or_else(|| UnknownTask(name.to_string()))
    }
}
