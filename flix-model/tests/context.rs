//! The model refuses positions past its context (max_position_embeddings) at its own boundary,
//! whoever calls it: a sequence of exactly the context is scored, one token more is an error that
//! names the limit.

mod common;

use flix_kernels::Device;
use flix_model::{score_sequences, LlamaModel, Sequence};

#[test]
fn a_sequence_past_the_context_is_refused_by_the_model() {
    let tmp = tempfile::tempdir().unwrap();
    let (base, _) = common::fixture(tmp.path());
    let model = LlamaModel::load(&base, &Device::Cpu).unwrap();
    let context = model.config.max_position_embeddings;
    let sequence = |len: usize| Sequence::prompt_and_target(vec![2; len], 1);

    let scores = score_sequences(&model, &[sequence(context)], 1 << 20).unwrap();
    assert_eq!(scores[0].token_logprobs.len(), context - 1);

    let err = score_sequences(&model, &[sequence(3), sequence(context + 1)], 1 << 20)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(&format!("position {context}"))
            && err.contains(&format!("context of {context} tokens"))
            && err.contains("max_position_embeddings"),
        "{err}"
    );
}
