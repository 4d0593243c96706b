//! `flix bench-serve`: a closed-loop load generator for the completions server (`flix serve`).
//!
//! It either starts the server itself (`--run RUN`: the `flix serve` of this very binary, on a
//! free port) or talks to one already running (`--url`). For every concurrency level N it runs N
//! clients, each sending its next request as soon as the previous one is answered, until the
//! level's requests are used up (`--requests-per-level`) or its time is over (`--duration-secs`).
//! Every level runs in each mode:
//! - `mixed`: each request draws one value of every feature type the server lists in
//!   `/v1/models`, with a seeded generator, so concurrent requests need different adapters;
//! - `single`: every request has the same combination (`--single-features`, by default the first
//!   value of every type);
//! - `base` (not run by default): requests with no feature, which the adapters leave untouched.
//!
//! Request i of a mode is a pure function of (`--seed`, mode, i): every level sends the same
//! requests, and `--dump-requests` writes them for the transformers + PEFT peer
//! (`benches/peers/serve_peer.py`) to replay. Generation is greedy with a fixed `--max-tokens`;
//! a request may stop earlier at the end-of-sequence token, so tokens are counted as the server's
//! `usage.completion_tokens` reports them (the end-of-sequence token included; with `--stream`,
//! from the usage chunk that `stream_options.include_usage` asks for, else as the chunks of text
//! received).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use clap::{Args, ValueEnum};
use flix_core::{splitmix64, write_atomic};
use flix_model::export::{parse_combination, Combination};
use serde::Serialize;
use serde_json::{json, Value};

#[derive(Args, Debug)]
pub struct BenchServeArgs {
    /// A running server's base URL, e.g. http://127.0.0.1:8080.
    #[arg(long, conflicts_with_all = ["run", "base", "serve_arg"], required_unless_present = "run")]
    url: Option<String>,
    /// Start `flix serve RUN` (this binary, on a free port) and benchmark it.
    #[arg(long)]
    run: Option<PathBuf>,
    /// The run's base model, passed to `flix serve BASE RUN` (which checks that it is the base
    /// the run was trained on).
    #[arg(long)]
    base: Option<PathBuf>,
    /// Where the started server runs: cpu, cuda or cuda:N.
    #[arg(long, default_value = "cpu")]
    device: String,
    /// One more argument for the started `flix serve` (repeatable), e.g.
    /// `--serve-arg=--max-concurrent --serve-arg=64`.
    #[arg(long, allow_hyphen_values = true)]
    serve_arg: Vec<String>,
    /// Concurrency levels: the number of clients, each with one request in flight.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8,16,32,64")]
    concurrency: Vec<usize>,
    /// Requests per level and mode.
    #[arg(long, default_value_t = 64)]
    requests_per_level: usize,
    /// Instead of a number of requests: keep every level going this long (requests in flight at
    /// the end are still awaited and counted).
    #[arg(long)]
    duration_secs: Option<f64>,
    /// Modes, in order: mixed (a drawn combination per request), single (one fixed combination),
    /// base (no feature).
    #[arg(long, value_delimiter = ',', default_value = "mixed,single")]
    modes: Vec<Mode>,
    /// The combination of the single mode, e.g. `lang=deu,task=pos`; default: the first value of
    /// every type the server lists.
    #[arg(long)]
    single_features: Option<String>,
    /// Prompts: the `input` field of every line of this JSONL file, sent as raw text. Default: a
    /// built-in list of short multilingual prompts.
    #[arg(long)]
    data: Option<PathBuf>,
    /// Tokens to generate per request (greedy; a request may stop earlier at end-of-sequence).
    #[arg(long, default_value_t = 32)]
    max_tokens: usize,
    /// Stream the completions (server-sent events) and measure the time to the first token.
    #[arg(long)]
    stream: bool,
    /// Seeds the draws of prompts and combinations.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Untimed requests, one at a time, before each mode's first level.
    #[arg(long, default_value_t = 2)]
    warmup: usize,
    /// Give up on one request after this many seconds (counted as an error).
    #[arg(long, default_value_t = 600.0)]
    request_timeout_secs: f64,
    /// Write the report as JSON to this file.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write the requests of each mode (`--requests-per-level` of them, as every level sends
    /// them) as JSONL, for `benches/peers/serve_peer.py` to replay.
    #[arg(long)]
    dump_requests: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    Mixed,
    Single,
    Base,
}

