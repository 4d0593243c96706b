//! `flix serve` as a real process on a tiny trained run: concurrent requests of mixed feature
//! combinations get exactly what `flix generate` prints for each prompt alone (batching changes no
//! answer), streaming concatenates to the same text, every bad request gets a 4xx with an
//! OpenAI-style error body, a load run loses nothing and the metrics add up, a client that goes
//! away cancels its sequence, a full queue answers 429, and SIGTERM drains and exits 0.

mod common;

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use common::{fixture, flix_ok};
use serde_json::{json, Value};

const MAX_NEW: usize = 8;

/// Prompts in the fixture's character vocabulary (as training writes them: tags, input, ` =`).
const PROMPTS: [&str; 2] = ["<lang=eng> <task=num2words> 12 =", "vingt-trois ="];

/// Feature combinations as `flix generate --features` takes them; one type absent, one value the
/// run never saw, one with nothing.
const COMBINATIONS: [&str; 5] = [
    "lang=eng,task=num2words",
    "lang=fra,task=words2num",
    "task=num2words",
    "lang=xx,task=words2num",
    "",
];

/// A tiny FLix run trained by the binary.
fn tiny_run(dir: &Path) -> PathBuf {
    let (base, train) = fixture(dir);
    let run = dir.join("run");
    let (base, train, out) = (base.display(), train.display(), run.display());
    let args = format!(
        "train --base {base} --data {train} --out {out} --steps 12 --rank 2 --lr 0.05 --warmup 0"
    );
    flix_ok(&args.split(' ').collect::<Vec<_>>());
    run
}

/// `{"lang": "eng", ...}` of a `lang=eng,...` combination.
fn features_json(combination: &str) -> Value {
    let map: serde_json::Map<String, Value> = combination
        .split(',')
        .filter(|p| !p.is_empty())
        .filter_map(|p| p.split_once('='))
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    Value::Object(map)
}

/// What `flix generate` prints for `prompts` (one line each).
fn generate(run: &Path, combination: &str, prompts: &[&str], sampling: &[&str]) -> Vec<String> {
    let mut args = vec!["generate".to_string(), run.display().to_string()];
    args.extend(["--features".into(), combination.into()]);
    args.extend(["--max-new-tokens".into(), MAX_NEW.to_string()]);
    for p in prompts {
        args.extend(["--prompt".into(), p.to_string()]);
    }
    args.extend(sampling.iter().map(|s| s.to_string()));
    let (stdout, _) = flix_ok(&args);
    stdout.lines().map(String::from).collect()
}

/// A running `flix serve`; killed when dropped, so a failing test leaves no process behind.
struct Server {
    child: Child,
    url: String,
    _stdout: BufReader<ChildStdout>,
}

