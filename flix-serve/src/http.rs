//! Routes, the completion handler (whole and streamed), and how every refusal becomes an
//! OpenAI-style error body.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use axum::extract::rejection::JsonRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use flix_model::{FinishReason, SequenceParams};
use futures_util::stream;
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::api::{self, ApiError, Choice, Completion, CompletionRequest, Logprobs, Usage};
use crate::engine::{EngineHandle, Event, Submission};
use crate::metrics::Metrics;
use crate::model::ModelInfo;
use crate::text::{ChoiceText, Ending, Released};
use crate::Limits;

/// The largest request body accepted (413 beyond): prompts far longer than any context.
pub const MAX_BODY_BYTES: usize = 1 << 20;

/// What every handler shares.
#[derive(Clone)]
pub struct AppState {
    pub engine: EngineHandle,
    pub model: Arc<ModelInfo>,
    pub limits: Limits,
    pub metrics: Arc<Metrics>,
    /// Set on SIGTERM / Ctrl-C: new completions get 503.
    pub draining: Arc<AtomicBool>,
    pub started: u64,
    pub next_id: Arc<AtomicU64>,
}

pub fn router(state: AppState) -> Router {
    let completions = Router::new()
        .route("/v1/completions", post(completions))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .route_layer(middleware::from_fn_with_state(state.clone(), count_status));
    Router::new()
        .merge(completions)
        .route("/v1/models", get(models))
        .route("/health", get(health))
        .route("/metrics", get(metrics))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(self.body())).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

/// Counts every completion answer by status, refusals included.
async fn count_status(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let response = next.run(request).await;
    state.metrics.request_answered(response.status().as_u16());
    response
}

async fn not_found() -> ApiError {
    ApiError {
        code: Some("not_found"),
        ..ApiError::with_status(
            StatusCode::NOT_FOUND,
            "no such route: the server answers POST /v1/completions, GET /v1/models, GET \
             /health and GET /metrics",
        )
    }
}

async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError {
        code: Some("method_not_allowed"),
        ..ApiError::with_status(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "{method} is not answered at {}: the server answers POST /v1/completions, GET \
                 /v1/models, GET /health and GET /metrics",
                uri.path()
            ),
        )
    }
}

async fn models(State(state): State<AppState>) -> Json<Value> {
    Json(state.model.models_json(state.started))
}

async fn health(State(state): State<AppState>) -> Json<Value> {
    let draining = state.draining.load(Ordering::SeqCst);
    Json(json!({
        "status": if draining { "draining" } else { "ok" },
        "model": state.model.id,
        "queue_depth": state.engine.queue_depth(),
        "active_sequences": state.metrics.active_sequences(),
    }))
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let text = state.metrics.render(
        state.engine.queue_depth(),
        state.draining.load(Ordering::SeqCst),
    );
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        text,
    )
}

/// A body axum could not read as JSON (wrong Content-Type, bad syntax, too large), in the error
/// format of every other refusal.
fn json_rejection(rejection: JsonRejection) -> ApiError {
    let code = match &rejection {
        JsonRejection::MissingJsonContentType(_) => "unsupported_media_type",
        JsonRejection::BytesRejection(_) => "body_unreadable",
        _ => "invalid_json",
    };
    ApiError {
        param: Some("body".into()),
        code: Some(code),
        ..ApiError::with_status(rejection.status(), rejection.body_text())
    }
}

async fn completions(
    State(state): State<AppState>,
    body: Result<Json<Value>, JsonRejection>,
) -> Response {
    let received = Instant::now();
    match start_completion(&state, body).await {
        Err(e) => e.into_response(),
        Ok(job) if job.request.stream => stream_completion(state, job, received)
            .await
            .unwrap_or_else(IntoResponse::into_response),
        Ok(job) => whole_completion(state, job, received)
            .await
            .unwrap_or_else(IntoResponse::into_response),
    }
}

/// An accepted request on its way through the engine.
struct Job {
    request: CompletionRequest,
    prompt_tokens: usize,
    events: UnboundedReceiver<Event>,
    answer: Answer,
}

