//! chrF against sacreBLEU. The expected scores were computed with sacreBLEU 2.6.0 (`pip install
//! sacrebleu`), default `CHRF()`, by this script:
//!
//! ```python
//! from sacrebleu.metrics import CHRF
//! chrf = CHRF()  # char_order=6, word_order=0, beta=2
//! for h, r in SENTENCES:
//!     print(h, r, chrf.sentence_score(h, [r]).score)
//! print(chrf.corpus_score(HYPS, [REFS]).score)
//! ```

use super::*;

/// (hypothesis, reference, sacreBLEU's sentence-level chrF).
const SENTENCES: &[(&str, &str, f64)] = &[
    ("thirty-seven", "thirty-seven", 100.0),
    ("thirty-six", "thirty-seven", 58.97541302854749),
    ("5 March 2024", "5. März 2024", 23.769841269841262),
    // Whitespace (runs, tabs) is removed before counting.
    (
        "the cat sat on the mat",
        "the  cat\tsat on a mat",
        72.0848317308462,
    ),
    // Case is kept.
    ("Positive", "positive", 79.70238095238096),
    // Strings shorter than 6 characters: only orders with n-grams on both sides count.
    ("abc", "abcd", 68.86227544910179),
    // Repeated n-grams match at most as often as the reference has them.
    ("aaaaaa", "aa", 64.51612903225808),
    ("ab", "abcdefgh", 23.404255319148938),
    // Characters are Unicode scalar values (Tamil vowel signs count on their own).
    ("東京は晴れです", "東京は雨です", 27.02724618877716),
    ("வீட்டின்மீது", "வீட்டிலிருந்து", 34.84410093199355),
    ("", "thirty", 0.0),
    ("thirty", "", 0.0),
    ("", "", 0.0),
    ("xyz", "abc", 0.0),
];

fn assert_close(got: f64, want: f64, what: &str) {
    assert!(
        (got - want).abs() <= 1e-9 * want.abs().max(1.0),
        "{what}: chrF {got}, sacreBLEU {want}"
    );
}

#[test]
fn sentence_scores_match_sacrebleu() {
    for &(hyp, refr, want) in SENTENCES {
        let got = ChrfStats::sentence(hyp, refr).score();
        assert_close(got, want, &format!("{hyp:?} vs {refr:?}"));
    }
}

#[test]
fn corpus_score_sums_statistics_like_sacrebleu() {
    let hyps = ["thirty-six", "5 March 2024", "", "Positive", "vingt et un"];
    let refs = [
        "thirty-seven",
        "5. März 2024",
        "neutral",
        "positive",
        "vingt-et-un",
    ];
    let got = corpus_chrf(hyps.iter().copied().zip(refs.iter().copied()));
    assert_close(got, 42.796029117564345, "corpus");
    // Summing statistics is not averaging sentence scores.
    let mean = hyps
        .iter()
        .zip(&refs)
        .map(|(h, r)| ChrfStats::sentence(h, r).score())
        .sum::<f64>()
        / hyps.len() as f64;
    assert!((got - mean).abs() > 1.0, "corpus {got} vs mean {mean}");
}

#[test]
fn identical_strings_score_100_and_empty_hypotheses_0() {
    for s in ["a", "zweiundvierzig", "5 March 2024", "東京"] {
        assert_close(ChrfStats::sentence(s, s).score(), 100.0, s);
        assert_eq!(ChrfStats::sentence("", s).score(), 0.0, "{s}");
    }
    assert_eq!(corpus_chrf([]), 0.0);
}
