//! The OpenAI completions API: request parsing and validation, response bodies, and the error
//! body every refusal gets. Parsing walks a `serde_json::Value` field by field rather than
//! deriving `Deserialize`, so that every error names the offending field (`param`) the way
//! OpenAI's errors do.

use std::collections::BTreeMap;

use axum::http::StatusCode;
use flix_model::export::{parse_combination, Combination};
use flix_model::SequenceParams;
use serde::Serialize;
use serde_json::{json, Map, Value};

use crate::model::ModelInfo;
use crate::text::TokenEntry;
use crate::Limits;

/// OpenAI's limit on stop strings.
pub const MAX_STOP_STRINGS: usize = 4;
/// OpenAI's default `max_tokens`.
pub const DEFAULT_MAX_TOKENS: usize = 16;
/// OpenAI's limit on `logprobs`: alternatives reported per token.
pub const MAX_LOGPROBS: usize = 5;

/// A refused request: its status and the OpenAI-style error body.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// The request field at fault, when one is.
    pub param: Option<String>,
    pub code: Option<&'static str>,
    /// Seconds a client should wait before retrying (429, 503).
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// A 400 naming the field at fault.
    pub fn invalid(param: &str, message: impl Into<String>) -> Self {
        Self {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
            param: Some(param.to_string()),
            code: None,
            retry_after: None,
        }
    }

    pub fn with_status(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
            param: None,
            code: None,
            retry_after: None,
        }
    }

    /// OpenAI's error `type`: client errors are `invalid_request_error`, ours `server_error`.
    pub fn kind(&self) -> &'static str {
        if self.status.is_server_error() && self.status != StatusCode::SERVICE_UNAVAILABLE {
            "server_error"
        } else {
            "invalid_request_error"
        }
    }

    pub fn body(&self) -> Value {
        json!({"error": {
            "message": self.message,
            "type": self.kind(),
            "param": self.param,
            "code": self.code,
        }})
    }
}

/// One prompt of a request: text, tokenized by the server, or token ids, used as given.
#[derive(Debug, Clone, PartialEq)]
pub enum Prompt {
    Text(String),
    Tokens(Vec<u32>),
}

/// A valid completion request, its text prompts not yet tokenized.
#[derive(Debug, Clone, PartialEq)]
pub struct CompletionRequest {
    pub prompts: Vec<Prompt>,
    pub max_tokens: usize,
    pub temperature: f32,
    pub top_p: f32,
    pub seed: u64,
    pub stop: Vec<String>,
    pub stream: bool,
    /// `stream_options.include_usage`: a last chunk with the usage (OpenAI's behaviour).
    pub include_usage: bool,
    /// `logprobs`: report each token's log-probability and this many alternatives'.
    pub logprobs: Option<usize>,
    /// `echo`: each choice's text starts with its prompt (with `logprobs`, scored too).
    pub echo: bool,
    pub features: Combination,
    /// Served anyway, but the client should know (an unknown feature value, an ignored field).
    pub warnings: Vec<String>,
}

/// Fields of OpenAI's completions API that the server accepts and ignores: they change nothing
/// about what a single greedy or sampled completion means.
const IGNORED_FIELDS: [&str; 2] = ["user", "logit_bias"];

