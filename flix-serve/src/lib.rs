//! The FLix completions server: one base model with its per-feature adapters answers requests for
//! any feature combination over an OpenAI-compatible HTTP API, batching concurrent requests of
//! different combinations into one forward pass.
