//! The engine: ONE thread owns the model and a step-level [`Decoder`] and runs continuous
//! batching. Before each step it takes new requests from its inbox, drops the sequences nobody
//! waits for any more, and admits queued sequences up to `max_concurrent`; after it, it routes
//! each new token to its request's channel. Sequences join and leave between steps, so a short
//! request never waits for a long one to finish.
//!
//! Cancellation needs no message: a request's handler holds the receiving end of its channel, and
//! when the client goes away the handler (or SSE stream) is dropped with it, which closes the
//! channel; the engine sees that before the next step. A stop string that matched sets the
//! choice's `done` flag the same way.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use axum::http::StatusCode;
use flix_kernels::Device;
use flix_model::train::{load_trained, Trained};
use flix_model::{Decoder, FinishReason, SequenceId, SequenceParams, TokenLogprobs};
use tokio::sync::{mpsc::UnboundedSender, oneshot};

use crate::api::ApiError;
use crate::metrics::{Metrics, SequenceEnd};
use crate::model::ModelInfo;
use crate::ServeError;

/// What the engine tells a request's handler.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The next token of choice `choice`; `last` is set on its last token; `logprobs` when the
    /// request asked for them, and on the first token with `echo`, the prompt's.
    Token {
        choice: usize,
        token: u32,
        last: Option<FinishReason>,
        logprobs: Option<TokenLogprobs>,
        prompt_logprobs: Vec<TokenLogprobs>,
    },
    /// The decoder refused a sequence of the request (a client error).
    Rejected(String),
    /// A decoder step failed; the request's sequences are gone (a server error).
    Failed(String),
    /// The shutdown grace period ended: every choice stops where it is.
    Cut,
}

/// A request's sequences and where their tokens go.
pub struct Submission {
    /// One per prompt, in order: the choice index is the position here.
    pub sequences: Vec<SequenceParams>,
    pub reply: UnboundedSender<Event>,
    /// `done[i]`: choice i needs no more tokens (a stop string matched); set by the handler.
    pub done: Vec<Arc<AtomicBool>>,
}

enum Message {
    Submit(Submission),
    /// Finish what was accepted, cutting whatever still runs at `deadline`, then exit.
    Drain {
        deadline: Instant,
    },
}

/// The request handlers' side of the engine.
#[derive(Clone)]
pub struct EngineHandle {
    inbox: mpsc::Sender<Message>,
    /// Requests submitted and not yet fully admitted into the batch.
    queued: Arc<AtomicUsize>,
    max_queue: usize,
}

impl EngineHandle {
    /// Queues a request, or refuses it with 429 when `max_queue` requests already wait.
    pub fn submit(&self, submission: Submission) -> Result<(), ApiError> {
        let reserved = self
            .queued
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                (n < self.max_queue).then_some(n + 1)
            });
        if reserved.is_err() {
            let mut error = ApiError::with_status(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "the server is busy: {} requests are already waiting (--max-queue); retry \
                     later",
                    self.max_queue
                ),
            );
            error.retry_after = Some(1);
            return Err(error);
        }
        if self.inbox.send(Message::Submit(submission)).is_err() {
            self.queued.fetch_sub(1, Ordering::SeqCst);
            return Err(ApiError::with_status(
                StatusCode::SERVICE_UNAVAILABLE,
                "the engine has stopped; the server is shutting down",
            ));
        }
        Ok(())
    }

    /// Tells the engine to finish and exit (a second call only moves nothing).
    pub fn drain(&self, deadline: Instant) {
        // The engine may have exited already: then there is nothing left to drain.
        let _ = self.inbox.send(Message::Drain { deadline });
    }

    pub fn queue_depth(&self) -> usize {
        self.queued.load(Ordering::SeqCst)
    }
}

/// What the engine needs to load and run the model.
pub struct EngineConfig {
    pub run: PathBuf,
    pub device: String,
    pub model_id: String,
    pub max_concurrent: usize,
    pub max_queue: usize,
}

