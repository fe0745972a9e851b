//! Fault injection: a byte source that fails one read, ends early, fails one seek, or reads
//! short, at an operation chosen by a seed, under loading (`Embedder::from_source`), under a job
//! driven each public way (`Running::step`, `embed`, `embed_batch`) and under the core's
//! `Job::step` directly; over embedded_io sources and std::io ones (through `FromStd`, as files).
//!
//! The contract, asserted for every seed:
//! * a read error of kind K is `Error::Io { kind: K, offset }` with `offset` at or before where
//!   the failing read was (the start of the read the core was making);
//! * a seek error of kind K is `Error::Io { kind: K, .. }`;
//! * an early end of file (a read returning 0 bytes mid-file) is `Malformed::Truncated` at or
//!   before where the read was (the core cannot tell it from a cut file) — or, when it only cut
//!   a read-ahead short (the bytes the core needed had been read), the clean result bit for bit;
//! * nothing else: no other error, and no result after an error or a failed seek;
//! * a job that failed stays failed: later steps return the same error, even on a healthy source;
//! * the embedder is not damaged: a fresh job on the (now healthy) source gives the clean result
//!   bit for bit;
//! * honest short reads (any length from 1 byte) change nothing: bit-identical results.

mod common;

use std::sync::{Arc, Mutex};

use common::faulty::{Fault, FaultPlan, FaultySource, Fired, StdFaulty, Trace, KINDS};
use common::tiny_bert::{self, Rng};
use embedded_io_adapters::std::FromStd;
use stepembed::core::engine::{Input, Job, JobOptions, Limits, Plan, PlanKind, Step};
use stepembed::core::io::{SliceSource, Source};
use stepembed::core::model::Model;
use stepembed::core::tokenizer::Lookup;
use stepembed::core::{Error as CoreError, Malformed};
use stepembed::{Embedder, EmbedderOptions};

/// Seeds run through the embedder and through the core job.
const EMBEDDER_SEEDS: u64 = 6000;
const JOB_SEEDS: u64 = 4000;
/// A small step budget: jobs take many steps, so faults land mid-job.
const BUDGET: u64 = 20_000;

const TEXTS: [&str; 3] = [tiny_bert::TEXT, "hello world", "the lazy dog is over a fox"];

/// How a test drives the embedder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Drive {
    /// `Embedder::job` + `Running::step`, checking that a failed job stays failed.
    Running,
    Embed,
    Batch,
}

const DRIVES: [Drive; 3] = [Drive::Running, Drive::Embed, Drive::Batch];
const PLANS: [PlanKind; 2] = [PlanKind::Fast, PlanKind::Smallest];

fn options(plan: PlanKind) -> EmbedderOptions {
    EmbedderOptions { plan, budget: BUDGET, max_texts: 3, ..EmbedderOptions::default() }
}

/// Runs `drive` once; a failed `Running` job is stepped again, which must give the same error.
fn drive<S: Source>(embedder: &mut Embedder<S>, drive: Drive) -> Attempt {
    let core = |e: stepembed::Error| match e {
        stepembed::Error::Core(e) => e,
        other => panic!("not a core error: {other}"),
    };
    match drive {
        Drive::Running => {
            let mut job = embedder.job(Input::Text(tiny_bert::TEXT)).map_err(core)?;
            loop {
                match job.step() {
                    Ok(Step::Pending(_)) => {}
                    Ok(Step::Done(v)) => return Ok(vec![v.to_vec()]),
                    Err(e) => {
                        let e = core(e);
                        let again = job.step().map(|_| ()).map_err(core);
                        assert_eq!(again, Err(e), "a failed job stays failed");
                        return Err(e);
                    }
                }
            }
        }
        Drive::Embed => embedder.embed(tiny_bert::TEXT).map(|v| vec![v]).map_err(core),
        Drive::Batch => embedder.embed_batch(&TEXTS).map_err(core),
    }
}

/// The embeddings of one attempt, or its error.
type Attempt = Result<Vec<Vec<f32>>, CoreError>;

/// What one scenario run gave: the first attempt (the load's error, or the drive's result) with
/// the source's trace at its end and, when the load succeeded, a second drive on the same
/// embedder with the fault the source injected during it, if any.
struct Run {
    first: Attempt,
    trace: Trace,
    retry: Option<(Attempt, Option<Fired>)>,
}