impl Mode {
    fn name(self) -> &'static str {
        match self {
            Mode::Mixed => "mixed",
            Mode::Single => "single",
            Mode::Base => "base",
        }
    }

    /// Keeps the draws of different modes independent (the prompts are shared, see `Plan`).
    fn stream_id(self) -> u64 {
        match self {
            Mode::Mixed => 1,
            Mode::Single => 2,
            Mode::Base => 3,
        }
    }
}

/// Short prompts in several languages and scripts, for real models with a full vocabulary.
const BUILTIN_PROMPTS: &[&str] = &[
    "The capital of France is",
    "Translate to German: The weather is nice today.",
    "Die Hauptstadt von Deutschland ist",
    "La capitale de l'Italie est",
    "El número siguiente a veintitrés es",
    "Il giorno dopo lunedì è",
    "Hoje é um bom dia para",
    "De hoofdstad van Nederland is",
    "Stolicą Polski jest",
    "Столица России —",
    "日本の首都は",
    "中国的首都是",
    "भारत की राजधानी है",
    "عاصمة مصر هي",
    "Türkiye'nin başkenti",
    "Write the number 47 in words:",
];

/// The feature types and values a server serves, as `/v1/models` lists them.
pub type FeatureValues = BTreeMap<String, Vec<String>>;

/// Reads the feature types and their values from a `/v1/models` answer: the first `features`
/// object of string arrays (`{"lang": ["deu", ...], ...}`) at the top or in a `data` entry.
pub fn feature_values(models: &Value) -> Result<FeatureValues> {
    let mut candidates = vec![models];
    if let Some(data) = models.get("data").and_then(Value::as_array) {
        candidates.extend(data);
    }
    for candidate in candidates {
        let Some(features) = candidate.get("features").and_then(Value::as_object) else {
            continue;
        };
        let mut out = FeatureValues::new();
        for (name, values) in features {
            let values = values
                .as_array()
                .and_then(|vs| vs.iter().map(|v| v.as_str().map(String::from)).collect())
                .ok_or_else(|| {
                    anyhow!("/v1/models: the values of feature type {name:?} are not strings")
                })?;
            out.insert(name.clone(), values);
        }
        return Ok(out);
    }
    bail!("/v1/models lists no `features` object (feature types and their values): {models}")
}

/// The request list: request `i` of a mode is a pure function of (seed, mode, i).
#[derive(Debug)]
pub struct Plan {
    pub prompts: Vec<String>,
    pub values: FeatureValues,
    pub single: Combination,
    pub seed: u64,
    pub max_tokens: usize,
}

/// One request as both the load generator and the peer send it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PlannedRequest {
    pub mode: Mode,
    pub index: usize,
    pub prompt: String,
    pub features: Combination,
    pub max_tokens: usize,
}

/// A uniform draw in 0..n from (seed, stream, i, k); n > 0.
fn draw(seed: u64, stream: u64, i: usize, k: u64, n: usize) -> usize {
    let h = splitmix64(splitmix64(splitmix64(seed ^ splitmix64(stream)) ^ i as u64) ^ k);
    (h % n as u64) as usize
}