/// Validates, tokenizes and queues a request.
async fn start_completion(
    state: &AppState,
    body: Result<Json<Value>, JsonRejection>,
) -> Result<Job, ApiError> {
    if state.draining.load(Ordering::SeqCst) {
        return Err(shutting_down(state.limits.retry_after_secs));
    }
    let Json(body) = body.map_err(json_rejection)?;
    let request = api::parse_request(&body, &state.limits, &state.model)?;
    // Tokenizing a long prompt (and, to echo it with log-probabilities, decoding every prefix of
    // it) takes a while: off the threads that serve the other requests.
    let (model, limits) = (state.model.clone(), state.limits);
    let (request, prepared) = tokio::task::spawn_blocking(move || {
        let prepared = api::sequences(&request, &limits, &model)
            .and_then(|sequences| Ok((choice_texts(&request, &model, &sequences)?, sequences)));
        (request, prepared)
    })
    .await
    .map_err(|e| {
        ApiError::with_status(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("tokenizing the prompt failed: {e}"),
        )
    })?;
    let (choices, sequences) = prepared?;
    let prompt_tokens = sequences.iter().map(|s| s.prompt.len()).sum();
    let done: Vec<Arc<AtomicBool>> = (0..sequences.len()).map(|_| Arc::default()).collect();
    let (reply, events) = unbounded_channel();
    let answer = Answer {
        id: format!("cmpl-{}", state.next_id.fetch_add(1, Ordering::SeqCst)),
        created: unix_now(),
        choices,
        done: done.clone(),
        got_token: false,
        retry_after_secs: state.limits.retry_after_secs,
    };
    state.engine.submit(Submission {
        sequences,
        reply,
        done,
    })?;
    Ok(Job {
        request,
        prompt_tokens,
        events,
        answer,
    })
}

/// The texts of a request's choices before their first token: the echoed prompt, if asked for.
fn choice_texts(
    request: &CompletionRequest,
    model: &ModelInfo,
    sequences: &[SequenceParams],
) -> Result<Vec<ChoiceText>, ApiError> {
    sequences
        .iter()
        .map(|s| {
            let mut choice = ChoiceText::new(request.stop.clone());
            if request.echo {
                let with_logprobs = request.logprobs.is_some();
                choice = choice.echoing(&model.tokenizer, &s.prompt, with_logprobs)?;
            }
            if request.max_tokens == 0 {
                choice = choice.without_completion();
            }
            Ok(choice)
        })
        .collect::<Result<_, String>>()
        .map_err(|e| ApiError::with_status(StatusCode::INTERNAL_SERVER_ERROR, e))
}

/// The choices of a request as their tokens arrive.
struct Answer {
    id: String,
    created: u64,
    choices: Vec<ChoiceText>,
    done: Vec<Arc<AtomicBool>>,
    got_token: bool,
    /// The `Retry-After` of a 503.
    retry_after_secs: u64,
}

impl Answer {
    fn finished(&self) -> bool {
        self.choices.iter().all(|c| c.ending.is_some())
    }

    fn completion_tokens(&self) -> usize {
        self.choices.iter().map(|c| c.generated).sum()
    }

    /// Applies one engine event; returns the text released per choice (choice, piece, ended).
    fn apply(&mut self, model: &ModelInfo, event: Event) -> Result<Vec<Release>, ApiError> {
        match event {
            Event::Token {
                choice,
                token,
                last,
                logprobs,
                prompt_logprobs,
            } => {
                self.got_token = true;
                let Some(text) = self.choices.get_mut(choice) else {
                    return Ok(Vec::new());
                };
                let ending = last.map(|reason| match reason {
                    FinishReason::Eos => Ending::Stop,
                    FinishReason::Length => Ending::Length,
                });
                let released = text
                    .push(
                        &model.tokenizer,
                        token,
                        token == model.eos,
                        ending,
                        logprobs.as_ref(),
                        &prompt_logprobs,
                    )
                    .map_err(|e| ApiError::with_status(StatusCode::INTERNAL_SERVER_ERROR, e))?;
                let ended = text.ending;
                if ended.is_some() {
                    // A stop string: the engine drops the sequence before its next step.
                    if let Some(flag) = self.done.get(choice) {
                        flag.store(true, Ordering::SeqCst);
                    }
                }
                Ok(vec![Release {
                    choice,
                    released,
                    ending: ended,
                }])
            }
            Event::Rejected(message) => Err(ApiError {
                param: Some("prompt".into()),
                ..ApiError::with_status(StatusCode::BAD_REQUEST, message)
            }),
            Event::Failed(message) => Err(ApiError::with_status(
                StatusCode::INTERNAL_SERVER_ERROR,
                message,
            )),
            // A request the grace period ended before it started is refused, not answered empty.
            Event::Cut if !self.got_token => Err(shutting_down(self.retry_after_secs)),
            Event::Cut => Ok(self.cut()),
        }
    }