/// Parses and validates a request body against the server's limits and the run's feature types.
pub fn parse_request(
    body: &Value,
    limits: &Limits,
    model: &ModelInfo,
) -> Result<CompletionRequest, ApiError> {
    let Some(fields) = body.as_object() else {
        return Err(ApiError::invalid(
            "body",
            format!("the body must be a JSON object, found {}", kind_of(body)),
        ));
    };
    let mut warnings = Vec::new();
    // `model` names the served model loosely: the server serves one, and OpenAI clients insist
    // on sending some name, so any string is accepted and the response names the served model.
    // What follows an `@` is a feature combination, for clients that cannot add `features`.
    let model_features = match present(fields, "model") {
        None => None,
        Some(Value::String(name)) => name.split_once('@').map(|(_, features)| features),
        Some(v) => return Err(type_error("model", "a string", v)),
    };
    let prompts = parse_prompt(fields)?;
    let echo = flag(fields, "echo")?;
    let max_tokens = match present(fields, "max_tokens") {
        None => DEFAULT_MAX_TOKENS.min(limits.max_tokens),
        // With echo, 0 asks for the prompt alone (scored, with logprobs): no completion.
        Some(v) if echo && v.as_u64() == Some(0) => 0,
        Some(v) => parse_max_tokens(v, limits)?,
    };
    let temperature = match present(fields, "temperature") {
        // Greedy by default (OpenAI's default is 1): the answer a FLix user compares with
        // `flix generate` and evaluation.
        None => 0.0,
        Some(v) => {
            let t = number("temperature", v)?;
            if !(t >= 0.0 && t.is_finite() && t <= f32::MAX as f64) {
                return Err(ApiError::invalid(
                    "temperature",
                    format!("temperature must be finite and >= 0 (0: greedy), found {t}"),
                ));
            }
            t as f32
        }
    };
    let top_p = match present(fields, "top_p") {
        None => 1.0,
        Some(v) => {
            let p = number("top_p", v)?;
            if !(p > 0.0 && p <= 1.0) {
                return Err(ApiError::invalid(
                    "top_p",
                    format!("top_p must be in (0, 1], found {p}"),
                ));
            }
            p as f32
        }
    };
    let seed = match present(fields, "seed") {
        None => 0,
        Some(v) => v.as_u64().ok_or_else(|| {
            ApiError::invalid(
                "seed",
                format!("seed must be an integer in [0, 2^64), found {v}"),
            )
        })?,
    };
    let stop = parse_stop(fields)?;
    let stream = flag(fields, "stream")?;
    let include_usage = match present(fields, "stream_options") {
        None => false,
        Some(Value::Object(options)) => flag(options, "include_usage")?,
        Some(v) => return Err(type_error("stream_options", "an object", v)),
    };
    let logprobs = present(fields, "logprobs")
        .map(|v| match v.as_u64() {
            Some(k) if k as usize <= MAX_LOGPROBS => Ok(k as usize),
            _ => Err(ApiError::invalid(
                "logprobs",
                format!(
                    "logprobs must be an integer in [0, {MAX_LOGPROBS}] (each token's \
                     log-probability and that many alternatives'), found {v}"
                ),
            )),
        })
        .transpose()?;
    refuse_unsupported(fields)?;
    let features = parse_features(fields, model_features, model, &mut warnings)?;
    for name in fields.keys() {
        if !KNOWN_FIELDS.contains(&name.as_str()) && !IGNORED_FIELDS.contains(&name.as_str()) {
            warnings.push(format!("unknown field {name:?} ignored"));
        }
    }
    Ok(CompletionRequest {
        prompts,
        max_tokens,
        temperature,
        top_p,
        seed,
        stop,
        stream,
        include_usage,
        logprobs,
        echo,
        features,
        warnings,
    })
}

/// Every field [`parse_request`] reads or checks.
const KNOWN_FIELDS: [&str; 18] = [
    "model",
    "prompt",
    "max_tokens",
    "temperature",
    "top_p",
    "seed",
    "stop",
    "stream",
    "stream_options",
    "echo",
    "features",
    "n",
    "best_of",
    "logprobs",
    "suffix",
    "presence_penalty",
    "frequency_penalty",
    "top_k",
];

/// The field `name` unless it is missing or null (OpenAI clients send null for "default").
fn present<'a>(fields: &'a Map<String, Value>, name: &str) -> Option<&'a Value> {
    fields.get(name).filter(|v| !v.is_null())
}