impl Plan {
    pub fn request(&self, mode: Mode, i: usize) -> PlannedRequest {
        // The prompt of request i is the same in every mode: the modes differ in features only.
        let prompt = self.prompts[draw(self.seed, 0, i, 0, self.prompts.len())].clone();
        let features = match mode {
            Mode::Single => self.single.clone(),
            Mode::Base => Combination::new(),
            Mode::Mixed => self
                .values
                .iter()
                .enumerate()
                .filter(|(_, (_, values))| !values.is_empty())
                .map(|(k, (name, values))| {
                    let pick = draw(self.seed, mode.stream_id(), i, k as u64 + 1, values.len());
                    (name.clone(), values[pick].clone())
                })
                .collect(),
        };
        PlannedRequest {
            mode,
            index: i,
            prompt,
            features,
            max_tokens: self.max_tokens,
        }
    }
}

/// The `input` field of every line of a JSONL file.
fn read_prompts(path: &Path) -> Result<Vec<String>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut prompts = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let value: Value = serde_json::from_str(line)
            .with_context(|| format!("{}:{}: not JSON", path.display(), n + 1))?;
        let input = value.get("input").and_then(Value::as_str).ok_or_else(|| {
            anyhow!(
                "{}:{}: no string field `input` (the prompt)",
                path.display(),
                n + 1
            )
        })?;
        prompts.push(input.to_string());
    }
    if prompts.is_empty() {
        bail!("{} holds no prompt", path.display());
    }
    Ok(prompts)
}

/// The single mode's combination: the one given (every type and value must be served), or the
/// first value of every type.
fn single_combination(given: Option<&str>, values: &FeatureValues) -> Result<Combination> {
    let Some(text) = given else {
        return Ok(values
            .iter()
            .filter_map(|(name, vs)| Some((name.clone(), vs.first()?.clone())))
            .collect());
    };
    let combination = parse_combination(text)?;
    for (name, value) in &combination {
        match values.get(name) {
            None => bail!(
                "--single-features: the server has no feature type {name:?} (it has {:?})",
                values.keys().collect::<Vec<_>>()
            ),
            Some(vs) if !vs.contains(value) => {
                bail!("--single-features: {name}={value} is not served (values: {vs:?})")
            }
            Some(_) => {}
        }
    }
    Ok(combination)
}

/// The URL in the server's `listening on http://HOST:PORT` line.
pub fn listening_url(line: &str) -> Option<String> {
    let rest = line.trim().strip_prefix("listening on ")?;
    rest.starts_with("http://")
        .then(|| rest.trim_end_matches('/').to_string())
}

/// A `flix serve` started by the benchmark; stopped when dropped.
struct Server {
    child: Child,
    url: String,
}