/// Starts the engine thread, which loads the run; returns once the model is loaded (or failed
/// to load), with what the handlers need and the thread to join at exit.
pub async fn start(
    config: EngineConfig,
    metrics: Arc<Metrics>,
) -> Result<(EngineHandle, ModelInfo, JoinHandle<()>), ServeError> {
    let (inbox, messages) = mpsc::channel();
    let queued = Arc::new(AtomicUsize::new(0));
    let (loaded_tx, loaded_rx) = oneshot::channel();
    let handle = EngineHandle {
        inbox,
        queued: queued.clone(),
        max_queue: config.max_queue,
    };
    let thread = std::thread::Builder::new()
        .name("flix-engine".into())
        .spawn(move || {
            // Loaded here, not on the caller's thread: the decoder borrows the model, and a CUDA
            // model need not be Send.
            let trained = match load(&config) {
                Ok(trained) => trained,
                Err(e) => {
                    let _ = loaded_tx.send(Err(e));
                    return;
                }
            };
            let Trained {
                model,
                layout,
                tokenizer,
                config: adapter_config,
                warnings,
                ..
            } = trained;
            // A damaged newest checkpoint that was passed over, say.
            for warning in &warnings {
                eprintln!("warning: {warning}");
            }
            let eos = match tokenizer.eos_id() {
                Ok(eos) => eos,
                Err(e) => {
                    let _ = loaded_tx.send(Err(e.into()));
                    return;
                }
            };
            let info = ModelInfo {
                id: config.model_id.clone(),
                base: adapter_config.base_model,
                layout,
                tokenizer,
                eos,
                max_positions: model.config.max_position_embeddings,
                vocab_size: model.config.vocab_size,
            };
            if loaded_tx.send(Ok(info)).is_err() {
                return;
            }
            Engine {
                decoder: Decoder::new(&model),
                messages,
                queued,
                metrics,
                max_concurrent: config.max_concurrent,
                requests: HashMap::new(),
                waiting: VecDeque::new(),
                active: HashMap::new(),
                next_request: 0,
                deadline: None,
            }
            .run();
        })
        .map_err(|e| ServeError::Engine(format!("cannot start the engine thread: {e}")))?;
    let info = match loaded_rx.await {
        Ok(result) => result?,
        Err(_) => {
            let _ = thread.join();
            return Err(ServeError::Engine(
                "the engine thread ended while loading the model".into(),
            ));
        }
    };
    Ok((handle, info, thread))
}

fn load(config: &EngineConfig) -> Result<Trained, ServeError> {
    let device = Device::parse(&config.device)?;
    Ok(load_trained(&config.run, &device)?)
}

/// One request inside the engine.
struct Request {
    reply: UnboundedSender<Event>,
    done: Vec<Arc<AtomicBool>>,
    /// Sequences not yet admitted, with their choice index.
    pending: VecDeque<(usize, SequenceParams)>,
    /// Admitted sequences still in the decoder.
    running: Vec<SequenceId>,
}

impl Request {
    fn finished(&self) -> bool {
        self.pending.is_empty() && self.running.is_empty()
    }
}

struct Engine<'m> {
    decoder: Decoder<'m>,
    messages: mpsc::Receiver<Message>,
    queued: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    max_concurrent: usize,
    requests: HashMap<u64, Request>,
    /// Requests with sequences not yet admitted, first come first served.
    waiting: VecDeque<u64>,
    /// Each decoder sequence's request and choice.
    active: HashMap<SequenceId, (u64, usize)>,
    next_request: u64,
    /// Set once draining: when whatever still runs is cut.
    deadline: Option<Instant>,
}