fn run_embedder<S: Source>(source: S, trace: Arc<Mutex<Trace>>, plan: PlanKind, how: Drive) -> Run {
    let snapshot = || *trace.lock().unwrap();
    match Embedder::from_source(source, options(plan)) {
        Err(stepembed::Error::Core(e)) => Run { first: Err(e), trace: snapshot(), retry: None },
        Err(other) => panic!("not a core error: {other}"),
        Ok(mut embedder) => {
            let first = drive(&mut embedder, how);
            let at_first = snapshot();
            let retry = drive(&mut embedder, how);
            let late_fault = if at_first.fired.is_none() { snapshot().fired } else { None };
            Run { first, trace: at_first, retry: Some((retry, late_fault)) }
        }
    }
}

/// Runs the embedder scenario over an embedded_io source or, with `std`, a std::io one.
fn embedder_scenario(
    bytes: &Arc<[u8]>,
    plan: PlanKind,
    how: Drive,
    faults: FaultPlan,
    seed: u64,
    std: bool,
) -> Run {
    let (source, trace) = FaultySource::new(bytes.clone(), faults, seed);
    if std {
        run_embedder(FromStd::new(StdFaulty(source)), trace, plan, how)
    } else {
        run_embedder(source, trace, plan, how)
    }
}

/// Asserts that an attempt's outcome is what the fault that fired during it (if any) allows
/// (see the module documentation).
fn assert_outcome(outcome: &Attempt, fired: Option<Fired>, clean: &[Vec<f32>], context: &str) {
    let Some(fired) = fired else {
        match outcome {
            Ok(v) => assert!(v == clean, "{context}: a result differs without a fault"),
            Err(e) => panic!("{context}: {e:?} without a fault"),
        }
        return;
    };
    let err = match outcome {
        Ok(v) => {
            // Only a read-ahead can end early harmlessly: the bytes needed were all read.
            assert_eq!(fired.fault, Fault::EarlyEof, "{context}: {fired:?} fired, yet a result came back");
            assert!(v == clean, "{context}: an early end changed the result");
            return;
        }
        Err(e) => *e,
    };
    match (fired.fault, err) {
        (Fault::ReadError(kind), CoreError::Io { kind: got, offset }) => {
            assert_eq!(got, kind, "{context}");
            assert!(offset <= fired.pos, "{context}: error at {offset}, read at {}", fired.pos);
        }
        (Fault::SeekError(kind), CoreError::Io { kind: got, .. }) => assert_eq!(got, kind, "{context}"),
        (Fault::EarlyEof, CoreError::Malformed { what: Malformed::Truncated, offset }) => {
            assert!(offset <= fired.pos, "{context}: truncated at {offset}, read at {}", fired.pos);
        }
        (_, err) => panic!("{context}: {err:?} does not follow from {fired:?}"),
    }
}

/// A fault plan drawn from `rng` for a run of `ops` operations: one fault (or none: pure short
/// reads) and, for half the seeds, short reads of 1 to 1..=64 bytes.
fn draw_plan(rng: &mut Rng, ops: u64) -> FaultPlan {
    let kind = KINDS[rng.below(KINDS.len() as u64) as usize];
    let fault = match rng.below(4) {
        0 => None,
        1 => Some(Fault::ReadError(kind)),
        2 => Some(Fault::EarlyEof),
        _ => Some(Fault::SeekError(kind)),
    };
    let short_reads = (fault.is_none() || rng.below(2) == 0).then(|| 1 + rng.below(64) as usize);
    FaultPlan { fault: fault.map(|f| (rng.below(ops), f)), short_reads }
}

/// Outcome counts of a sweep of seeds.
#[derive(Debug, Default)]
struct Tally {
    io_errors: usize,
    truncated: usize,
    /// An early end of file that only cut a read-ahead: the clean result.
    harmless_eof: usize,
    /// The fault waited for an operation the run never made: the clean result.
    not_fired: usize,
    /// No fault, short reads only: the clean result.
    short_reads_only: usize,
}

impl Tally {
    fn count(&mut self, outcome: &Attempt, fired: Option<Fired>, plan: &FaultPlan) {
        match (outcome, fired) {
            (Err(CoreError::Io { .. }), _) => self.io_errors += 1,
            (Err(_), _) => self.truncated += 1,
            (Ok(_), Some(_)) => self.harmless_eof += 1,
            (Ok(_), None) if plan.fault.is_none() => self.short_reads_only += 1,
            (Ok(_), None) => self.not_fired += 1,
        }
    }
}