fn kind_of(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn type_error(param: &str, expected: &str, found: &Value) -> ApiError {
    ApiError::invalid(
        param,
        format!("{param} must be {expected}, found {}", kind_of(found)),
    )
}

fn number(param: &str, v: &Value) -> Result<f64, ApiError> {
    v.as_f64().ok_or_else(|| type_error(param, "a number", v))
}

fn flag(fields: &Map<String, Value>, name: &str) -> Result<bool, ApiError> {
    match present(fields, name) {
        None => Ok(false),
        Some(Value::Bool(b)) => Ok(*b),
        Some(v) => Err(type_error(name, "a boolean", v)),
    }
}

/// OpenAI's four prompt forms: a string, an array of strings, an array of token ids (one
/// prompt), or an array of token-id arrays (one prompt each).
fn parse_prompt(fields: &Map<String, Value>) -> Result<Vec<Prompt>, ApiError> {
    let bad_form = || {
        ApiError::invalid(
            "prompt",
            "prompt must be a string, an array of strings, an array of token ids, or an array of \
             token-id arrays",
        )
    };
    let items = match present(fields, "prompt") {
        None => return Err(ApiError::invalid("prompt", "prompt is required")),
        Some(Value::String(text)) => return Ok(vec![Prompt::Text(text.clone())]),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(bad_form()),
    };
    if items.is_empty() {
        return Err(ApiError::invalid(
            "prompt",
            "prompt is an empty array: give at least one prompt",
        ));
    }
    match &items[0] {
        Value::String(_) => items
            .iter()
            .map(|item| match item {
                Value::String(text) => Ok(Prompt::Text(text.clone())),
                _ => Err(bad_form()),
            })
            .collect(),
        Value::Number(_) => Ok(vec![Prompt::Tokens(token_ids(items, "prompt")?)]),
        Value::Array(_) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::Array(ids) => Ok(Prompt::Tokens(token_ids(ids, &format!("prompt {i}"))?)),
                _ => Err(bad_form()),
            })
            .collect(),
        _ => Err(bad_form()),
    }
}

/// Token ids as u32; the vocabulary bound is checked with the model ([`sequences`]).
fn token_ids(items: &[Value], which: &str) -> Result<Vec<u32>, ApiError> {
    items
        .iter()
        .map(|v| {
            v.as_u64()
                .and_then(|id| u32::try_from(id).ok())
                .ok_or_else(|| {
                    ApiError::invalid(
                        "prompt",
                        format!("{which}: token ids must be integers in [0, 2^32), found {v}"),
                    )
                })
        })
        .collect()
}

fn parse_max_tokens(v: &Value, limits: &Limits) -> Result<usize, ApiError> {
    let limit = limits.max_tokens;
    let Some(n) = v.as_u64() else {
        return Err(ApiError::invalid(
            "max_tokens",
            format!("max_tokens must be an integer in [1, {limit}], found {v}"),
        ));
    };
    if n == 0 || n > limit as u64 {
        return Err(ApiError::invalid(
            "max_tokens",
            format!("max_tokens must be in [1, {limit}] (the server's --max-tokens), found {n}"),
        ));
    }
    Ok(n as usize)
}

fn parse_stop(fields: &Map<String, Value>) -> Result<Vec<String>, ApiError> {
    let stop: Vec<String> = match present(fields, "stop") {
        None => Vec::new(),
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                item.as_str()
                    .map(str::to_string)
                    .ok_or_else(|| type_error("stop", "a string or an array of strings", item))
            })
            .collect::<Result<_, _>>()?,
        Some(v) => return Err(type_error("stop", "a string or an array of strings", v)),
    };
    if stop.len() > MAX_STOP_STRINGS {
        return Err(ApiError::invalid(
            "stop",
            format!(
                "at most {MAX_STOP_STRINGS} stop strings, found {}",
                stop.len()
            ),
        ));
    }
    if stop.iter().any(String::is_empty) {
        return Err(ApiError::invalid("stop", "a stop string is empty"));
    }
    Ok(stop)
}

/// OpenAI fields the server cannot honour: accepted only at the value that means "off".
fn refuse_unsupported(fields: &Map<String, Value>) -> Result<(), ApiError> {
    for (name, neutral) in [("n", json!(1)), ("best_of", json!(1))] {
        if let Some(v) = present(fields, name) {
            if v.as_u64() != neutral.as_u64() {
                return Err(ApiError::invalid(
                    name,
                    format!("{name} must be 1 (one completion per prompt), found {v}"),
                ));
            }
        }
    }
    for name in ["presence_penalty", "frequency_penalty"] {
        if let Some(v) = present(fields, name) {
            if v.as_f64() != Some(0.0) {
                return Err(ApiError::invalid(
                    name,
                    format!("{name} is not supported (only 0), found {v}"),
                ));
            }
        }
    }
    for name in ["suffix", "top_k"] {
        if present(fields, name).is_some() {
            return Err(ApiError::invalid(name, format!("{name} is not supported")));
        }
    }
    Ok(())
}