impl Engine<'_> {
    fn run(mut self) {
        while self.receive() {
            self.drop_abandoned();
            if self.deadline.is_some_and(|d| Instant::now() >= d) {
                self.cut_all();
            }
            self.admit();
            self.step();
            self.metrics.set_active_sequences(self.decoder.len());
        }
        // Whatever is left (the inbox closed) gets no more tokens: dropping the requests closes
        // their channels, which their handlers report.
        self.cut_all();
        self.metrics.set_active_sequences(0);
    }

    /// Takes new messages, waiting for one when there is nothing to do. False: time to exit
    /// (draining and idle, or nobody can send any more).
    fn receive(&mut self) -> bool {
        loop {
            let idle = self.requests.is_empty();
            let message = if !idle {
                match self.messages.try_recv() {
                    Ok(m) => m,
                    Err(TryRecvError::Empty) => return true,
                    Err(TryRecvError::Disconnected) => return false,
                }
            } else if self.deadline.is_some() {
                // Draining and idle: drain once more for a request that raced the drain
                // message, then exit.
                match self.messages.recv_timeout(Duration::from_millis(1)) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout | RecvTimeoutError::Disconnected) => {
                        return false
                    }
                }
            } else {
                match self.messages.recv() {
                    Ok(m) => m,
                    Err(_) => return false,
                }
            };
            match message {
                Message::Submit(submission) => self.enqueue(submission),
                Message::Drain { deadline } => {
                    self.deadline = Some(self.deadline.map_or(deadline, |d| d.min(deadline)))
                }
            }
        }
    }

    fn enqueue(&mut self, submission: Submission) {
        let id = self.next_request;
        self.next_request += 1;
        self.requests.insert(
            id,
            Request {
                reply: submission.reply,
                done: submission.done,
                pending: submission.sequences.into_iter().enumerate().collect(),
                running: Vec::new(),
            },
        );
        self.waiting.push_back(id);
    }

    /// A request leaves the waiting line.
    fn leave_queue(&mut self, id: u64) {
        if let Some(pos) = self.waiting.iter().position(|&w| w == id) {
            self.waiting.remove(pos);
            self.queued.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Removes a request, cancelling its running sequences (counted as `how`).
    fn remove(&mut self, id: u64, how: SequenceEnd) -> Option<Request> {
        self.leave_queue(id);
        let request = self.requests.remove(&id)?;
        for seq in &request.running {
            self.decoder.cancel(*seq);
            self.active.remove(seq);
            self.metrics.sequence_ended(how);
        }
        Some(request)
    }

    /// Cancels the sequences whose client went away or whose stop string matched.
    fn drop_abandoned(&mut self) {
        let gone: Vec<u64> = self
            .requests
            .iter()
            .filter(|(_, r)| r.reply.is_closed())
            .map(|(&id, _)| id)
            .collect();
        for id in gone {
            self.remove(id, SequenceEnd::Dropped);
        }
        let stopped: Vec<SequenceId> = self
            .active
            .iter()
            .filter(|(_, (request, choice))| {
                self.requests
                    .get(request)
                    .and_then(|r| r.done.get(*choice))
                    .is_some_and(|done| done.load(Ordering::SeqCst))
            })
            .map(|(&seq, _)| seq)
            .collect();
        for seq in stopped {
            self.decoder.cancel(seq);
            self.metrics.sequence_ended(SequenceEnd::Dropped);
            self.sequence_left(seq);
        }
    }

    /// Bookkeeping after sequence `seq` left the decoder; removes a request with nothing left.
    fn sequence_left(&mut self, seq: SequenceId) {
        let Some((id, _)) = self.active.remove(&seq) else {
            return;
        };
        let finished = self.requests.get_mut(&id).is_some_and(|r| {
            r.running.retain(|&s| s != seq);
            r.finished()
        });
        if finished {
            self.requests.remove(&id);
        }
    }

    /// Fills the batch from the waiting line, first come first served.
    fn admit(&mut self) {
        while self.decoder.len() < self.max_concurrent {
            let Some(&id) = self.waiting.front() else {
                return;
            };
            let Some(request) = self.requests.get_mut(&id) else {
                self.leave_queue(id);
                continue;
            };
            let Some((choice, params)) = request.pending.pop_front() else {
                self.leave_queue(id);
                continue;
            };
            let stopped = request
                .done
                .get(choice)
                .is_some_and(|d| d.load(Ordering::SeqCst));
            if !stopped {
                match self.decoder.add(params) {
                    Ok(seq) => {
                        request.running.push(seq);
                        self.active.insert(seq, (id, choice));
                    }
                    Err(e) => {
                        if let Some(r) = self.remove(id, SequenceEnd::Error) {
                            let _ = r.reply.send(Event::Rejected(e.to_string()));
                        }
                        continue;
                    }
                }
            }
            let request_done = self
                .requests
                .get(&id)
                .map(|r| (r.pending.is_empty(), r.finished()));
            if let Some((admitted, finished)) = request_done {
                if admitted {
                    self.leave_queue(id);
                }
                if finished {
                    self.requests.remove(&id);
                }
            }
        }
    }

    /// One decoder step; its tokens go to their requests.
    fn step(&mut self) {
        if self.decoder.is_empty() {
            return;
        }
        self.metrics.step(self.decoder.len());
        match self.decoder.step() {
            Ok(events) => {
                for event in events {
                    let Some(&(id, choice)) = self.active.get(&event.id) else {
                        continue;
                    };
                    if let Some(request) = self.requests.get(&id) {
                        // A closed channel is noticed before the next step.
                        let _ = request.reply.send(Event::Token {
                            choice,
                            token: event.token,
                            last: event.finished,
                            logprobs: event.logprobs,
                            prompt_logprobs: event.prompt_logprobs,
                        });
                    }
                    if let Some(reason) = event.finished {
                        self.metrics.sequence_ended(match reason {
                            FinishReason::Eos => SequenceEnd::Eos,
                            FinishReason::Length => SequenceEnd::Length,
                        });
                        self.sequence_left(event.id);
                    }
                }
            }
            Err(e) => {
                // The step's state is unknown: every request in the batch fails, the rest
                // (still waiting) is served as usual.
                let message = format!("decoding failed: {e}");
                tracing::error!("{message}");
                let hit: Vec<u64> = self.active.values().map(|&(id, _)| id).collect();
                for id in hit {
                    if let Some(r) = self.remove(id, SequenceEnd::Error) {
                        let _ = r.reply.send(Event::Failed(message.clone()));
                    }
                }
            }
        }
    }

    /// Ends every request where it stands (the grace period is over).
    fn cut_all(&mut self) {
        let ids: Vec<u64> = self.requests.keys().copied().collect();
        for id in ids {
            if let Some(r) = self.remove(id, SequenceEnd::Shutdown) {
                let _ = r.reply.send(Event::Cut);
            }
        }
    }
}