#[test]
fn embedder_loads_and_jobs_fail_with_the_injected_error_and_recover() {
    let bytes: Arc<[u8]> = tiny_bert::model().into();
    // The clean result and operation count of every plan × drive.
    let mut cleans = Vec::new();
    for plan in PLANS {
        for how in DRIVES {
            let run = embedder_scenario(&bytes, plan, how, FaultPlan::default(), 0, false);
            let clean = run.first.expect("clean run");
            assert_eq!(run.retry.expect("loaded").0.expect("clean retry"), clean);
            assert!(clean.iter().flatten().all(|x| x.is_finite()));
            cleans.push((plan, how, clean, run.trace.ops));
        }
    }
    let mut tally = Tally::default();
    for seed in 0..EMBEDDER_SEEDS {
        let mut rng = Rng::new(seed);
        let (plan, how, clean, ops) = &cleans[rng.below(cleans.len() as u64) as usize];
        let faults = draw_plan(&mut rng, *ops);
        let std = rng.below(2) == 0;
        let context = format!("seed {seed}: {plan:?} {how:?} std={std} {faults:?}");
        let run = embedder_scenario(&bytes, *plan, *how, faults, seed, std);
        tally.count(&run.first, run.trace.fired, &faults);
        assert_outcome(&run.first, run.trace.fired, clean, &context);
        match run.retry {
            // The fault waited for an operation the first attempt did not reach.
            Some((retry, Some(fired))) => assert_outcome(&retry, Some(fired), clean, &context),
            Some((retry, None)) => {
                assert!(
                    retry.as_ref() == Ok(clean),
                    "{context}: the retry on a healthy source gave {retry:?}"
                )
            }
            None => {}
        }
    }
    eprintln!("embedder: {EMBEDDER_SEEDS} seeds, {tally:?}");
    assert!(tally.io_errors > 0 && tally.truncated > 0 && tally.short_reads_only > 0, "{tally:?}");
}

#[test]
fn core_jobs_fail_with_the_injected_error_stay_poisoned_and_a_fresh_job_recovers() {
    let bytes: Arc<[u8]> = tiny_bert::model().into();
    let (meta, layers) = common::engine::load(&bytes);
    let model = Model::new(meta, &layers).unwrap();
    let limits = Limits::tokens(tiny_bert::N_CTX);
    // Text input, tokenized by streaming the vocab (smallest plan), and token ids (fast plan).
    let ids: Vec<u32> = vec![2, 5, 6, 7, 3];
    let smallest = Plan::smallest(&model, limits).unwrap();
    let fast = Plan::new(&model, limits).unwrap();
    let cases = [(smallest, Input::Text(tiny_bert::TEXT)), (fast, Input::Ids(&ids))];
    let options = JobOptions { budget: BUDGET, ..JobOptions::default() };
    let mut arena = vec![0u8; smallest.arena_bytes().max(fast.arena_bytes())];

    let mut run = |plan: &Plan, input: Input<'_>, io: &mut dyn Source<Error = embedded_io::ErrorKind>| {
        let mut job = Job::new(model, plan, &mut arena, input, Lookup::Scan, options).unwrap();
        let result = loop {
            match job.step(io) {
                Ok(Step::Pending(_)) => {}
                Ok(Step::Done(v)) => break Ok(v.to_vec()),
                Err(e) => break Err(e),
            }
        };
        if let Err(e) = result {
            let again = job.step(&mut SliceSource::new(&bytes)).map(|_| ());
            assert_eq!(again, Err(e), "a failed job stays failed on a healthy source");
        }
        result
    };
    let mut cleans = Vec::new();
    for (plan, input) in &cases {
        let (mut source, trace) = FaultySource::new(bytes.clone(), FaultPlan::default(), 0);
        let clean = run(plan, *input, &mut source).expect("clean run");
        cleans.push((clean, trace.lock().unwrap().ops));
    }
    let mut tally = Tally::default();
    for seed in 0..JOB_SEEDS {
        let mut rng = Rng::new(seed ^ 0xC0FE);
        let case = rng.below(cases.len() as u64) as usize;
        let ((plan, input), (clean, ops)) = (&cases[case], &cleans[case]);
        let faults = draw_plan(&mut rng, *ops);
        let context = format!("seed {seed}: case {case} {faults:?}");
        let (mut source, trace) = FaultySource::new(bytes.clone(), faults, seed);
        let first = run(plan, *input, &mut source);
        let fired = trace.lock().unwrap().fired;
        tally.count(&first.clone().map(|v| vec![v]), fired, &faults);
        assert_outcome(&first.map(|v| vec![v]), fired, std::slice::from_ref(clean), &context);
        // A fresh job in the same (dirty) arena on a healthy source.
        let fresh = run(plan, *input, &mut FaultySource::new(bytes.clone(), FaultPlan::default(), 0).0);
        assert!(fresh.as_ref() == Ok(clean), "{context}: the fresh job gave {fresh:?}");
    }
    eprintln!("core job: {JOB_SEEDS} seeds, {tally:?}");
    assert!(tally.io_errors > 0 && tally.truncated > 0 && tally.short_reads_only > 0, "{tally:?}");
}