/// The `features` object: every type must be one of the run's, every value a string. A value
/// the run never saw is served absent with a warning, as `flix generate` and `flix eval` do.
/// The feature combination of a request: the `features` object, or the `type=value,...` list
/// after `@` in `model` (one or the other), checked against the run's feature types.
fn parse_features(
    fields: &Map<String, Value>,
    model_features: Option<&str>,
    model: &ModelInfo,
    warnings: &mut Vec<String>,
) -> Result<Combination, ApiError> {
    let (param, given) = match (present(fields, "features"), model_features) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "features",
                "features are given twice: in `features` and after `@` in `model`; give one",
            ))
        }
        (None, None) => return Ok(Combination::new()),
        (Some(Value::Object(items)), None) => {
            let mut given = Vec::with_capacity(items.len());
            for (name, value) in items {
                let Some(value) = value.as_str() else {
                    return Err(type_error(&format!("features.{name}"), "a string", value));
                };
                given.push((name.clone(), value.to_string()));
            }
            ("features", given)
        }
        (Some(v), None) => {
            return Err(type_error(
                "features",
                "an object like {\"lang\": \"deu\"}",
                v,
            ))
        }
        (None, Some(text)) => {
            let combination = parse_combination(text).map_err(|e| {
                ApiError::invalid("model", format!("the features after `@` in model: {e}"))
            })?;
            ("model", combination.into_iter().collect())
        }
    };
    let registry = &model.layout.registry;
    let mut combination = Combination::new();
    for (name, value) in given {
        let Some(feature_type) = registry.feature_type(&name) else {
            let param = match param {
                "features" => format!("features.{name}"),
                _ => param.to_string(),
            };
            return Err(ApiError::invalid(
                &param,
                format!(
                    "unknown feature type {name:?} (the run knows {:?})",
                    registry.type_names()
                ),
            ));
        };
        if feature_type.id_of(&value).is_none() {
            warnings.push(unknown_value_warning(&name, &value, feature_type.values()));
        }
        combination.insert(name, value);
    }
    Ok(combination)
}

/// The warning for a feature value the run has no adapter for (served absent); `flix generate`
/// prints the same.
pub fn unknown_value_warning(name: &str, value: &str, known: &[String]) -> String {
    format!("{name}={value} was never trained (known: {known:?}); served with {name} absent")
}

