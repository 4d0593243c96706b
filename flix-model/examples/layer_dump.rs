//! Writes every layer's activations for one text of the Gemma 3 GGUF fixture, for comparing
//! flix's arithmetic op by op with transformers' (`scripts/gemma3_layer_errors.py` dumps
//! transformers' in float32 and float64 and prints the per-layer errors). A diagnostic, not a
//! test:
//!
//! ```text
//! cargo run --release -p flix-model --example layer_dump -- MODEL.gguf OUT_DIR [TEXT_INDEX]
//! ```
//!
//! Reads `flix-model/tests/fixtures/gemma3-270m/texts.jsonl` (text 10, the 2,340-token one, by
//! default) and writes `OUT_DIR/L{layer}_{name}.f32` (raw little-endian f32, `[tokens, width]`
//! row-major) for each activation `LlamaModel::visit_activations` names, plus `logprobs.json`.

use std::path::{Path, PathBuf};

use flix_kernels::{DType, Device};
use flix_model::{score_sequences, Batch, ModelSource};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().collect();
    let (Some(gguf), Some(out)) = (args.get(1), args.get(2)) else {
        return Err("usage: layer_dump MODEL.gguf OUT_DIR [TEXT_INDEX]".into());
    };
    let index: usize = args.get(3).map_or(Ok(10), |a| a.parse())?;
    let out = PathBuf::from(out);
    std::fs::create_dir_all(&out)?;
    let source = ModelSource::open(Path::new(gguf))?;
    let tokenizer = source.tokenizer()?;
    let texts =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/gemma3-270m/texts.jsonl");
    let line = std::fs::read_to_string(texts)?
        .lines()
        .nth(index)
        .ok_or("no such text")?
        .to_string();
    let example: serde_json::Value = serde_json::from_str(&line)?;
    let field = |name: &str| example[name].as_str().unwrap_or_default().to_string();
    let sequence = tokenizer.encode_example(&field("input"), &field("target"))?;
    let model = source.load_as(&Device::Cpu, DType::F32)?;
    let batch = model.upload(&Batch::new(std::slice::from_ref(&sequence))?)?;
    model.visit_activations(&batch, &mut |layer, named| {
        for (name, tensor) in named {
            let bytes: Vec<u8> = tensor
                .to_f32_vec()?
                .iter()
                .flat_map(|v| v.to_le_bytes())
                .collect();
            let path = out.join(format!("L{layer:02}_{name}.f32"));
            std::fs::write(&path, bytes)
                .map_err(|e| flix_model::ModelError::Invalid(format!("{}: {e}", path.display())))?;
        }
        Ok(())
    })?;
    let scores = score_sequences(&model, &[sequence], 1 << 20)?;
    std::fs::write(
        out.join("logprobs.json"),
        serde_json::to_string(&scores[0].token_logprobs)?,
    )?;
    eprintln!(
        "wrote {} tokens' activations to {}",
        batch.num_tokens(),
        out.display()
    );
    Ok(())
}
