//! flix-model