impl Server {
    fn start(args: &BenchServeArgs, run: &Path) -> Result<Self> {
        let exe = std::env::current_exe().context("finding the flix binary")?;
        let mut command = Command::new(exe);
        command.arg("serve");
        if let Some(base) = &args.base {
            command.arg(base);
        }
        command
            .arg(run)
            .args(["--device", &args.device, "--port", "0"])
            .args(&args.serve_arg);
        let mut child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting flix serve")?;
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| anyhow!("flix serve has no stdout"))?;
        // The server keeps writing to stdout: a thread reads it to the end so it never blocks,
        // and hands over the URL from the first `listening on` line.
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(url) = listening_url(&line) {
                        sent = sender.send(url).is_ok();
                    }
                }
            }
        });
        // Loading a large model takes a while; a server that dies closes stdout at once.
        match receiver.recv_timeout(Duration::from_secs(600)) {
            Ok(url) => Ok(Self { child, url }),
            Err(_) => {
                let _ = child.kill();
                let status = child.wait().ok();
                bail!(
                    "flix serve {} did not print `listening on http://...` (exit status: {})",
                    run.display(),
                    status.map_or_else(|| "still running".into(), |s| s.to_string())
                )
            }
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What became of one request.
#[derive(Debug, Default)]
struct Outcome {
    latency: Duration,
    first_token: Option<Duration>,
    completion_tokens: usize,
    prompt_tokens: usize,
    /// None: answered; Some: why not.
    error: Option<String>,
    rejected: bool,
}

/// The `usage` numbers of a completion (or of a stream chunk that carries them).
fn usage(value: &Value) -> Option<(usize, usize)> {
    let usage = value.get("usage")?;
    let get = |k: &str| usage.get(k).and_then(Value::as_u64).map(|n| n as usize);
    Some((get("prompt_tokens")?, get("completion_tokens")?))
}

/// The text of a completion's (or chunk's) first choice.
fn choice_text(value: &Value) -> &str {
    value
        .pointer("/choices/0/text")
        .and_then(Value::as_str)
        .unwrap_or("")
}

/// Follows a server-sent-event stream: `data: {json}` lines up to `data: [DONE]`.
#[derive(Debug, Default)]
pub struct SseReader {
    pending: Vec<u8>,
    pub done: bool,
}

impl SseReader {
    /// Feeds received bytes; returns the JSON payloads of the complete `data:` lines.
    pub fn feed(&mut self, bytes: &[u8]) -> Result<Vec<Value>> {
        self.pending.extend_from_slice(bytes);
        let mut events = Vec::new();
        while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
            let line: Vec<u8> = self.pending.drain(..=end).collect();
            let line = String::from_utf8_lossy(&line);
            let Some(data) = line.trim_end().strip_prefix("data:") else {
                continue; // blank separators, comments, `event:` lines
            };
            let data = data.trim();
            if data == "[DONE]" {
                self.done = true;
            } else if !self.done {
                events.push(
                    serde_json::from_str(data)
                        .with_context(|| format!("a stream event is not JSON: {data}"))?,
                );
            }
        }
        Ok(events)
    }
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    request: &PlannedRequest,
    stream: bool,
) -> Outcome {
    let start = Instant::now();
    let mut outcome = Outcome::default();
    let result = send_inner(client, url, request, stream, start, &mut outcome).await;
    outcome.latency = start.elapsed();
    if let Err(e) = result {
        outcome.error = Some(format!("{e:#}"));
    }
    outcome
}

async fn send_inner(
    client: &reqwest::Client,
    url: &str,
    request: &PlannedRequest,
    stream: bool,
    start: Instant,
    outcome: &mut Outcome,
) -> Result<()> {
    let mut body = json!({
        "prompt": request.prompt,
        "max_tokens": request.max_tokens,
        "temperature": 0.0,
        "features": request.features,
        "stream": stream,
    });
    if stream {
        // OpenAI's way to get `usage` in a stream: one more chunk before `[DONE]`.
        body["stream_options"] = json!({"include_usage": true});
    }
    let mut response = client.post(url).json(&body).send().await?;
    let status = response.status();
    if !status.is_success() {
        outcome.rejected = status.as_u16() == 429 || status.as_u16() == 503;
        let text = response.text().await.unwrap_or_default();
        bail!("HTTP {status}: {}", text.trim());
    }
    if !stream {
        let value: Value = response.json().await?;
        let (prompt, completion) =
            usage(&value).ok_or_else(|| anyhow!("the answer has no usage: {value}"))?;
        outcome.prompt_tokens = prompt;
        outcome.completion_tokens = completion;
        return Ok(());
    }
    let mut reader = SseReader::default();
    let mut chunks_with_text = 0;
    let mut reported = None;
    while let Some(bytes) = response.chunk().await? {
        for event in reader.feed(&bytes)? {
            if !choice_text(&event).is_empty() {
                chunks_with_text += 1;
                outcome.first_token.get_or_insert_with(|| start.elapsed());
            }
            if let Some(u) = usage(&event) {
                reported = Some(u);
            }
        }
    }
    if !reader.done {
        bail!("the stream ended without `data: [DONE]`");
    }
    (outcome.prompt_tokens, outcome.completion_tokens) = reported.unwrap_or((0, chunks_with_text));
    Ok(())
}

/// The nearest-rank percentile `p` (0..=100) of sorted values; None when empty.
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

/// Percentiles of a set of durations, in milliseconds.
#[derive(Debug, Serialize, PartialEq)]
pub struct Millis {
    pub p50: f64,
    pub p99: f64,
    pub mean: f64,
}

