//! Shared helpers for the criterion benches live in `benches/`.
