//! Fast mode (int8 activations in the weight matrix products) against the float64 references
//! and against itself: cosine ≥ 0.9990 for every fixture model and text, the same bits for any
//! budget and batching, exact results where no weight type has an int8 kernel.

mod common;

use common::engine::*;
use stepembed::core::engine::{Input, Job, JobOptions, Limits, Mode, Plan, Step};
use stepembed::core::io::SliceSource;
use stepembed::core::model::Model;
use stepembed::core::tokenizer::Lookup;
use stepembed::core::Error;

const FAST: JobOptions = JobOptions {
    normalize: true,
    budget: stepembed::core::engine::DEFAULT_BUDGET,
    truncate: true,
    mode: Mode::Fast,
};

/// Runs a job to the end; the embeddings, the steps taken and the most work units one step did.
fn run(
    model: Model<'_>,
    plan: &Plan,
    bytes: &[u8],
    input: Input<'_>,
    options: JobOptions,
) -> (Vec<f32>, usize, u64) {
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut job = Job::new(model, plan, &mut arena, input, Lookup::Scan, options).unwrap();
    let mut io = SliceSource::new(bytes);
    let (mut steps, mut last, mut worst) = (0usize, 0u64, 0u64);
    loop {
        steps += 1;
        match job.step(&mut io).unwrap() {
            Step::Pending(p) => {
                worst = worst.max(p.done - last);
                last = p.done;
            }
            Step::Done(e) => return (e.to_vec(), steps, worst),
        }
    }
}

fn fast_plan(m: &Model<'_>, limits: Limits) -> Plan {
    Plan::new(m, limits).unwrap().with_mode(Mode::Fast).unwrap()
}

/// Without the residual pass (`quantize_q8_refined`) minilm-l6-Q4_K_M's 2- and 3-token texts
/// reached only 0.99890 and 0.99897: its hidden states have a few large channels that set the
/// int8 scale of the 31 others in their block. With it (tokens above 1% relative error get a
/// second int8 pass) its worst text is at 0.99971.
#[test]
fn every_fixture_model_stays_within_cosine_0_999_of_the_reference() {
    for model in common::MODELS {
        let bytes = common::read(&format!("models/{model}.gguf"));
        let (meta, layers) = load(&bytes);
        let m = Model::new(meta, &layers).unwrap();
        let plan = fast_plan(&m, Limits::tokens(meta.hparams.n_ctx));
        let exact_plan = Plan::new(&m, Limits::tokens(meta.hparams.n_ctx)).unwrap();
        let (mut worst, mut worst_exact, mut n) = (1.0f64, 1.0f64, 0);
        for case in cases(&common::fixture(&format!("reference/{model}.jsonl"))) {
            let (fast, _, _) = run(m, &plan, &bytes, Input::Ids(&case.ids), FAST);
            let (cos, _) = compare(&fast, &case.embedding);
            assert!(cos >= 0.9990, "{model} {:?}: cos {cos}", case.text);
            worst = worst.min(cos);
            let exact = embed(m, &exact_plan, &bytes, &case.ids);
            worst_exact = worst_exact.min(compare(&exact, &case.embedding).0);
            n += 1;
        }
        assert!(n > 0, "{model}: no reference texts");
        eprintln!("{model}: {n} texts, worst cosine fast {worst:.6}, exact {worst_exact:.9}");
    }
}

#[test]
fn fast_results_are_the_same_bits_for_any_budget_and_in_a_batch() {
    for model in ["minilm-l6-Q4_K_M", "nomic-small-2L-Q4_K_M", "bert-tiny-Q8_0"] {
        let bytes = common::read(&format!("models/{model}.gguf"));
        let (meta, layers) = load(&bytes);
        let m = Model::new(meta, &layers).unwrap();
        let all = cases(&common::fixture(&format!("reference/{model}.jsonl")));
        let texts: Vec<&[u32]> = all.iter().take(4).map(|c| c.ids.as_slice()).collect();
        let tokens: usize = texts.iter().map(|t| t.len()).sum();
        let plan = fast_plan(&m, Limits { max_tokens: tokens.max(2), max_texts: 4 });
        let (batch, default_steps, _) = run(m, &plan, &bytes, Input::IdBatch(&texts), FAST);
        let (tiny, tiny_steps, worst) =
            run(m, &plan, &bytes, Input::IdBatch(&texts), JobOptions { budget: 1, ..FAST });
        assert_eq!(batch, tiny, "{model}: budget 1 vs default");
        assert!(tiny_steps > 10 * default_steps, "{model}: {tiny_steps} vs {default_steps} steps");
        // Budget 1: one unit per step, the largest a weight row of `tokens` tokens.
        assert!(worst <= 64 * tokens as u64 * meta.hparams.n_ff as u64, "{model}: {worst} units in a step");
        // Batched, a text gets another layout (FFN slab widths) than alone: the down
        // projection's f32 sums are added in another order, the next int8 roundings differ where
        // a value lies at a rounding boundary, and the result is another sample of the int8
        // error (about 1e-4 in cosine apart), as close to the reference.
        let e = meta.hparams.n_embd;
        for (i, case) in all.iter().take(4).enumerate() {
            let (cos, _) = compare(&batch[i * e..(i + 1) * e], &case.embedding);
            assert!(cos >= 0.999, "{model} text {i}: cos {cos}");
        }
    }
}

