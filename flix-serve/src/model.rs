//! What the HTTP side knows about the served run: its name, base, feature types and adapters, and
//! the tokenizer. The model itself stays in the engine thread; this is everything else, shared
//! read-only by the request handlers so that they can validate and tokenize without it.

use std::path::{Path, PathBuf};

use flix_core::{Example, Location};
use flix_model::export::Combination;
use flix_model::train::checkpoint::{latest_checkpoint, read_adapter_config};
use flix_model::train::Layout;
use flix_model::Tokenizer;
use serde_json::{json, Value};

use crate::ServeError;

/// The served run, minus the model weights.
pub struct ModelInfo {
    /// The name clients see in `model` (the run directory's name unless configured).
    pub id: String,
    /// The base model the run was trained on.
    pub base: PathBuf,
    pub layout: Layout,
    pub tokenizer: Tokenizer,
    pub eos: u32,
    /// The model's `max_position_embeddings`: prompt + new tokens must fit in it.
    pub max_positions: usize,
    /// The model's `vocab_size`: every token id of a prompt given as ids must be below it.
    pub vocab_size: usize,
}

impl ModelInfo {
    /// The decoder slots of a combination: types not named, and values the run never saw, are
    /// absent (the caller has already warned about those).
    pub fn slots(&self, combination: &Combination) -> Vec<i32> {
        let example = Example {
            location: Location {
                file: std::sync::Arc::from(Path::new("request")),
                line: 0,
            },
            id: None,
            features: combination.clone(),
            input: String::new(),
            target: String::new(),
        };
        self.layout
            .slots(&self.layout.registry.encode_inference(&example))
    }

    /// The `GET /v1/models` body: the OpenAI list with one model, plus what FLix adds (the base,
    /// the feature types with their values, the adapters with their ranks).
    pub fn models_json(&self, created: u64) -> Value {
        let features: serde_json::Map<String, Value> = self
            .layout
            .registry
            .types()
            .iter()
            .map(|t| (t.name().to_string(), json!(t.values())))
            .collect();
        let adapters: Vec<Value> = self
            .layout
            .adapter_types()
            .into_iter()
            .map(|(name, t)| json!({"type": name, "rank": t.rank, "values": t.num_values}))
            .collect();
        json!({
            "object": "list",
            "data": [{
                "id": self.id,
                "object": "model",
                "created": created,
                "owned_by": "flix",
                "base": self.base.display().to_string(),
                "method": self.layout.method.name(),
                "features": features,
                "adapters": adapters,
                "max_positions": self.max_positions,
            }]
        })
    }
}

/// When the command line names a base as well as the run, it must be the base the run was
/// trained on: adapters applied to another model would serve noise.
pub fn check_base(run: &Path, base: &Path) -> Result<(), ServeError> {
    let checkpoint = latest_checkpoint(run)?.unwrap_or_else(|| run.to_path_buf());
    let (config, _) = read_adapter_config(&checkpoint)?;
    let same = match (base.canonicalize(), config.base_model.canonicalize()) {
        (Ok(given), Ok(recorded)) => given == recorded,
        _ => base == config.base_model,
    };
    if same {
        Ok(())
    } else {
        Err(ServeError::Config(format!(
            "{} was trained on {}, not on {}: give that base, or only the run",
            run.display(),
            config.base_model.display(),
            base.display()
        )))
    }
}

/// The served name of a run directory: its last component.
pub fn default_id(run: &Path) -> String {
    run.canonicalize()
        .ok()
        .as_deref()
        .unwrap_or(run)
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "flix".to_string())
}
