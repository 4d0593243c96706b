//! Reading examples from JSONL files: one JSON object per line with the feature fields (`"lang"`,
//! `"task"`, or any type named in the config), `"input"` and `"target"` strings, an optional
//! `"id"`; other fields are ignored. Blank lines are skipped. Anything else that is malformed is
//! an error naming file, line (1-based) and what is wrong: a bad line never becomes a silently
//! dropped example. A UTF-8 byte-order mark at the start of a file (as some Windows editors
//! write) is skipped.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::sync::Arc;

use serde::de::{self, Deserialize, Deserializer, MapAccess, Visitor};
use serde_json::error::Category;
use serde_json::{Map, Value};

use crate::error::{CoreError, Location, Result};

/// One example: where it comes from, its feature values by type name, its text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub location: Location,
    pub id: Option<String>,
    /// Feature type name → value, for the requested types the line has (`null` counts as absent).
    pub features: BTreeMap<String, String>,
    pub input: String,
    pub target: String,
}

/// The longest line [`read_jsonl`] reads, in bytes: far more than any example a model's context
/// holds (16 bytes per token of a 16-million-token context), so it only stops a file that would
/// exhaust memory before any length check could see it.
pub const MAX_LINE_BYTES: usize = 256 << 20;

/// Which `max` of `len` items a per-cell cap keeps: evenly spaced positions `i · len / max`
/// (the first item included), in order; all of them when `len <= max`. Spread over the whole
/// cell rather than its first `max`, so that a file sorted by label (as published test sets
/// often are) still gives every label about its share. Deterministic: the same data and cap
/// always give the same examples.
pub fn spread_positions(len: usize, max: usize) -> Vec<usize> {
    if len <= max {
        return (0..len).collect();
    }
    (0..max).map(|i| i * len / max).collect()
}

/// Keeps the items of `items` at [`spread_positions`]`(items.len(), max)`.
pub fn keep_spread<T>(items: &mut Vec<T>, max: usize) {
    if items.len() <= max {
        return;
    }
    let keep = spread_positions(items.len(), max);
    let mut next = keep.iter().peekable();
    let mut position = 0;
    items.retain(|_| {
        let kept = next.peek() == Some(&&position);
        if kept {
            next.next();
        }
        position += 1;
        kept
    });
}

/// Reads every example of `path`, taking `feature_names` as the feature fields. A line longer
/// than [`MAX_LINE_BYTES`] is an error naming it, read no further than that.
pub fn read_jsonl(path: &Path, feature_names: &[&str]) -> Result<Vec<Example>> {
    read_jsonl_within(path, feature_names, MAX_LINE_BYTES)
}

/// [`read_jsonl`] with lines of at most `max_line_bytes` bytes.
pub fn read_jsonl_within(
    path: &Path,
    feature_names: &[&str],
    max_line_bytes: usize,
) -> Result<Vec<Example>> {
    if path.is_dir() {
        let hint = "a directory: give its JSONL files (DIR/*.jsonl), or a mixture root with \
                    --mixture";
        let source = std::io::Error::new(std::io::ErrorKind::IsADirectory, hint);
        return Err(CoreError::io(path, source));
    }
    let file = std::fs::File::open(path).map_err(|e| CoreError::io(path, e))?;
    let file_name: Arc<Path> = Arc::from(path);
    let mut reader = BufReader::new(file);
    let mut examples = Vec::new();
    let mut bytes = Vec::new();
    for line in 1.. {
        let location = Location {
            file: file_name.clone(),
            line,
        };
        bytes.clear();
        // Room for the longest line and its "\r\n"; a longer line stops here.
        let limit = max_line_bytes.saturating_add(2) as u64;
        let read = (&mut reader)
            .take(limit)
            .read_until(b'\n', &mut bytes)
            .map_err(|e| CoreError::data(&location, format!("cannot read: {e}")))?;
        if read == 0 {
            break;
        }
        // Line ends as `BufRead::lines` takes them: "\n" or "\r\n".
        if bytes.last() == Some(&b'\n') {
            bytes.pop();
            if bytes.last() == Some(&b'\r') {
                bytes.pop();
            }
        }
        if bytes.len() > max_line_bytes {
            return Err(CoreError::data(
                &location,
                format!("the line is longer than {max_line_bytes} bytes; not read further"),
            ));
        }
        let text = std::str::from_utf8(&bytes)
            .map_err(|e| CoreError::data(&location, format!("cannot read: not UTF-8 ({e})")))?;
        let text = if line == 1 { without_bom(text) } else { text };
        if text.trim().is_empty() {
            continue;
        }
        examples.push(parse_line(text, location, feature_names)?);
    }
    Ok(examples)
}