impl Server {
    /// `flix serve PATHS... --port 0 OPTIONS...`; PATHS is `[RUN]` or `[BASE, RUN]`.
    fn start(paths: &[&Path], options: &[&str]) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_flix"))
            .arg("serve")
            .args(paths)
            .args(["--port", "0"])
            .args(options)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let url = match line.trim().strip_prefix("listening on ") {
            Some(url) => url.to_string(),
            None => {
                let _ = child.kill();
                panic!("unexpected first line {line:?}");
            }
        };
        Server {
            child,
            url,
            _stdout: stdout,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// POSTs a completion request; (status, body).
async fn complete(client: &reqwest::Client, server: &Server, body: &Value) -> (u16, Value) {
    let response = client
        .post(server.url("/v1/completions"))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The text of choice 0 of a 200 answer.
fn text0(body: &Value) -> String {
    body["choices"][0]["text"].as_str().unwrap().to_string()
}

/// A streamed request's `data:` payloads, in order.
async fn stream(client: &reqwest::Client, server: &Server, body: &Value) -> Vec<String> {
    let response = client
        .post(server.url("/v1/completions"))
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    text.split("\n\n")
        .filter(|e| !e.trim().is_empty())
        .map(|e| e.strip_prefix("data: ").unwrap_or(e).to_string())
        .collect()
}

/// The value of a metric series (a line `NAME VALUE`), 0 when absent.
async fn metric(client: &reqwest::Client, server: &Server, series: &str) -> f64 {
    let text = client
        .get(server.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .map_or(0.0, |v| v.parse().unwrap())
}

/// A limit of zero is refused by name before anything is loaded.
#[test]
fn zero_limits_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    for limit in [
        "--max-concurrent",
        "--max-queue",
        "--max-prompts",
        "--max-prompt-tokens",
        "--max-tokens",
    ] {
        let out = common::flix(&[
            OsStr::new("serve"),
            tmp.path().as_os_str(),
            limit.as_ref(),
            "0".as_ref(),
        ]);
        let (_, stderr) = common::text(&out);
        assert!(
            !out.status.success() && stderr.contains(&format!("{limit} must be >= 1")),
            "{limit} 0: {stderr}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_end_to_end() {
    let tmp = tempfile::tempdir().unwrap();
    let run = tiny_run(tmp.path());
    let server = Server::start(
        &[&run],
        &[
            "--max-concurrent",
            "8",
            "--max-queue",
            "64",
            "--max-prompt-tokens",
            "64",
            "--max-tokens",
            "250",
        ],
    );
    let client = reqwest::Client::new();

    // A BASE that is not the run's own is refused before anything is served.
    let out = common::flix(&[OsStr::new("serve"), run.as_os_str(), run.as_os_str()]);
    let (_, stderr) = common::text(&out);
    assert!(
        !out.status.success() && stderr.contains("was trained on"),
        "{stderr}"
    );

    concurrent_requests_match_generate(&client, &server, &run).await;
    token_id_prompts_match_text_prompts(&client, &server, &tmp.path().join("base")).await;
    streaming_concatenates_to_the_whole_text(&client, &server).await;
    logprobs_whole_and_streamed(&client, &server).await;
    features_in_the_model_name(&client, &server).await;
    echo_scores_the_prompt_as_generation_scored_it(&client, &server, &tmp.path().join("base"))
        .await;
    stop_strings_cut_the_text(&client, &server).await;
    bad_requests_get_openai_errors(&client, &server).await;
    models_and_health(&client, &server).await;
    load_run_loses_nothing(&client, &server).await;
    let long = long_request(&client, &server).await;
    a_dropped_client_cancels_its_sequence(&client, &server, &long, true).await;
    a_dropped_client_cancels_its_sequence(&client, &server, &long, false).await;
    drop(server);
    a_full_queue_refuses_with_429(&client, &run, &long).await;
    sigterm_drains_and_exits(&client, &run, &long).await;
}

/// 32 clients at once, mixed combinations, greedy: each gets what `flix generate` prints for its
/// prompt alone. Sampled requests (one prompt, and two in one request) equal `--seed` runs.
async fn concurrent_requests_match_generate(client: &reqwest::Client, server: &Server, run: &Path) {
    let mut want = BTreeMap::new();
    for combination in COMBINATIONS {
        let lines = generate(run, combination, &PROMPTS, &[]);
        assert_eq!(lines.len(), PROMPTS.len(), "{combination}: {lines:?}");
        for (prompt, line) in PROMPTS.iter().zip(lines) {
            want.insert((combination, *prompt), line);
        }
    }
    assert!(
        want.values().any(|t| !t.is_empty()),
        "every continuation is empty: {want:?}"
    );
    let mut tasks = Vec::new();
    for i in 0..32 {
        let combination = COMBINATIONS[i % COMBINATIONS.len()];
        let prompt = PROMPTS[(i / COMBINATIONS.len()) % PROMPTS.len()];
        let body = json!({
            "model": "anything", "prompt": prompt, "max_tokens": MAX_NEW,
            "features": features_json(combination),
        });
        let (client, url) = (client.clone(), server.url("/v1/completions"));
        tasks.push(tokio::spawn(async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            (
                combination,
                prompt,
                status,
                response.json::<Value>().await.unwrap(),
            )
        }));
    }
    for task in tasks {
        let (combination, prompt, status, body) = task.await.unwrap();
        assert_eq!(status, 200, "{body}");
        assert_eq!(
            text0(&body),
            want[&(combination, prompt)],
            "{combination} {prompt:?}"
        );
        assert_eq!(body["object"], "text_completion");
        assert_eq!(body["choices"][0]["index"], 0);
        assert!(body["choices"][0]["logprobs"].is_null());
        let reason = body["choices"][0]["finish_reason"].as_str().unwrap();
        let generated = body["usage"]["completion_tokens"].as_u64().unwrap() as usize;
        // "length" means every one of max_tokens was generated; "stop" ends at the EOS token.
        assert!(
            (reason == "length" && generated == MAX_NEW)
                || (reason == "stop" && generated <= MAX_NEW),
            "{body}"
        );
        let usage = &body["usage"];
        assert_eq!(
            usage["total_tokens"].as_u64(),
            Some(usage["prompt_tokens"].as_u64().unwrap() + generated as u64)
        );
        let warnings = body["warnings"].as_array().unwrap();
        if combination.contains("lang=xx") {
            let w = warnings[0].as_str().unwrap();
            assert!(w.contains("lang=xx") && w.contains("absent"), "{w}");
        } else {
            assert!(warnings.is_empty(), "{body}");
        }
    }

    // Sampled: one prompt (stream 0), and both prompts in one request (streams 0 and 1).
    let sampling = ["--temperature", "0.9", "--seed", "7"];
    let combination = COMBINATIONS[1];
    let want_one = generate(run, combination, &PROMPTS[1..], &sampling);
    let want_both = generate(run, combination, &PROMPTS, &sampling);
    let sampled = |prompt: Value| {
        json!({"prompt": prompt, "max_tokens": MAX_NEW, "temperature": 0.9, "seed": 7,
               "features": features_json(combination)})
    };
    let (status, body) = complete(client, server, &sampled(json!(PROMPTS[1]))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(vec![text0(&body)], want_one);
    let (status, body) = complete(client, server, &sampled(json!(PROMPTS))).await;
    assert_eq!(status, 200, "{body}");
    let texts: Vec<&str> = body["choices"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["text"].as_str().unwrap())
        .collect();
    assert_eq!(texts, want_both);
}

/// A prompt given as the token ids the server's tokenizer makes of a text gets the text's answer,
/// alone and as an array of token-id arrays; ids outside the vocabulary, empty id arrays and mixed
/// forms are refused naming `prompt`.
async fn token_id_prompts_match_text_prompts(
    client: &reqwest::Client,
    server: &Server,
    base: &Path,
) {
    let tokenizer = flix_model::Tokenizer::load(base).unwrap();
    let ids: Vec<Vec<u32>> = PROMPTS
        .iter()
        .map(|p| tokenizer.encode_prompt(p).unwrap())
        .collect();
    let features = features_json(COMBINATIONS[0]);
    let body =
        |prompt: Value| json!({"prompt": prompt, "max_tokens": MAX_NEW, "features": features});
    let (status, by_text) = complete(client, server, &body(json!(PROMPTS))).await;
    assert_eq!(status, 200, "{by_text}");
    let (status, by_ids) = complete(client, server, &body(json!(ids))).await;
    assert_eq!(status, 200, "{by_ids}");
    assert_eq!(by_ids["choices"], by_text["choices"]);
    assert_eq!(by_ids["usage"], by_text["usage"]);
    let (status, one) = complete(client, server, &body(json!(ids[1]))).await;
    assert_eq!(status, 200, "{one}");
    let mut want = by_text["choices"][1].clone();
    want["index"] = json!(0);
    assert_eq!(one["choices"][0], want);

    let vocab = tokenizer.vocab_size() as u64;
    for (prompt, says) in [
        (json!([1, vocab]), "outside the model's vocabulary"),
        (json!([[1, 2], [3, vocab + 7]]), "prompt 1: token id"),
        (
            json!([[1, 2], []]),
            "prompt 1 is an empty array of token ids",
        ),
        (json!([1, -2]), "token ids must be integers"),
        (json!([1, 4294967296u64]), "token ids must be integers"),
        (json!([1, "a"]), "token ids must be integers"),
        (json!([[1], 2]), "token-id arrays"),
        (json!(["a", [1]]), "token-id arrays"),
        (json!([[1], "a"]), "token-id arrays"),
        (json!([true]), "token-id arrays"),
    ] {
        let (status, answer) = complete(client, server, &body(prompt.clone())).await;
        assert_eq!(status, 400, "{prompt}: {answer}");
        assert_eq!(answer["error"]["param"], "prompt", "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{prompt}: {message}");
    }
}

/// `logprobs`: one entry per token of the text, whose texts rebuild it at their offsets; greedy
/// tokens are their step's most likely; at most k + 1 alternatives; the streamed chunks' entries
/// concatenate to the whole answer's; a stop string drops the entries inside it.
async fn logprobs_whole_and_streamed(client: &reqwest::Client, server: &Server) {
    let k = 3;
    let mut body = json!({"prompt": PROMPTS[0], "max_tokens": MAX_NEW, "logprobs": k,
                          "features": features_json(COMBINATIONS[0])});
    let (status, whole) = complete(client, server, &body).await;
    assert_eq!(status, 200, "{whole}");
    let text = text0(&whole);
    let logprobs = &whole["choices"][0]["logprobs"];
    let strings = |v: &Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_str().unwrap().to_string())
            .collect()
    };
    let tokens = strings(&logprobs["tokens"]);
    assert!(!tokens.is_empty(), "{whole}");
    assert_eq!(tokens.concat(), text, "{whole}");
    let offsets: Vec<u64> = logprobs["text_offset"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o.as_u64().unwrap())
        .collect();
    let mut at = 0;
    for (i, token) in tokens.iter().enumerate() {
        assert_eq!(offsets[i], at, "{whole}");
        at += token.chars().count() as u64;
        let chosen = logprobs["token_logprobs"][i].as_f64().unwrap();
        let top = logprobs["top_logprobs"][i].as_object().unwrap();
        assert!(!top.is_empty() && top.len() <= k + 1, "{whole}");
        let best = top
            .values()
            .map(|v| v.as_f64().unwrap())
            .fold(f64::MIN, f64::max);
        assert!(
            chosen <= 0.0 && (chosen - best).abs() < 1e-6,
            "greedy: {whole}"
        );
        assert_eq!(top[token.as_str()].as_f64(), Some(chosen), "{whole}");
    }

    body["stream"] = json!(true);
    let events = stream(client, server, &body).await;
    let mut streamed = json!({"tokens": [], "token_logprobs": [], "top_logprobs": [],
                              "text_offset": []});
    for event in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(event).unwrap();
        for field in ["tokens", "token_logprobs", "top_logprobs", "text_offset"] {
            let items = chunk["choices"][0]["logprobs"][field]
                .as_array()
                .unwrap()
                .clone();
            streamed[field].as_array_mut().unwrap().extend(items);
        }
    }
    assert_eq!(&streamed, logprobs);

    // Not asked for: null. A stop string at the text's first character leaves no entry.
    body["stream"] = json!(false);
    body["logprobs"] = Value::Null;
    let (_, plain) = complete(client, server, &body).await;
    assert!(plain["choices"][0]["logprobs"].is_null(), "{plain}");
    assert_eq!(text0(&plain), text);
    let first = text.chars().next().unwrap().to_string();
    body["logprobs"] = json!(0);
    body["stop"] = json!([first]);
    let (_, stopped) = complete(client, server, &body).await;
    assert_eq!(text0(&stopped), "", "{stopped}");
    assert_eq!(
        stopped["choices"][0]["logprobs"]["tokens"],
        json!([]),
        "{stopped}"
    );
}

/// `model: "NAME@type=value,..."` selects the same combination as `features` (for clients that
/// cannot add fields); given both ways, or malformed, it is refused naming the field.
async fn features_in_the_model_name(client: &reqwest::Client, server: &Server) {
    for combination in &COMBINATIONS[..4] {
        let by_field = json!({"prompt": PROMPTS[0], "max_tokens": MAX_NEW,
                              "features": features_json(combination)});
        let by_name = json!({"prompt": PROMPTS[0], "max_tokens": MAX_NEW,
                             "model": format!("anything@{combination}")});
        let (_, want) = complete(client, server, &by_field).await;
        let (status, got) = complete(client, server, &by_name).await;
        assert_eq!(status, 200, "{got}");
        assert_eq!(got["choices"], want["choices"], "{combination}");
        assert_eq!(got["warnings"], want["warnings"], "{combination}");
    }
    for (body, param, says) in [
        (
            json!({"prompt": "1 =", "model": "m@lang=eng", "features": {"lang": "eng"}}),
            "features",
            "given twice",
        ),
        (
            json!({"prompt": "1 =", "model": "m@lang"}),
            "model",
            "type=value",
        ),
        (
            json!({"prompt": "1 =", "model": "m@colour=red"}),
            "model",
            "unknown feature type",
        ),
    ] {
        let (status, answer) = complete(client, server, &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        assert_eq!(answer["error"]["param"], param, "{answer}");
        assert!(
            answer["error"]["message"].as_str().unwrap().contains(says),
            "{answer}"
        );
    }
}

/// `echo`: the prompt's tokens, given as ids with the greedy completion appended, are scored with
/// the log-probabilities generation gave those tokens; `max_tokens` 0 returns the prompt alone
/// (no completion token), and a streamed echo concatenates to the same text and entries.
async fn echo_scores_the_prompt_as_generation_scored_it(
    client: &reqwest::Client,
    server: &Server,
    base: &Path,
) {
    let tokenizer = flix_model::Tokenizer::load(base).unwrap();
    let prompt = tokenizer.encode_prompt(PROMPTS[0]).unwrap();
    let features = features_json(COMBINATIONS[0]);
    let (status, generated) = complete(
        client,
        server,
        &json!({"prompt": prompt, "max_tokens": MAX_NEW, "logprobs": 2, "features": features}),
    )
    .await;
    assert_eq!(status, 200, "{generated}");
    let completion = tokenizer.encode(&text0(&generated)).unwrap();
    let whole = [prompt.clone(), completion.clone()].concat();
    let body = json!({"prompt": whole, "max_tokens": 0, "echo": true, "logprobs": 2,
                      "features": features});
    let (status, echoed) = complete(client, server, &body).await;
    assert_eq!(status, 200, "{echoed}");
    let choice = &echoed["choices"][0];
    assert_eq!(choice["finish_reason"], "length");
    assert_eq!(echoed["usage"]["completion_tokens"], 0);
    let logprobs = &choice["logprobs"];
    let tokens = logprobs["tokens"].as_array().unwrap();
    assert_eq!(
        tokens.len(),
        whole.len(),
        "one entry per prompt token: {echoed}"
    );
    let concat: String = tokens.iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(concat, choice["text"].as_str().unwrap());
    assert!(choice["text"]
        .as_str()
        .unwrap()
        .ends_with(&text0(&generated)));
    assert!(logprobs["token_logprobs"][0].is_null() && logprobs["top_logprobs"][0].is_null());
    // The completion's tokens, scored as prompt, have the log-probabilities generation gave them.
    let scored = &logprobs["token_logprobs"].as_array().unwrap()[prompt.len()..];
    let wanted = generated["choices"][0]["logprobs"]["token_logprobs"]
        .as_array()
        .unwrap();
    assert_eq!(scored.len(), completion.len());
    for (got, want) in scored.iter().zip(wanted) {
        let (got, want) = (got.as_f64().unwrap(), want.as_f64().unwrap());
        assert!((got - want).abs() < 1e-4, "{got} against {want}: {echoed}");
    }

    // Streamed, with a completion: the prompt comes first, and the chunks rebuild the answer.
    let body = json!({"prompt": PROMPTS[0], "max_tokens": MAX_NEW, "echo": true, "logprobs": 1,
                      "features": features});
    let (_, whole_answer) = complete(client, server, &body).await;
    let text = text0(&whole_answer);
    assert!(text.ends_with(&text0(&generated)), "{whole_answer}");
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let events = stream(client, server, &streamed).await;
    let (mut chunk_text, mut chunk_tokens) = (String::new(), Vec::new());
    for event in &events[..events.len() - 1] {
        let chunk: Value = serde_json::from_str(event).unwrap();
        chunk_text += chunk["choices"][0]["text"].as_str().unwrap();
        let items = chunk["choices"][0]["logprobs"]["tokens"]
            .as_array()
            .unwrap();
        chunk_tokens.extend(items.iter().cloned());
    }
    assert_eq!(chunk_text, text);
    assert_eq!(
        Value::from(chunk_tokens),
        whole_answer["choices"][0]["logprobs"]["tokens"]
    );
}

/// SSE chunks concatenate to the non-streamed text; the last chunk carries the finish reason, the
/// usage chunk the same usage, and `[DONE]` ends the stream.
async fn streaming_concatenates_to_the_whole_text(client: &reqwest::Client, server: &Server) {
    for combination in &COMBINATIONS[..2] {
        let mut body = json!({"prompt": PROMPTS[0], "max_tokens": MAX_NEW,
                              "features": features_json(combination)});
        let (status, whole) = complete(client, server, &body).await;
        assert_eq!(status, 200, "{whole}");
        body["stream"] = json!(true);
        body["stream_options"] = json!({"include_usage": true});
        let events = stream(client, server, &body).await;
        assert_eq!(
            events.last().map(String::as_str),
            Some("[DONE]"),
            "{events:?}"
        );
        let chunks: Vec<Value> = events[..events.len() - 1]
            .iter()
            .map(|e| serde_json::from_str(e).unwrap())
            .collect();
        let (usage_chunk, text_chunks) = chunks.split_last().unwrap();
        assert_eq!(usage_chunk["usage"], whole["usage"]);
        assert_eq!(usage_chunk["choices"], json!([]));
        let text: String = text_chunks
            .iter()
            .map(|c| c["choices"][0]["text"].as_str().unwrap())
            .collect();
        assert_eq!(text, text0(&whole));
        let finish: Vec<&Value> = text_chunks
            .iter()
            .map(|c| &c["choices"][0]["finish_reason"])
            .collect();
        let (last, before) = finish.split_last().unwrap();
        assert_eq!(*last, &whole["choices"][0]["finish_reason"]);
        assert!(before.iter().all(|f| f.is_null()), "{finish:?}");
    }
}

/// A stop string cuts the text at its first occurrence (finish_reason "stop"), streamed or not.
async fn stop_strings_cut_the_text(client: &reqwest::Client, server: &Server) {
    // A continuation with a character first seen after its start, as the stop string.
    let mut found = None;
    for combination in COMBINATIONS {
        let body = json!({"prompt": PROMPTS[0], "max_tokens": MAX_NEW,
                          "features": features_json(combination)});
        let (_, whole) = complete(client, server, &body).await;
        let full = text0(&whole);
        let first_new = full
            .char_indices()
            .find(|&(i, c)| i > 0 && !full[..i].contains(c));
        if let Some((at, stop)) = first_new {
            found = Some((body, full[..at].to_string(), stop));
            break;
        }
    }
    let Some((mut body, cut, stop)) = found else {
        panic!("no continuation has two different characters to test stop strings with");
    };
    let cut = cut.as_str();
    body["stop"] = json!([stop.to_string(), "never-generated"]);
    let (status, stopped) = complete(client, server, &body).await;
    assert_eq!(status, 200, "{stopped}");
    assert_eq!(text0(&stopped), cut);
    assert_eq!(stopped["choices"][0]["finish_reason"], "stop");
    body["stream"] = json!(true);
    let events = stream(client, server, &body).await;
    let text: String = events[..events.len() - 1]
        .iter()
        .map(|e| serde_json::from_str::<Value>(e).unwrap())
        .map(|c| c["choices"][0]["text"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(text, cut);
}

/// Every malformed or out-of-limits request: a 4xx with {"error": {message, type, param, code}}.
async fn bad_requests_get_openai_errors(client: &reqwest::Client, server: &Server) {
    let ok = json!({"prompt": "1 ="});
    let with = |field: &str, value: Value| {
        let mut body = ok.clone();
        body[field] = value;
        body
    };
    let cases: Vec<(Value, &str)> = vec![
        (json!({"max_tokens": 3}), "prompt"),
        (with("prompt", json!(5)), "prompt"),
        (with("prompt", json!([])), "prompt"),
        (with("prompt", json!(["1 =", 3])), "prompt"),
        (with("prompt", json!(vec!["1 ="; 129])), "prompt"),
        (with("max_tokens", json!(-1)), "max_tokens"),
        (with("max_tokens", json!(0)), "max_tokens"),
        (with("max_tokens", json!(1e12)), "max_tokens"),
        (with("max_tokens", json!("3")), "max_tokens"),
        (with("max_tokens", json!(251)), "max_tokens"),
        (with("prompt", json!("1".repeat(65))), "prompt"),
        (
            json!({"prompt": "1".repeat(60), "max_tokens": 250}),
            "max_tokens",
        ),
        (
            with("features", json!({"colour": "red"})),
            "features.colour",
        ),
        (with("features", json!({"lang": 3})), "features.lang"),
        (with("features", json!(["lang"])), "features"),
        (with("temperature", json!(-0.5)), "temperature"),
        (with("temperature", json!("hot")), "temperature"),
        (with("top_p", json!(0)), "top_p"),
        (with("top_p", json!(1.5)), "top_p"),
        (with("stop", json!(["a", "b", "c", "d", "e"])), "stop"),
        (with("stop", json!(7)), "stop"),
        (with("echo", json!("yes")), "echo"),
        (with("stream", json!("yes")), "stream"),
        (with("seed", json!(-3)), "seed"),
        (with("n", json!(2)), "n"),
        (with("logprobs", json!(6)), "logprobs"),
        (with("logprobs", json!(-1)), "logprobs"),
        (with("logprobs", json!("2")), "logprobs"),
        (with("logprobs", json!(true)), "logprobs"),
        (json!([1, 2]), "body"),
    ];
    for (body, param) in cases {
        let (status, answer) = complete(client, server, &body).await;
        assert_eq!(status, 400, "{body}: {answer}");
        let error = &answer["error"];
        assert_eq!(error["param"], param, "{body}: {answer}");
        assert_eq!(error["type"], "invalid_request_error", "{answer}");
        assert!(!error["message"].as_str().unwrap().is_empty(), "{answer}");
        assert!(error.get("code").is_some(), "{answer}");
    }
    // Bodies axum cannot read as JSON get the same error shape.
    let raw = |body: Vec<u8>, content_type: &'static str| {
        client
            .post(server.url("/v1/completions"))
            .header("content-type", content_type)
            .body(body)
    };
    for (request, want) in [
        (raw(b"{\"prompt\": ".to_vec(), "application/json"), 400),
        (
            raw(b"{\"temperature\": NaN}".to_vec(), "application/json"),
            400,
        ),
        (raw(b"{\"prompt\": \"1 =\"}".to_vec(), "text/plain"), 415),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), want);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["type"], "invalid_request_error", "{answer}");
        assert!(answer["error"]["message"].is_string(), "{answer}");
    }
    // The server answers 413 without reading the body, and closes that connection: a client of
    // its own keeps the shared one's pool clean.
    let response = reqwest::Client::new()
        .post(server.url("/v1/completions"))
        .header("content-type", "application/json")
        .body(vec![b' '; 2 << 20])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 413);
    let answer: Value = response.json().await.unwrap();
    assert_eq!(answer["error"]["type"], "invalid_request_error", "{answer}");
    let response = client.get(server.url("/nowhere")).send().await.unwrap();
    assert_eq!(response.status(), 404);
    // A known route asked with the wrong method: 405 with the same error shape.
    for request in [
        client.get(server.url("/v1/completions")),
        client.post(server.url("/v1/models")),
    ] {
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 405);
        let answer: Value = response.json().await.unwrap();
        assert_eq!(answer["error"]["code"], "method_not_allowed", "{answer}");
    }
    // ... and the server still answers.
    let (status, _) = complete(client, server, &ok).await;
    assert_eq!(status, 200);
}

