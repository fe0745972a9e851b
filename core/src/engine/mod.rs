//! The step-driven inference engine: [`Plan`] sizes the memory, [`Job`] computes embeddings a
//! bounded step at a time over a caller's arena, streaming weights from the file.

mod arena;
mod job;
mod ops;
mod plan;
mod program;

pub use job::{Input, Job, JobOptions, Mode, Parallel, Part, Progress, Sequential, Step, DEFAULT_BUDGET};
pub use ops::l2_normalize;
pub use plan::{Limits, Plan, PlanKind, MAX_PARTS, MAX_TOKENS};