    /// Ends every open choice where it stands.
    fn cut(&mut self) -> Vec<Release> {
        self.choices
            .iter_mut()
            .enumerate()
            .filter(|(_, c)| c.ending.is_none())
            .map(|(choice, c)| Release {
                choice,
                released: c.cut(),
                ending: c.ending,
            })
            .collect()
    }

    /// The warnings of a finished answer: the request's, and one if the shutdown cut it.
    fn warnings(&self, request: &CompletionRequest) -> Vec<String> {
        let mut warnings = request.warnings.clone();
        if self.choices.iter().any(|c| c.ending == Some(Ending::Cut)) {
            warnings.push(CUT_WARNING.to_string());
        }
        warnings
    }
}

const CUT_WARNING: &str = "the server shut down before this completion finished: the text is \
                           what was generated until then (finish_reason null)";

/// Text of one choice that may go to the client (with its tokens' log-probabilities).
struct Release {
    choice: usize,
    released: Released,
    ending: Option<Ending>,
}

/// The engine closed the channel without a last event: it exited (shutdown) — a request it never
/// started is refused, one it started is cut.
fn engine_gone(answer: &mut Answer, state: &AppState) -> Result<Vec<Release>, ApiError> {
    if answer.got_token {
        Ok(answer.cut())
    } else {
        Err(shutting_down(state.limits.retry_after_secs))
    }
}

/// The 503 of a request the server will not serve because it is shutting down.
fn shutting_down(retry_after_secs: u64) -> ApiError {
    ApiError {
        retry_after: Some(retry_after_secs),
        ..ApiError::with_status(
            StatusCode::SERVICE_UNAVAILABLE,
            "the server is shutting down and accepts no new requests",
        )
    }
}

/// Waits for every choice, then answers in one JSON body.
async fn whole_completion(
    state: AppState,
    mut job: Job,
    received: Instant,
) -> Result<Response, ApiError> {
    // The released pieces matter to a stream only: the whole text is read at the end.
    while !job.answer.finished() {
        match job.events.recv().await {
            Some(event) => {
                let first = !job.answer.got_token;
                job.answer.apply(&state.model, event)?;
                if first && job.answer.got_token {
                    state.metrics.first_token(received.elapsed());
                }
            }
            None => {
                engine_gone(&mut job.answer, &state)?;
            }
        }
    }
    let answer = &job.answer;
    let completion_tokens = answer.completion_tokens();
    state.metrics.tokens(job.prompt_tokens, completion_tokens);
    state.metrics.request_latency(received.elapsed());
    let body = Completion {
        id: answer.id.clone(),
        object: "text_completion",
        created: answer.created,
        model: state.model.id.clone(),
        choices: answer
            .choices
            .iter()
            .enumerate()
            .map(|(index, c)| Choice {
                text: c.text(),
                index,
                logprobs: job.request.logprobs.map(|_| Logprobs::new(&c.entries())),
                finish_reason: c.ending.and_then(Ending::finish_reason),
            })
            .collect(),
        usage: Some(Usage::new(job.prompt_tokens, completion_tokens)),
        warnings: Some(answer.warnings(&job.request)),
    };
    Ok(Json(body).into_response())
}