async fn models_and_health(client: &reqwest::Client, server: &Server) {
    let get = |path: &str| client.get(server.url(path)).send();
    let models: Value = get("/v1/models").await.unwrap().json().await.unwrap();
    let model = &models["data"][0];
    assert_eq!(model["id"], "run");
    assert_eq!(model["features"]["lang"], json!(["eng", "fra"]), "{models}");
    let adapters = model["adapters"].as_array().unwrap();
    assert_eq!(adapters.len(), 2, "{models}");
    assert!(adapters.iter().all(|a| a["rank"] == 2), "{models}");
    let health: Value = get("/health").await.unwrap().json().await.unwrap();
    assert_eq!(health["status"], "ok");
}

/// 1,000 requests from 16 clients: every one answered 200, and the metrics count them all.
async fn load_run_loses_nothing(client: &reqwest::Client, server: &Server) {
    let ok_before = metric(client, server, "flix_requests_total{code=\"200\"}").await;
    let prompt_before = metric(client, server, "flix_prompt_tokens_total").await;
    let generated_before = metric(client, server, "flix_generated_tokens_total").await;
    let mut clients = Vec::new();
    for c in 0..16 {
        let (client, url) = (client.clone(), server.url("/v1/completions"));
        clients.push(tokio::spawn(async move {
            let (mut answered, mut prompt, mut generated) = (0, 0, 0);
            for i in 0..1000 / 16 + usize::from(c < 1000 % 16) {
                let combination = COMBINATIONS[(c + i) % COMBINATIONS.len()];
                let body = json!({"prompt": PROMPTS[i % 2], "max_tokens": 2,
                                  "features": features_json(combination)});
                let response = client.post(&url).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 200);
                let body: Value = response.json().await.unwrap();
                answered += 1;
                prompt += body["usage"]["prompt_tokens"].as_u64().unwrap();
                generated += body["usage"]["completion_tokens"].as_u64().unwrap();
            }
            (answered, prompt, generated)
        }));
    }
    let (mut answered, mut prompt, mut generated) = (0, 0, 0);
    for c in clients {
        let (a, p, g) = c.await.unwrap();
        (answered, prompt, generated) = (answered + a, prompt + p, generated + g);
    }
    assert_eq!(answered, 1000);
    let health: Value = client
        .get(server.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");
    let ok_after = metric(client, server, "flix_requests_total{code=\"200\"}").await;
    assert_eq!(ok_after - ok_before, 1000.0);
    let prompt_after = metric(client, server, "flix_prompt_tokens_total").await;
    assert_eq!(prompt_after - prompt_before, prompt as f64);
    let generated_after = metric(client, server, "flix_generated_tokens_total").await;
    assert_eq!(generated_after - generated_before, generated as f64);
    assert_eq!(metric(client, server, "flix_queue_depth").await, 0.0);
    // Continuous batching did batch: some step held more than one sequence.
    let steps = metric(client, server, "flix_batch_sequences_count").await;
    let single = metric(client, server, "flix_batch_sequences_bucket{le=\"1\"}").await;
    assert!(
        steps > single,
        "every step held one sequence ({steps} steps)"
    );
}

