//! stepembed: std adapter over stepembed-core.
pub use stepembed_core as core;