impl Millis {
    fn of(durations: impl Iterator<Item = Duration>) -> Option<Self> {
        let mut ms: Vec<f64> = durations.map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        Some(Self {
            p50: percentile(&ms, 50.0)?,
            p99: percentile(&ms, 99.0)?,
            mean: ms.iter().sum::<f64>() / ms.len() as f64,
        })
    }
}

/// One (mode, concurrency) cell of the report.
#[derive(Debug, Serialize)]
pub struct LevelReport {
    pub mode: Mode,
    pub concurrency: usize,
    /// Requests sent, answered or not.
    pub requests: usize,
    pub errors: usize,
    /// Of the errors: refused with 429 or 503 (server full).
    pub rejected: usize,
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    pub wall_s: f64,
    /// Completion tokens of the answered requests / wall time of the level.
    pub tokens_per_s: f64,
    /// Answered requests / wall time.
    pub requests_per_s: f64,
    /// Of the answered requests.
    pub latency_ms: Option<Millis>,
    /// With --stream: the time to the first chunk of text.
    pub time_to_first_token_ms: Option<Millis>,
    pub first_error: Option<String>,
}

fn summarize(mode: Mode, concurrency: usize, outcomes: &[Outcome], wall: Duration) -> LevelReport {
    let ok: Vec<&Outcome> = outcomes.iter().filter(|o| o.error.is_none()).collect();
    let wall_s = wall.as_secs_f64();
    let completion_tokens = ok.iter().map(|o| o.completion_tokens).sum();
    let per_s = |n: usize| if wall_s > 0.0 { n as f64 / wall_s } else { 0.0 };
    LevelReport {
        mode,
        concurrency,
        requests: outcomes.len(),
        errors: outcomes.len() - ok.len(),
        rejected: outcomes.iter().filter(|o| o.rejected).count(),
        prompt_tokens: ok.iter().map(|o| o.prompt_tokens).sum(),
        completion_tokens,
        wall_s,
        tokens_per_s: per_s(completion_tokens),
        requests_per_s: per_s(ok.len()),
        latency_ms: Millis::of(ok.iter().map(|o| o.latency)),
        time_to_first_token_ms: Millis::of(ok.iter().filter_map(|o| o.first_token)),
        first_error: outcomes.iter().find_map(|o| o.error.clone()),
    }
}

/// How long one level lasts.
#[derive(Clone, Copy, Debug)]
enum Budget {
    Requests(usize),
    Time(Duration),
}

struct Shared {
    client: reqwest::Client,
    url: String,
    plan: Plan,
    stream: bool,
}