#[test]
fn fast_mode_differs_from_exact_only_where_a_weight_type_has_an_int8_kernel() {
    for (model, int8) in [("bert-tiny-F16", false), ("bert-tiny-Q8_0", true), ("minilm-l6-Q4_K_M", true)] {
        let bytes = common::read(&format!("models/{model}.gguf"));
        let (meta, layers) = load(&bytes);
        let m = Model::new(meta, &layers).unwrap();
        let case = &cases(&common::fixture(&format!("reference/{model}.jsonl")))[0];
        let limits = Limits::tokens(meta.hparams.n_ctx);
        let plan = fast_plan(&m, limits);
        let (fast, _, _) = run(m, &plan, &bytes, Input::Ids(&case.ids), FAST);
        let (exact, _, _) = run(m, &plan, &bytes, Input::Ids(&case.ids), JobOptions::default());
        assert_eq!(fast != exact, int8, "{model}");
        // An exact job on the fast plan computes what it computes on the exact plan.
        let (cos, max) = compare(&exact, &case.embedding);
        assert!(cos >= 0.99999 && max <= 1e-4, "{model}: exact on the fast plan: cos {cos} max {max}");
    }
}

#[test]
fn fast_plans_are_larger_and_fast_jobs_need_one() {
    let bytes = common::read("models/minilm-l6-Q4_K_M.gguf");
    let (meta, layers) = load(&bytes);
    let m = Model::new(meta, &layers).unwrap();
    let limits = Limits::tokens(512);
    let exact = Plan::new(&m, limits).unwrap();
    let fast = exact.with_mode(Mode::Fast).unwrap();
    assert_eq!(exact.with_mode(Mode::Exact).unwrap(), exact);
    assert_eq!(fast.with_mode(Mode::Fast).unwrap(), fast);
    // 512 tokens × 384 / 32 blocks of 40 bytes at least.
    assert!(
        fast.arena_bytes() >= exact.arena_bytes() + 512 * 12 * 40,
        "{} vs {}",
        fast.arena_bytes(),
        exact.arena_bytes()
    );
    let ids = &cases(&common::fixture("reference/minilm-l6-Q4_K_M.jsonl"))[0].ids;
    let mut arena = vec![0u8; exact.arena_bytes()];
    let e = Job::new(m, &exact, &mut arena, Input::Ids(ids), Lookup::Scan, FAST).unwrap_err();
    assert_eq!(e, Error::PlanMismatch);
    // fit_mode counts the int8 region: the memory of the fast plan without it is not enough.
    let fitted = Plan::fit_mode(&m, limits, fast.memory_bytes(), Mode::Fast).unwrap();
    assert_eq!(fitted, fast);
    let smaller = Plan::fit_mode(&m, limits, fast.memory_bytes() - 1, Mode::Fast).unwrap();
    assert!(smaller.memory_bytes() < fast.memory_bytes());
    // The smallest plan works in fast mode too (another layout: another sample of the int8
    // error, see the batch test).
    let case = cases(&common::fixture("reference/minilm-l6-Q4_K_M.jsonl"))
        .into_iter()
        .max_by_key(|c| c.ids.len())
        .unwrap();
    let small = Plan::smallest(&m, limits).unwrap().with_mode(Mode::Fast).unwrap();
    for plan in [&fast, &small] {
        let (v, _, _) = run(m, plan, &bytes, Input::Ids(&case.ids), FAST);
        let (cos, _) = compare(&v, &case.embedding);
        assert!(cos >= 0.999, "fast mode on {} arena bytes: cos {cos}", plan.arena_bytes());
    }
}

