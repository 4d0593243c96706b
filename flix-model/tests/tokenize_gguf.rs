//! The tokenizer built from GGUF metadata against Hugging Face transformers' GGUF conversion.
//!
//! Fixtures (fixtures/gguf-tokenizer/, written by scripts/make_gguf_tokenizer_fixtures.py): small
//! vocabularies in each supported style, with the ids and merges transformers produced from the
//! same vocabulary written as a GGUF file. The real Gemma 3 270M vocabulary is checked when
//! FLIX_GEMMA3_GGUF and FLIX_GEMMA3_VOCAB_JSON are set (skipped with a message otherwise).

use std::path::{Path, PathBuf};

use flix_model::tokenize::Tokenizer;
use flix_model::tokenize_gguf::{build_hf_tokenizer, build_tokenizer, GgufVocab};
use serde::Deserialize;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gguf-tokenizer")
}

/// What transformers produced from a vocabulary.
#[derive(Deserialize)]
struct Reference {
    texts: Vec<String>,
    /// Ids of each text, with special tokens (BOS where the file asks for it).
    ids: Vec<Vec<u32>>,
    /// transformers' decoding of those ids, special tokens skipped.
    decoded: Vec<String>,
    /// The BPE merges of transformers' tokenizer, "left right", best first; absent for the real
    /// model (the ids pin them down on the texts).
    #[serde(default)]
    merges: Option<Vec<String>>,
    /// transformers' added tokens: id, text, special.
    #[serde(default)]
    added_tokens: Option<Vec<(u32, String, bool)>>,
}

#[derive(Deserialize)]
struct Fixture {
    #[serde(flatten)]
    vocab: GgufVocab,
    reference: Reference,
}