/// A request that runs to max_tokens: greedy, the longest the model allows, for the first
/// prompt and combination whose continuation never reaches the end-of-sequence token.
async fn long_request(client: &reqwest::Client, server: &Server) -> Value {
    let prompt = "1 =";
    for combination in COMBINATIONS {
        let body = json!({"prompt": prompt, "max_tokens": 240,
                          "features": features_json(combination)});
        let (status, answer) = complete(client, server, &body).await;
        assert_eq!(status, 200, "{answer}");
        if answer["choices"][0]["finish_reason"] == "length" {
            return body;
        }
    }
    panic!("every continuation of {prompt:?} ends before 240 tokens: no long request to test with");
}

/// A client that goes away (streaming: after its first chunk; not streaming: while it waits for
/// the answer): its sequences are dropped from the batch (the metrics say so, the batch
/// empties) and the server keeps serving.
async fn a_dropped_client_cancels_its_sequence(
    client: &reqwest::Client,
    server: &Server,
    long: &Value,
    stream: bool,
) {
    let dropped = "flix_sequences_finished_total{reason=\"dropped\"}";
    // The engine updates the gauge after the step that sent the previous request its last
    // token, so a client that got its answer can still read that step's count: wait for the
    // empty batch, or the new request would seem to be decoding before it is.
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(client, server, "flix_active_sequences").await != 0.0 {
        assert!(Instant::now() < deadline, "the batch never emptied");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let before = metric(client, server, dropped).await;
    // 64 long choices in one request: far more decoding than the client takes to go away.
    let mut body = long.clone();
    body["stream"] = json!(stream);
    body["prompt"] = json!(vec![long["prompt"].clone(); 64]);
    let request = client
        .post(server.url("/v1/completions"))
        .json(&body)
        .send();
    if stream {
        let mut response = request.await.unwrap();
        response.chunk().await.unwrap().unwrap();
        drop(response);
    } else {
        // Wait until the sequences run, then hang up before the answer comes.
        let waiting = tokio::spawn(request);
        let deadline = Instant::now() + Duration::from_secs(20);
        while metric(client, server, "flix_active_sequences").await < 1.0 {
            assert!(
                Instant::now() < deadline,
                "the request never started decoding"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        waiting.abort();
        assert!(
            waiting.await.is_err(),
            "the answer came before the client hung up"
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let now = metric(client, server, dropped).await;
        let active = metric(client, server, "flix_active_sequences").await;
        if now > before && active == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the dropped stream was not cancelled: {now} dropped, {active} active"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (status, _) = complete(client, server, &json!({"prompt": "1 ="})).await;
    assert_eq!(status, 200);
}

/// One sequence at a time and two waiting: a burst of long requests is answered in full, 200 or
/// 429 with Retry-After, and the metrics count each.
async fn a_full_queue_refuses_with_429(client: &reqwest::Client, run: &Path, long: &Value) {
    let server = Server::start(&[run], &["--max-concurrent", "1", "--max-queue", "2"]);
    let mut burst = Vec::new();
    for _ in 0..24 {
        let (client, url, body) = (client.clone(), server.url("/v1/completions"), long.clone());
        burst.push(tokio::spawn(async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            let retry_after = response.headers().get("retry-after").cloned();
            let body: Value = response.json().await.unwrap();
            (status, retry_after, body)
        }));
    }
    let (mut ok, mut busy) = (0, 0);
    for task in burst {
        let (status, retry_after, body) = task.await.unwrap();
        match status {
            200 => ok += 1,
            429 => {
                busy += 1;
                assert!(retry_after.is_some(), "{body}");
                assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");
            }
            other => panic!("unexpected status {other}: {body}"),
        }
    }
    assert!(ok >= 1 && busy >= 1, "{ok} answered, {busy} refused");
    let counted_ok = metric(client, &server, "flix_requests_total{code=\"200\"}").await;
    let counted_busy = metric(client, &server, "flix_requests_total{code=\"429\"}").await;
    assert_eq!((counted_ok, counted_busy), (ok as f64, busy as f64));
}

/// SIGTERM with work queued: new requests get 503 with Retry-After and /health says draining;
/// the streaming request running at the signal ends with its text and `[DONE]`; the process
/// exits 0 within the grace period.
async fn sigterm_drains_and_exits(client: &reqwest::Client, run: &Path, long: &Value) {
    let grace = 1;
    // The `BASE RUN` form, with the base the run was trained on.
    let base = run.parent().unwrap().join("base");
    let mut server = Server::start(
        &[&base, run],
        &[
            "--max-concurrent",
            "1",
            "--max-queue",
            "2000",
            "--shutdown-grace-secs",
            &grace.to_string(),
        ],
    );
    // Enough queued work that draining outlasts the grace period: timed on the fastest of three
    // requests (one slowed by a busy machine would make the backlog too short).
    let mut per_request = f64::INFINITY;
    for _ in 0..3 {
        let started = Instant::now();
        let (status, _) = complete(client, &server, long).await;
        assert_eq!(status, 200);
        per_request = per_request.min(started.elapsed().as_secs_f64());
    }
    // (At most a few hundred: each is an open connection, and file descriptors are limited.)
    let queued = ((4.0 * grace as f64 / per_request) as usize).clamp(32, 400);

    let mut streaming = long.clone();
    streaming["stream"] = json!(true);
    let mut in_flight = client
        .post(server.url("/v1/completions"))
        .json(&streaming)
        .send()
        .await
        .unwrap();
    let first = in_flight.chunk().await.unwrap().unwrap();
    let mut backlog = Vec::new();
    for _ in 0..queued {
        let (client, url, body) = (client.clone(), server.url("/v1/completions"), long.clone());
        backlog.push(tokio::spawn(async move {
            let response = client.post(url).json(&body).send().await.unwrap();
            let status = response.status().as_u16();
            (status, response.json::<Value>().await.unwrap())
        }));
    }
    // Let the backlog reach the queue.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let signalled = Instant::now();
    let pid = server.child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    tokio::time::sleep(Duration::from_millis(100)).await;

    let refused = client
        .post(server.url("/v1/completions"))
        .json(&json!({"prompt": "1 ="}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 503);
    assert!(refused.headers().contains_key("retry-after"));
    let health: Value = client
        .get(server.url("/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "draining");

    let mut rest = first.to_vec();
    while let Some(chunk) = in_flight.chunk().await.unwrap() {
        rest.extend_from_slice(&chunk);
    }
    let rest = String::from_utf8(rest).unwrap();
    assert!(rest.trim_end().ends_with("data: [DONE]"), "{rest}");

    // Every queued request is answered: finished, cut (finish_reason null, with a warning), or
    // refused if the grace period ended before it started.
    let (mut finished, mut cut, mut refused) = (0, 0, 0);
    for task in backlog {
        let (status, body) = task.await.unwrap();
        match (status, body["choices"][0]["finish_reason"].as_str()) {
            (200, Some("length")) => finished += 1,
            (200, None) => {
                cut += 1;
                assert!(body["warnings"].to_string().contains("shut down"), "{body}");
            }
            (503, _) => refused += 1,
            other => panic!("unexpected answer {other:?}: {body}"),
        }
    }
    assert_eq!(finished + cut + refused, queued);
    assert!(
        cut + refused > 0,
        "the backlog finished within the grace period"
    );

    let status = loop {
        if let Some(status) = server.child.try_wait().unwrap() {
            break status;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(grace + 10),
            "the server did not exit"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status:?}");
}