/// Server-sent events: a chunk per released piece of text (`finish_reason` on a choice's last),
/// the usage when asked for, then `[DONE]`. The first event is awaited before answering, so a
/// request the decoder refuses still gets its 400.
async fn stream_completion(
    state: AppState,
    mut job: Job,
    received: Instant,
) -> Result<Response, ApiError> {
    let first = match job.events.recv().await {
        Some(event) => job.answer.apply(&state.model, event)?,
        None => engine_gone(&mut job.answer, &state)?,
    };
    if job.answer.got_token {
        state.metrics.first_token(received.elapsed());
    }
    let mut streamer = Streamer {
        state,
        job,
        received,
        outgoing: VecDeque::new(),
        warnings_sent: false,
        over: false,
    };
    streamer.queue(first);
    let events = stream::unfold(streamer, |mut s| async move {
        let next = s.next().await?;
        Some((Ok::<_, Infallible>(next), s))
    });
    Ok(Sse::new(events).into_response())
}

/// The state of one SSE response.
struct Streamer {
    state: AppState,
    job: Job,
    received: Instant,
    outgoing: VecDeque<SseEvent>,
    warnings_sent: bool,
    /// Nothing more to queue: the answer ended (or failed).
    over: bool,
}

impl Streamer {
    fn chunk(&mut self, choices: Vec<Choice>, usage: Option<Usage>, cut: bool) -> SseEvent {
        // The request's warnings ride on the first chunk; a cut adds its warning to the chunk
        // that ends the choice.
        let warnings = if !self.warnings_sent {
            self.warnings_sent = true;
            Some(self.job.answer.warnings(&self.job.request))
        } else if cut {
            Some(vec![CUT_WARNING.to_string()])
        } else {
            None
        };
        let chunk = Completion {
            id: self.job.answer.id.clone(),
            object: "text_completion",
            created: self.job.answer.created,
            model: self.state.model.id.clone(),
            choices,
            usage,
            warnings,
        };
        SseEvent::default().data(serde_json::to_string(&chunk).unwrap_or_default())
    }

    /// Turns released text into chunks; after the last choice ends, the closing events.
    fn queue(&mut self, releases: Vec<Release>) {
        for r in releases {
            let Released { text, entries } = r.released;
            if text.is_empty() && entries.is_empty() && r.ending.is_none() {
                continue;
            }
            let cut = r.ending == Some(Ending::Cut);
            let choice = Choice {
                text,
                index: r.choice,
                logprobs: self.job.request.logprobs.map(|_| Logprobs::new(&entries)),
                finish_reason: r.ending.and_then(Ending::finish_reason),
            };
            let event = self.chunk(vec![choice], None, cut);
            self.outgoing.push_back(event);
        }
        if self.job.answer.finished() && !self.over {
            self.over = true;
            let completion_tokens = self.job.answer.completion_tokens();
            let metrics = &self.state.metrics;
            metrics.tokens(self.job.prompt_tokens, completion_tokens);
            metrics.request_latency(self.received.elapsed());
            if self.job.request.include_usage {
                let usage = Usage::new(self.job.prompt_tokens, completion_tokens);
                let event = self.chunk(Vec::new(), Some(usage), false);
                self.outgoing.push_back(event);
            }
            self.outgoing.push_back(SseEvent::default().data("[DONE]"));
        }
    }

    /// The next event to send; None ends the stream.
    async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(event) = self.outgoing.pop_front() {
                return Some(event);
            }
            if self.over {
                return None;
            }
            let got_token = self.job.answer.got_token;
            let applied = match self.job.events.recv().await {
                Some(event) => self.job.answer.apply(&self.state.model, event),
                None => engine_gone(&mut self.job.answer, &self.state),
            };
            if !got_token && self.job.answer.got_token {
                self.state.metrics.first_token(self.received.elapsed());
            }
            match applied {
                Ok(releases) => self.queue(releases),
                Err(e) => {
                    // Headers are gone already: the error is the last event, without [DONE].
                    self.over = true;
                    return Some(SseEvent::default().data(e.body().to_string()));
                }
            }
        }
    }
}