/// Fast-mode steps at the default budget, timed (reported, not asserted: the machine is shared);
/// asserted: no step does more than its budget plus one unit.
#[test]
fn fast_steps_respect_the_budget() {
    let bytes = common::read("models/minilm-l6-Q4_K_M.gguf");
    let (meta, layers) = load(&bytes);
    let m = Model::new(meta, &layers).unwrap();
    let long = cases(&common::fixture("reference/minilm-l6-Q4_K_M.jsonl"))
        .into_iter()
        .max_by_key(|c| c.ids.len())
        .unwrap();
    let plan = fast_plan(&m, Limits::tokens(512));
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut job = Job::new(m, &plan, &mut arena, Input::Ids(&long.ids), Lookup::Scan, FAST).unwrap();
    let mut io = SliceSource::new(&bytes);
    let (mut last, mut worst_units, mut times) = (0u64, 0u64, Vec::new());
    let v = loop {
        let t = std::time::Instant::now();
        let s = job.step(&mut io).unwrap();
        times.push(t.elapsed());
        match s {
            Step::Pending(p) => {
                worst_units = worst_units.max(p.done - last);
                last = p.done;
            }
            Step::Done(v) => break v.to_vec(),
        }
    };
    assert!(compare(&v, &long.embedding).0 >= 0.999);
    // The largest unit: an attention key block (see tests/engine.rs), larger than a weight row.
    let item: u64 = 32 * 256 * (2 * 32 + 750);
    assert!(worst_units <= stepembed::core::engine::DEFAULT_BUDGET + item, "{worst_units}");
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut job =
        Job::new(m, &plan, &mut arena, Input::Ids(&long.ids), Lookup::Scan, JobOptions::default()).unwrap();
    let mut exact_times = Vec::new();
    loop {
        let t = std::time::Instant::now();
        let done = matches!(job.step(&mut io).unwrap(), Step::Done(_));
        exact_times.push(t.elapsed());
        if done {
            break;
        }
    }
    exact_times.sort();
    let q = |q: f64| exact_times[((exact_times.len() - 1) as f64 * q) as usize];
    eprintln!(
        "exact mode, {} tokens: {} steps, median {:?}, p99 {:?}, max {:?}",
        long.ids.len(),
        exact_times.len(),
        q(0.5),
        q(0.99),
        q(1.0)
    );
    times.sort();
    let p = |q: f64| times[((times.len() - 1) as f64 * q) as usize];
    eprintln!(
        "fast mode, {} tokens: {} steps, median {:?}, p99 {:?}, max {:?}",
        long.ids.len(),
        times.len(),
        p(0.5),
        p(0.99),
        p(1.0)
    );
}

/// FNV-1a (64 bits) of the f32 bits of `v`.
fn fnv(v: &[f32]) -> u64 {
    v.iter()
        .flat_map(|x| x.to_bits().to_le_bytes())
        .fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// Fast mode's embeddings, pinned bit for bit: the hashes were recorded from the build that
/// quantized every product's input afresh, so reusing blocks quantized once (or any change to
/// the int8 arithmetic) must reproduce them exactly. Re-recorded when the residual pass came
/// (`quantize_q8_refined`): minilm's three texts and nomic-small's second have tokens above
/// its threshold and changed on purpose; bert-synth's did not (none of their tokens is). And
/// again when each value became the nearest step of its block's stored f32 scale rather than of
/// `amax / 127` unrounded: minilm's third text changed (some values moved by one step).
#[test]
fn fast_embeddings_are_pinned_bit_for_bit() {
    let pinned: &[(&str, &[u64])] = &[
        ("minilm-l6-Q4_K_M", &[0x1472_d01c_d13e_14ce, 0x5e78_3a9e_3ed4_7236, 0x7faa_aecc_835e_786d]),
        ("nomic-small-2L-Q4_K_M", &[0xee98_ef7a_ab58_ecec, 0x3a2e_6b1e_9911_9fca, 0x31a3_48a8_6106_cfcf]),
        ("bert-synth-2L-Q4_K_M", &[0x3867_fa6a_6d0f_eb1c, 0x6cec_60f6_50ad_cd2b, 0x73b5_b3b4_e62f_711b]),
    ];
    for (model, hashes) in pinned {
        let bytes = common::read(&format!("models/{model}.gguf"));
        let (meta, layers) = load(&bytes);
        let m = Model::new(meta, &layers).unwrap();
        let plan = fast_plan(&m, Limits::tokens(meta.hparams.n_ctx));
        let all = cases(&common::fixture(&format!("reference/{model}.jsonl")));
        let got: Vec<u64> =
            all.iter().take(3).map(|c| fnv(&run(m, &plan, &bytes, Input::Ids(&c.ids), FAST).0)).collect();
        assert_eq!(&got, hashes, "{model}");
    }
}