/// N clients in a closed loop over the mode's requests 0, 1, 2, ...
async fn run_level(
    shared: &Arc<Shared>,
    mode: Mode,
    clients: usize,
    budget: Budget,
) -> LevelReport {
    let next = Arc::new(AtomicUsize::new(0));
    let start = Instant::now();
    let tasks: Vec<_> = (0..clients)
        .map(|_| {
            let (shared, next) = (shared.clone(), next.clone());
            tokio::spawn(async move {
                let mut outcomes = Vec::new();
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let more = match budget {
                        Budget::Requests(n) => i < n,
                        Budget::Time(d) => start.elapsed() < d,
                    };
                    if !more {
                        break;
                    }
                    let request = shared.plan.request(mode, i);
                    outcomes.push(send(&shared.client, &shared.url, &request, shared.stream).await);
                }
                outcomes
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        match task.await {
            Ok(mut o) => outcomes.append(&mut o),
            Err(e) => outcomes.push(Outcome {
                error: Some(format!("client task failed: {e}")),
                ..Outcome::default()
            }),
        }
    }
    summarize(mode, clients, &outcomes, start.elapsed())
}

fn print_table(levels: &[LevelReport]) {
    let ms = |m: &Option<Millis>, f: fn(&Millis) -> f64| {
        m.as_ref()
            .map_or_else(|| "-".to_string(), |m| format!("{:.1}", f(m)))
    };
    println!(
        "{:<7} {:>7} {:>8} {:>6} {:>10} {:>8} {:>10} {:>10} {:>10} {:>10}",
        "mode",
        "clients",
        "requests",
        "errors",
        "tokens/s",
        "req/s",
        "p50 ms",
        "p99 ms",
        "ttft p50",
        "ttft p99"
    );
    for l in levels {
        println!(
            "{:<7} {:>7} {:>8} {:>6} {:>10.1} {:>8.2} {:>10} {:>10} {:>10} {:>10}",
            l.mode.name(),
            l.concurrency,
            l.requests,
            l.errors,
            l.tokens_per_s,
            l.requests_per_s,
            ms(&l.latency_ms, |m| m.p50),
            ms(&l.latency_ms, |m| m.p99),
            ms(&l.time_to_first_token_ms, |m| m.p50),
            ms(&l.time_to_first_token_ms, |m| m.p99),
        );
    }
}

/// Writes every mode's first `count` requests as JSONL.
fn dump_requests(path: &Path, plan: &Plan, modes: &[Mode], count: usize) -> Result<()> {
    let mut text = Vec::new();
    for &mode in modes {
        for i in 0..count {
            serde_json::to_writer(&mut text, &plan.request(mode, i))?;
            writeln!(text)?;
        }
    }
    write_atomic(path, &text)?;
    Ok(())
}

impl BenchServeArgs {
    fn validate(&self) -> Result<Budget> {
        if self.concurrency.is_empty() || self.concurrency.contains(&0) {
            bail!("--concurrency needs levels >= 1, e.g. 1,2,4,8");
        }
        if self.modes.is_empty() {
            bail!("--modes needs at least one of mixed, single, base");
        }
        if self.max_tokens == 0 {
            bail!("--max-tokens must be >= 1");
        }
        if !(self.request_timeout_secs > 0.0 && self.request_timeout_secs.is_finite()) {
            bail!("--request-timeout-secs must be a positive number of seconds");
        }
        match self.duration_secs {
            Some(d) if d > 0.0 && d.is_finite() => Ok(Budget::Time(Duration::from_secs_f64(d))),
            Some(d) => bail!("--duration-secs must be a positive number of seconds, found {d}"),
            None if self.requests_per_level == 0 => bail!("--requests-per-level must be >= 1"),
            None => Ok(Budget::Requests(self.requests_per_level)),
        }
    }
}

pub fn run(args: BenchServeArgs) -> Result<()> {
    let budget = args.validate()?;
    let prompts = match &args.data {
        Some(path) => read_prompts(path)?,
        None => BUILTIN_PROMPTS.iter().map(|s| s.to_string()).collect(),
    };
    let server = match &args.run {
        Some(run) => Some(Server::start(&args, run)?),
        None => None,
    };
    let base_url = match (&server, &args.url) {
        (Some(s), _) => s.url.clone(),
        (None, Some(url)) => url.trim_end_matches('/').to_string(),
        (None, None) => bail!("give --run RUN (start a server) or --url URL (a running one)"),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let max_clients = args.concurrency.iter().copied().max().unwrap_or(1);
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(max_clients)
        .timeout(Duration::from_secs_f64(args.request_timeout_secs))
        .build()?;
    let models: Value = runtime.block_on(async {
        let response = client.get(format!("{base_url}/v1/models")).send().await?;
        let status = response.status();
        if !status.is_success() {
            bail!("GET {base_url}/v1/models: HTTP {status}");
        }
        Ok(response.json().await?)
    })?;
    let values = feature_values(&models)?;
    let single = single_combination(args.single_features.as_deref(), &values)?;
    let plan = Plan {
        prompts,
        values,
        single,
        seed: args.seed,
        max_tokens: args.max_tokens,
    };
    if let Some(path) = &args.dump_requests {
        dump_requests(path, &plan, &args.modes, args.requests_per_level)?;
        eprintln!("wrote the requests to {}", path.display());
    }
    let shared = Arc::new(Shared {
        client,
        url: format!("{base_url}/v1/completions"),
        plan,
        stream: args.stream,
    });
    eprintln!(
        "benchmarking {base_url}: features {:?}; {} prompts; {} tokens per request{}",
        shared.plan.values,
        shared.plan.prompts.len(),
        args.max_tokens,
        if args.stream { ", streamed" } else { "" }
    );
    let mut levels = Vec::new();
    runtime.block_on(async {
        for &mode in &args.modes {
            // Warm-up requests use indices past the measured ones' start, from the end of u32.
            for w in 0..args.warmup {
                let request = shared.plan.request(mode, u32::MAX as usize - w);
                let outcome = send(&shared.client, &shared.url, &request, shared.stream).await;
                if let Some(error) = outcome.error {
                    eprintln!("warning: a {} warm-up request failed: {error}", mode.name());
                }
            }
            for &clients in &args.concurrency {
                let level = run_level(&shared, mode, clients, budget).await;
                eprintln!(
                    "{} x{}: {} requests, {} errors, {:.1} tokens/s",
                    mode.name(),
                    clients,
                    level.requests,
                    level.errors,
                    level.tokens_per_s
                );
                levels.push(level);
            }
        }
    });
    drop(server);
    print_table(&levels);
    if let Some(error) = levels.iter().find_map(|l| l.first_error.as_ref()) {
        eprintln!("first error: {error}");
    }
    if let Some(path) = &args.out {
        let report = json!({
            "url": base_url,
            "run": args.run,
            "device": args.run.as_ref().map(|_| &args.device),
            "max_tokens": args.max_tokens,
            "stream": args.stream,
            "seed": args.seed,
            "prompts": shared.plan.prompts.len(),
            "features": shared.plan.values,
            "single_features": shared.plan.single,
            "budget": match budget {
                Budget::Requests(n) => json!({"requests_per_level": n}),
                Budget::Time(d) => json!({"duration_secs": d.as_secs_f64()}),
            },
            "levels": levels,
        });
        write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan() -> Plan {
        let values = FeatureValues::from([
            (
                "lang".to_string(),
                vec!["deu".into(), "eng".into(), "fra".into()],
            ),
            ("task".to_string(), vec!["pos".into(), "ner".into()]),
        ]);
        Plan {
            prompts: vec!["a".into(), "b".into(), "c".into(), "d".into()],
            single: single_combination(None, &values).unwrap(),
            values,
            seed: 7,
            max_tokens: 5,
        }
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&v, 50.0), Some(50.0));
        assert_eq!(percentile(&v, 99.0), Some(99.0));
        assert_eq!(percentile(&v, 100.0), Some(100.0));
        assert_eq!(percentile(&[3.0], 99.0), Some(3.0));
        assert_eq!(percentile(&[1.0, 2.0], 50.0), Some(1.0));
        assert_eq!(percentile(&[1.0, 2.0], 99.0), Some(2.0));
        assert_eq!(percentile(&[], 50.0), None);
    }

    #[test]
    fn requests_are_reproducible_and_share_prompts_across_modes() {
        let (a, b) = (plan(), plan());
        for i in 0..50 {
            assert_eq!(a.request(Mode::Mixed, i), b.request(Mode::Mixed, i));
            let (mixed, single) = (a.request(Mode::Mixed, i), a.request(Mode::Single, i));
            assert_eq!(mixed.prompt, single.prompt);
            assert_eq!(single.features, a.single);
            assert!(a.request(Mode::Base, i).features.is_empty());
        }
        let other_seed = Plan { seed: 8, ..plan() };
        assert!((0..50).any(|i| other_seed.request(Mode::Mixed, i) != a.request(Mode::Mixed, i)));
    }

    #[test]
    fn mixed_requests_cover_every_combination_about_evenly() {
        let plan = plan();
        let mut counts = BTreeMap::<Vec<String>, usize>::new();
        let n = 6000;
        for i in 0..n {
            let r = plan.request(Mode::Mixed, i);
            assert_eq!(r.features.len(), 2, "{:?}", r.features);
            for (name, value) in &r.features {
                assert!(plan.values[name].contains(value));
            }
            *counts
                .entry(r.features.into_values().collect())
                .or_default() += 1;
        }
        // 6 combinations, 1000 expected each; a binomial sd is about 29.
        assert_eq!(counts.len(), 6);
        for (combo, c) in counts {
            assert!((850..1150).contains(&c), "{combo:?} drawn {c} times");
        }
    }

    #[test]
    fn single_features_are_checked_against_the_server() {
        let values = plan().values;
        let first = single_combination(None, &values).unwrap();
        assert_eq!(first["lang"], "deu");
        assert_eq!(first["task"], "pos");
        let given = single_combination(Some("lang=fra,task=ner"), &values).unwrap();
        assert_eq!(given["lang"], "fra");
        let err = single_combination(Some("lang=xx"), &values).unwrap_err();
        assert!(err.to_string().contains("lang=xx"), "{err}");
        let err = single_combination(Some("script=latn"), &values).unwrap_err();
        assert!(err.to_string().contains("\"script\""), "{err}");
    }

    #[test]
    fn feature_values_are_read_from_models() {
        let top = json!({"features": {"lang": ["deu", "eng"], "task": ["pos"]}});
        let nested = json!({"object": "list", "data": [{"id": "run", "features":
            {"lang": ["deu", "eng"], "task": ["pos"]}}]});
        for models in [top, nested] {
            let v = feature_values(&models).unwrap();
            assert_eq!(v["lang"], ["deu", "eng"]);
            assert_eq!(v["task"], ["pos"]);
        }
        assert!(feature_values(&json!({"data": []})).is_err());
        assert!(feature_values(&json!({"features": {"lang": [1]}})).is_err());
    }

    #[test]
    fn sse_events_are_split_across_chunks() {
        let mut reader = SseReader::default();
        let mut events = reader.feed(b"data: {\"choices\":[{\"te").unwrap();
        assert!(events.is_empty());
        events.extend(
            reader
                .feed(b"xt\":\"a\"}]}\n\n: comment\ndata: {\"x\":1}\r\n")
                .unwrap(),
        );
        assert_eq!(events.len(), 2);
        assert_eq!(choice_text(&events[0]), "a");
        assert!(!reader.done);
        assert!(reader.feed(b"\ndata: [DONE]\n\n").unwrap().is_empty());
        assert!(reader.done);
        assert!(SseReader::default().feed(b"data: {oops\n").is_err());
    }

    #[test]
    fn listening_line_gives_the_url() {
        assert_eq!(
            listening_url("listening on http://127.0.0.1:4242\n").as_deref(),
            Some("http://127.0.0.1:4242")
        );
        assert_eq!(listening_url("loading the model"), None);
    }

    #[test]
    fn summary_counts_errors_and_tokens() {
        let ok = |ms: u64, tokens| Outcome {
            latency: Duration::from_millis(ms),
            completion_tokens: tokens,
            ..Outcome::default()
        };
        let outcomes = vec![
            ok(10, 4),
            ok(30, 6),
            ok(20, 5),
            Outcome {
                error: Some("HTTP 429".into()),
                rejected: true,
                ..Outcome::default()
            },
        ];
        let level = summarize(Mode::Mixed, 2, &outcomes, Duration::from_secs(3));
        assert_eq!((level.requests, level.errors, level.rejected), (4, 1, 1));
        assert_eq!(level.completion_tokens, 15);
        assert_eq!(level.tokens_per_s, 5.0);
        assert_eq!(level.requests_per_s, 1.0);
        let latency = level.latency_ms.unwrap();
        assert_eq!((latency.p50, latency.p99, latency.mean), (20.0, 30.0, 20.0));
        assert!(level.time_to_first_token_ms.is_none());
        assert_eq!(level.first_error.as_deref(), Some("HTTP 429"));
    }
}