/// The decoder sequences of a request, one per prompt, with the prompt tokens counted; refuses
/// prompts that tokenize to nothing or do not fit the limits or the model's positions.
pub fn sequences(
    request: &CompletionRequest,
    limits: &Limits,
    model: &ModelInfo,
) -> Result<Vec<SequenceParams>, ApiError> {
    if request.prompts.len() > limits.max_prompts {
        return Err(ApiError::invalid(
            "prompt",
            format!(
                "the prompt array has {} entries, over the server's limit of {} per request \
                 (--max-prompts)",
                request.prompts.len(),
                limits.max_prompts
            ),
        ));
    }
    let slots = model.slots(&request.features);
    let mut out = Vec::with_capacity(request.prompts.len());
    for (index, given) in request.prompts.iter().enumerate() {
        let which = if request.prompts.len() == 1 {
            "the prompt".to_string()
        } else {
            format!("prompt {index}")
        };
        let prompt = match given {
            Prompt::Text(text) => model
                .tokenizer
                .encode_prompt(text)
                .map_err(|e| ApiError::invalid("prompt", format!("{which}: {e}")))?,
            Prompt::Tokens(ids) => {
                if let Some(id) = ids.iter().find(|&&id| id as usize >= model.vocab_size) {
                    return Err(ApiError::invalid(
                        "prompt",
                        format!(
                            "{which}: token id {id} is outside the model's vocabulary of {}",
                            model.vocab_size
                        ),
                    ));
                }
                ids.clone()
            }
        };
        if prompt.is_empty() {
            let what = match given {
                Prompt::Text(_) => "tokenizes to nothing",
                Prompt::Tokens(_) => "is an empty array of token ids",
            };
            return Err(ApiError::invalid("prompt", format!("{which} {what}")));
        }
        if prompt.len() > limits.max_prompt_tokens {
            return Err(ApiError::invalid(
                "prompt",
                format!(
                    "{which} has {} tokens, over the server's limit of {} (--max-prompt-tokens)",
                    prompt.len(),
                    limits.max_prompt_tokens
                ),
            ));
        }
        // Even `max_tokens` 0 runs the decoder for one token (then dropped).
        if prompt.len() + request.max_tokens.max(1) > model.max_positions {
            return Err(ApiError::invalid(
                "max_tokens",
                format!(
                    "{which} ({} tokens) plus max_tokens {} exceeds the model's {} positions; \
                     give max_tokens <= {}",
                    prompt.len(),
                    request.max_tokens,
                    model.max_positions,
                    model.max_positions.saturating_sub(prompt.len())
                ),
            ));
        }
        out.push(SequenceParams {
            prompt,
            slots: slots.clone(),
            // `max_tokens` 0 (echo only): the decoder's one token is dropped by the handler.
            max_new_tokens: request.max_tokens.max(1),
            temperature: request.temperature,
            top_p: request.top_p,
            seed: request.seed,
            // `flix generate` gives its i-th prompt stream i: a request reproduces it exactly.
            stream: index as u64,
            eos_token_ids: vec![model.eos],
            logprobs: request.logprobs,
            prompt_logprobs: request.echo && request.logprobs.is_some(),
        });
    }
    Ok(out)
}

/// `finish_reason` of a choice; `None` (JSON null) for one cut short by a shutdown.
pub type FinishReason = Option<&'static str>;

#[derive(Debug, Serialize)]
pub struct Choice {
    pub text: String,
    pub index: usize,
    /// Null unless the request asked for `logprobs`.
    pub logprobs: Option<Logprobs>,
    pub finish_reason: FinishReason,
}

/// OpenAI's `logprobs` object of a choice (or of a streamed chunk): per token, its text, its
/// log-probability, the most likely tokens' (with the token's own: up to `logprobs` + 1 entries),
/// and where its text starts in the choice's text, in characters.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Logprobs {
    pub tokens: Vec<String>,
    /// Null for an echoed prompt's first token, which nothing predicts.
    pub token_logprobs: Vec<Option<f32>>,
    pub top_logprobs: Vec<Option<BTreeMap<String, f32>>>,
    pub text_offset: Vec<usize>,
}

impl Logprobs {
    pub fn new(entries: &[TokenEntry]) -> Self {
        let mut out = Self::default();
        for entry in entries {
            out.tokens.push(entry.text.clone());
            out.token_logprobs.push(entry.logprob);
            let top = entry.logprob.map(|own| {
                let mut top = BTreeMap::new();
                // Most likely first; a text two tokens share keeps the likelier one.
                for (text, logprob) in entry.top.iter().chain([&(entry.text.clone(), own)]) {
                    top.entry(text.clone()).or_insert(*logprob);
                }
                top
            });
            out.top_logprobs.push(top);
            out.text_offset.push(entry.char_offset);
        }
        out
    }
}

#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct Usage {
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub total_tokens: usize,
}

impl Usage {
    pub fn new(prompt_tokens: usize, completion_tokens: usize) -> Self {
        Self {
            prompt_tokens,
            completion_tokens,
            total_tokens: prompt_tokens + completion_tokens,
        }
    }
}

/// A whole response, or (streaming) one chunk of it.
#[derive(Debug, Serialize)]
pub struct Completion {
    pub id: String,
    pub object: &'static str,
    pub created: u64,
    pub model: String,
    pub choices: Vec<Choice>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub warnings: Option<Vec<String>>,
}