/// `text` without the UTF-8 byte-order mark some editors put at the start of a file: JSON
/// parsers refuse it, and it carries nothing.
pub fn without_bom(text: &str) -> &str {
    text.strip_prefix('\u{feff}').unwrap_or(text)
}

/// Reads the examples of several files, in order.
pub fn read_jsonl_files<P: AsRef<Path>>(
    paths: &[P],
    feature_names: &[&str],
) -> Result<Vec<Example>> {
    let mut examples = Vec::new();
    for path in paths {
        examples.extend(read_jsonl(path.as_ref(), feature_names)?);
    }
    Ok(examples)
}

/// Parses one non-blank line found at `location`.
pub fn parse_line(line: &str, location: Location, feature_names: &[&str]) -> Result<Example> {
    let Fields(mut fields) = serde_json::from_str(line).map_err(|e| {
        // serde's message ends with "at line 1 column N"; only the column says something here.
        let message = e.to_string();
        let position = format!(" at line {} column {}", e.line(), e.column());
        let reason = message.strip_suffix(&position).unwrap_or(&message);
        let message = match e.classify() {
            Category::Data => format!("not an example: {reason}"),
            _ => format!("invalid JSON at column {}: {reason}", e.column()),
        };
        CoreError::data(&location, message)
    })?;
    let mut text_field = |name: &str| match fields.remove(name) {
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(CoreError::data(
            &location,
            format!("field {name:?} must be a string, found {}", kind(&other)),
        )),
        None => Err(CoreError::data(
            &location,
            format!("missing field {name:?}"),
        )),
    };
    let input = text_field("input")?;
    let target = text_field("target")?;
    let id = match fields.remove("id") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(other) => {
            return Err(CoreError::data(
                &location,
                format!("field \"id\" must be a string, found {}", kind(&other)),
            ))
        }
    };
    let mut features = BTreeMap::new();
    for &name in feature_names {
        match fields.get(name) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) if s.is_empty() => {
                return Err(CoreError::data(
                    &location,
                    format!("feature {name:?} has an empty value (leave the field out, or null, for absent)"),
                ))
            }
            Some(Value::String(s)) => {
                features.insert(name.to_string(), s.clone());
            }
            Some(other) => {
                return Err(CoreError::data(
                    &location,
                    format!(
                        "feature {name:?} must be a string (or null for absent), found {}",
                        kind(other)
                    ),
                ))
            }
        }
    }
    Ok(Example {
        location,
        id,
        features,
        input,
        target,
    })
}

/// The fields of one line. A field given twice is an error: serde_json alone would keep the last
/// one silently, and an example has at most one value per feature type.
struct Fields(Map<String, Value>);

impl<'de> Deserialize<'de> for Fields {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct FieldsVisitor;
        impl<'de> Visitor<'de> for FieldsVisitor {
            type Value = Fields;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields, A::Error> {
                let mut fields = Map::new();
                while let Some(key) = map.next_key::<String>()? {
                    if fields.contains_key(&key) {
                        return Err(de::Error::custom(format!("field {key:?} appears twice")));
                    }
                    let value: Value = map.next_value()?;
                    fields.insert(key, value);
                }
                Ok(Fields(fields))
            }
        }
        deserializer.deserialize_map(FieldsVisitor)
    }
}

fn kind(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => format!("the boolean {b}"),
        Value::Number(n) => format!("the number {n}"),
        Value::String(_) => "a string".into(),
        Value::Array(_) => "an array".into(),
        Value::Object(_) => "an object".into(),
    }
}

/// Whitespace-separated words of `text`: the token count `flix inspect` uses (it reads no model,
/// so it has no tokenizer).
pub fn whitespace_tokens(text: &str) -> usize {
    text.split_whitespace().count()
}