fn read_fixture(name: &str) -> (GgufVocab, Reference, PathBuf) {
    let path = fixture_dir().join(format!("{name}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    let fixture: Fixture = serde_json::from_str(&text).unwrap();
    (fixture.vocab, fixture.reference, path)
}

/// The `tokenizer.json` of the tokenizer built from `vocab`.
fn tokenizer_json(vocab: &GgufVocab, path: &Path) -> serde_json::Value {
    let tokenizer = build_hf_tokenizer(vocab, path).unwrap();
    serde_json::from_str(&tokenizer.to_string(false).unwrap()).unwrap()
}

/// The merges of a `tokenizer.json`, "left right", best first.
fn merges_of(json: &serde_json::Value) -> Vec<String> {
    json["model"]["merges"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| match m {
            serde_json::Value::Array(pair) => {
                format!(
                    "{} {}",
                    pair[0].as_str().unwrap(),
                    pair[1].as_str().unwrap()
                )
            }
            other => other.as_str().unwrap().to_string(),
        })
        .collect()
}

/// Our ids equal transformers' for every text and so does our decoding of them. With
/// `round_trips`, decoding also gives the text back, less the control tokens it holds (not so for
/// Llama-style files, whose dummy prefix swallows one leading space, in transformers too).
fn assert_matches(
    tokenizer: &Tokenizer,
    vocab: &GgufVocab,
    reference: &Reference,
    round_trips: bool,
    what: &str,
) {
    assert_eq!(reference.texts.len(), reference.ids.len());
    assert_eq!(reference.texts.len(), reference.decoded.len());
    let mut mismatches = Vec::new();
    for ((text, expected), expected_text) in reference
        .texts
        .iter()
        .zip(&reference.ids)
        .zip(&reference.decoded)
    {
        let ids = tokenizer.encode_with_special(text, true).unwrap();
        if &ids != expected {
            mismatches.push(format!(
                "{text:?}:\n  ours         {ids:?}\n  transformers {expected:?}"
            ));
            continue;
        }
        let decoded = tokenizer.decode(&ids).unwrap();
        assert_eq!(&decoded, expected_text, "{what}: decoding {text:?}");
        if round_trips {
            assert_eq!(
                decoded,
                without_control_tokens(text, vocab),
                "{what}: decoding {text:?}"
            );
        }
    }
    assert!(
        mismatches.is_empty(),
        "{what}: ids differ from transformers on\n{}",
        mismatches.join("\n")
    );
}

/// `text` with every control token of `vocab` removed: decoding skips special tokens.
fn without_control_tokens(text: &str, vocab: &GgufVocab) -> String {
    let types = vocab.token_types.as_deref().unwrap_or(&[]);
    let mut out = text.to_string();
    for (token, &kind) in vocab.tokens.iter().zip(types) {
        if kind == flix_model::tokenize_gguf::token_type::CONTROL && !token.is_empty() {
            out = out.replace(token.as_str(), "");
        }
    }
    out
}

fn check_fixture(name: &str, round_trips: bool) {
    let (vocab, reference, path) = read_fixture(name);
    let tokenizer = build_tokenizer(&vocab, &path).unwrap();
    let json = tokenizer_json(&vocab, &path);
    if let Some(expected) = &reference.merges {
        assert_eq!(
            &merges_of(&json),
            expected,
            "{name}: merges differ from transformers'"
        );
    }
    if let Some(expected) = &reference.added_tokens {
        let mut ours: Vec<(u32, String, bool)> = json["added_tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let id = t["id"].as_u64().unwrap() as u32;
                (
                    id,
                    t["content"].as_str().unwrap().to_string(),
                    t["special"].as_bool().unwrap(),
                )
            })
            .collect();
        // transformers also adds its classes' default special tokens (e.g. "<|endoftext|>")
        // when the vocabulary lacks them, as new ids past the model's; we add none.
        let mut expected: Vec<(u32, String, bool)> = expected
            .iter()
            .filter(|(id, _, _)| (*id as usize) < vocab.tokens.len())
            .cloned()
            .collect();
        ours.sort();
        expected.sort();
        assert_eq!(
            ours, expected,
            "{name}: added tokens differ from transformers'"
        );
    }
    assert_matches(&tokenizer, &vocab, &reference, round_trips, name);
    // Every id has a row in the model: no token was added beyond the file's.
    assert_eq!(
        tokenizer.vocab_size(),
        vocab.tokens.len(),
        "{name}: vocabulary size"
    );
    assert_eq!(
        tokenizer.eos_id().unwrap(),
        vocab.eos_id.unwrap(),
        "{name}: eos id"
    );
}

#[test]
fn gemma_style_sentencepiece_matches_transformers() {
    check_fixture("spm-gemma", true);
}

#[test]
fn llama_style_sentencepiece_matches_transformers() {
    check_fixture("spm-llama", false);
}

#[test]
fn phi3_style_sentencepiece_matches_transformers() {
    check_fixture("spm-phi3", true);
}

#[test]
fn llama3_byte_level_bpe_matches_transformers() {
    check_fixture("bpe-llama3", true);
}

#[test]
fn qwen2_byte_level_bpe_matches_transformers() {
    check_fixture("bpe-qwen2", true);
}

#[test]
fn gemma_keeps_user_defined_tokens_whole_and_adds_bos() {
    let (vocab, _, path) = read_fixture("spm-gemma");
    let tokenizer = build_tokenizer(&vocab, &path).unwrap();
    let id_of = |token: &str| vocab.tokens.iter().position(|t| t == token).unwrap() as u32;
    let ids = tokenizer
        .encode_with_special("<think>\n\n\n", true)
        .unwrap();
    assert_eq!(
        ids,
        vec![vocab.bos_id.unwrap(), id_of("<think>"), id_of("\n\n\n")]
    );
    // Without special tokens: no BOS, and a control token in the text is still one token.
    let ids = tokenizer.encode("<start_of_turn>").unwrap();
    assert_eq!(ids, vec![id_of("<start_of_turn>")]);
}

#[test]
fn llama_style_without_space_prefix_adds_no_dummy_space() {
    let (mut vocab, _, path) = read_fixture("spm-llama");
    let with_prefix = build_tokenizer(&vocab, &path).unwrap();
    vocab.add_space_prefix = Some(false);
    let without = build_tokenizer(&vocab, &path).unwrap();
    let text = "the agent";
    let first_piece = |tokenizer: &Tokenizer| {
        let ids = tokenizer.encode(text).unwrap();
        vocab.tokens[ids[0] as usize].clone()
    };
    assert!(first_piece(&with_prefix).starts_with('\u{2581}'));
    assert!(!first_piece(&without).starts_with('\u{2581}'));
    for tokenizer in [&with_prefix, &without] {
        let ids = tokenizer.encode(text).unwrap();
        assert_eq!(tokenizer.decode(&ids).unwrap(), text);
    }
}

#[test]
fn byte_level_control_token_outside_the_byte_alphabet_adds_no_id() {
    // Some converters write a special token in plain UTF-8 ("▁" is not in the byte alphabet) and
    // mark it control; it stays an ordinary vocabulary entry, and the file's EOS id still counts.
    let (mut vocab, _, path) = read_fixture("bpe-qwen2");
    vocab
        .tokens
        .push("<\u{ff5c}end\u{2581}of\u{2581}sentence\u{ff5c}>".into());
    vocab.token_types.as_mut().unwrap().push(3);
    let last = vocab.tokens.len() as u32 - 1;
    vocab.eos_id = Some(last);
    let tokenizer = build_tokenizer(&vocab, &path).unwrap();
    assert_eq!(tokenizer.vocab_size(), vocab.tokens.len());
    assert_eq!(tokenizer.eos_id().unwrap(), last);
}

fn build_error(vocab: &GgufVocab) -> String {
    match build_tokenizer(vocab, Path::new("models/x.gguf")) {
        Ok(_) => panic!("expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_metadata_gives_errors_naming_the_file_and_key() {
    let (good, _, _) = read_fixture("spm-llama");
    let count = good.tokens.len();

    let unknown_model = GgufVocab {
        model: "rwkv".into(),
        ..good.clone()
    };
    let err = build_error(&unknown_model);
    assert!(
        err.contains("models/x.gguf") && err.contains("\"rwkv\""),
        "{err}"
    );

    let no_tokens = GgufVocab {
        tokens: Vec::new(),
        ..good.clone()
    };
    let err = build_error(&no_tokens);
    assert!(err.contains("tokenizer.ggml.tokens"), "{err}");

    let short_scores = GgufVocab {
        scores: Some(vec![0.0; count - 1]),
        ..good.clone()
    };
    let err = build_error(&short_scores);
    assert!(
        err.contains("tokenizer.ggml.scores") && err.contains(&format!("{}", count - 1)),
        "{err}"
    );

    let short_types = GgufVocab {
        token_types: Some(vec![1; 3]),
        ..good.clone()
    };
    let err = build_error(&short_types);
    assert!(err.contains("tokenizer.ggml.token_type"), "{err}");

    let bos_out_of_range = GgufVocab {
        bos_id: Some(count as u32),
        ..good.clone()
    };
    let err = build_error(&bos_out_of_range);
    assert!(
        err.contains("bos_token_id") && err.contains(&count.to_string()),
        "{err}"
    );

    let no_scores = GgufVocab {
        scores: None,
        ..good.clone()
    };
    let err = build_error(&no_scores);
    assert!(err.contains("tokenizer.ggml.scores is missing"), "{err}");

    let (bpe, _, _) = read_fixture("bpe-qwen2");
    let unknown_pre = GgufVocab {
        pre: Some("made-up".into()),
        ..bpe.clone()
    };
    let err = build_error(&unknown_pre);
    assert!(
        err.contains("\"made-up\"") && err.contains("tokenizer.ggml.pre"),
        "{err}"
    );

    let no_pre = GgufVocab {
        pre: None,
        ..bpe.clone()
    };
    assert!(build_error(&no_pre).contains("tokenizer.ggml.pre is missing"));

    let no_merges = GgufVocab {
        merges: None,
        ..bpe.clone()
    };
    assert!(build_error(&no_merges).contains("tokenizer.ggml.merges is missing"));

    let mut bad_merge = bpe.clone();
    bad_merge.merges.as_mut().unwrap()[2] = "abc".into();
    let err = build_error(&bad_merge);
    assert!(err.contains("tokenizer.ggml.merges[2]"), "{err}");
}

/// The real Gemma 3 270M vocabulary, or None (with a message) when it is not available.
///
/// The vocabulary of the GGUF file FLIX_GEMMA3_GGUF names, read by the GGUF reader.
fn real_vocab() -> Option<GgufVocab> {
    let Ok(gguf) = std::env::var("FLIX_GEMMA3_GGUF") else {
        eprintln!(
            "SKIPPED the Gemma 3 270M tokenizer check: set FLIX_GEMMA3_GGUF to the GGUF file \
             (scripts/fetch_gemma3_gguf.sh)"
        );
        return None;
    };
    let file = flix_model::gguf::GgufFile::open(Path::new(&gguf)).unwrap();
    Some(GgufVocab::from_gguf(&file).unwrap())
}

#[test]
fn gemma3_270m_matches_transformers() {
    let Some(vocab) = real_vocab() else { return };
    let start = std::time::Instant::now();
    let tokenizer = build_tokenizer(&vocab, Path::new("gemma-3-270m")).unwrap();
    let built_in = start.elapsed();
    eprintln!(
        "built the {}-token tokenizer in {built_in:?}",
        vocab.tokens.len()
    );
    assert!(built_in.as_secs_f64() < 10.0, "building took {built_in:?}");

    let text = std::fs::read_to_string(fixture_dir().join("gemma3_270m_ids.json")).unwrap();
    let reference: Reference = serde_json::from_str(&text).unwrap();
    assert_matches(&tokenizer, &vocab, &reference, true, "gemma-3-270m");
    assert_eq!(tokenizer.eos_id().unwrap(), 1);
    assert_eq!(tokenizer.encode_with_special("", true).unwrap(), vec![2]);
}
