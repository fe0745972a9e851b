//! The engine against the float64 references: every committed fixture model, every text of
//! texts.jsonl (reference token ids), cosine ≥ 0.99999 and max |Δ| ≤ 1e-4.

mod common;

use common::engine::*;
use stepembed::core::engine::{Input, Job, JobOptions, Limits, Plan, Step};
use stepembed::core::io::SliceSource;
use stepembed::core::model::Model;
use stepembed::core::tokenizer::Lookup;
use stepembed::core::{Error, Malformed};

/// From text, in both tokenizer modes: the reference ids (read back from the job's embedding
/// being equal to the id-input one) and embeddings.
#[test]
fn texts_embed_like_their_reference_ids_in_both_tokenizer_modes() {
    for model in common::MODELS {
        let bytes = common::read(&format!("models/{model}.gguf"));
        let (meta, layers) = load(&bytes);
        let m = Model::new(meta, &layers).unwrap();
        let limits = Limits::tokens(meta.hparams.n_ctx);
        let (fast, small) = (Plan::new(&m, limits).unwrap(), Plan::smallest(&m, limits).unwrap());
        let mut mem = vec![0u8; fast.index_bytes()];
        let index = build_index(&meta, &bytes, &mut mem);
        for case in cases(&common::fixture(&format!("reference/{model}.jsonl"))) {
            let from_ids = embed(m, &fast, &bytes, &case.ids);
            let indexed = embed_input(m, &fast, &bytes, Input::Text(&case.text), Lookup::Index(index));
            let scanned = embed_input(m, &small, &bytes, Input::Text(&case.text), Lookup::Scan);
            assert_eq!(indexed, from_ids, "{model} {:?}", case.text);
            let max = scanned.iter().zip(&from_ids).map(|(a, b)| (a - b).abs()).fold(0.0f32, f32::max);
            assert!(max <= 1e-5, "{model} {:?}: {max}", case.text);
            let (cos, max) = compare(&indexed, &case.embedding);
            assert!(cos >= 0.99999 && max <= 1e-4, "{model} {:?}: cos {cos} max {max}", case.text);
        }
    }
}

#[test]
fn every_fixture_model_matches_the_reference() {
    for model in common::MODELS {
        let bytes = common::read(&format!("models/{model}.gguf"));
        let (meta, layers) = load(&bytes);
        let m = Model::new(meta, &layers).unwrap();
        let plan = Plan::new(&m, Limits::tokens(meta.hparams.n_ctx)).unwrap();
        let mut worst = (1.0f64, 0.0f64);
        for case in cases(&common::fixture(&format!("reference/{model}.jsonl"))) {
            let e = embed(m, &plan, &bytes, &case.ids);
            let (cos, max) = compare(&e, &case.embedding);
            assert!(cos >= 0.99999 && max <= 1e-4, "{model} {:?}: cos {cos} max {max}", case.text);
            worst = (worst.0.min(cos), worst.1.max(max));
        }
        eprintln!("{model}: worst cosine {:.9}, worst max |Δ| {:.2e}", worst.0, worst.1);
    }
}

#[test]
fn lean_and_smallest_plans_give_the_same_embeddings() {
    for model in ["minilm-l6-Q4_K_M", "nomic-small-2L-Q4_K_M", "bert-tiny-F16"] {
        let bytes = common::read(&format!("models/{model}.gguf"));
        let (meta, layers) = load(&bytes);
        let m = Model::new(meta, &layers).unwrap();
        let limits = Limits::tokens(meta.hparams.n_ctx);
        let fast = Plan::new(&m, limits).unwrap();
        let lean = Plan::lean(&m, limits).unwrap();
        let small = Plan::smallest(&m, limits).unwrap();
        assert!(small.memory_bytes() < lean.memory_bytes() && lean.memory_bytes() < fast.memory_bytes());
        assert_eq!(Plan::fit(&m, limits, lean.memory_bytes()).unwrap(), lean);
        for case in cases(&common::fixture(&format!("reference/{model}.jsonl"))).iter().step_by(3) {
            let a = embed(m, &fast, &bytes, &case.ids);
            for plan in [&lean, &small] {
                let b = embed_input(m, plan, &bytes, Input::Text(&case.text), Lookup::Scan);
                let max = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
                assert!(max <= 1e-5, "{model} {:?}: {max}", case.text);
            }
        }
    }
}

#[test]
fn a_batch_equals_its_texts_one_by_one() {
    let bytes = common::read("models/nomic-small-2L-Q4_K_M.gguf");
    let (meta, layers) = load(&bytes);
    let m = Model::new(meta, &layers).unwrap();
    let all = cases(&common::fixture("reference/nomic-small-2L-Q4_K_M.jsonl"));
    let texts: Vec<&[u32]> = all.iter().take(6).map(|c| c.ids.as_slice()).collect();
    let total: usize = texts.iter().map(|t| t.len()).sum();
    let plan = Plan::new(&m, Limits { max_tokens: total, max_texts: texts.len() }).unwrap();
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut job =
        Job::new(m, &plan, &mut arena, Input::IdBatch(&texts), Lookup::Scan, JobOptions::default()).unwrap();
    let mut io = SliceSource::new(&bytes);
    let batch = loop {
        if let Step::Done(e) = job.step(&mut io).unwrap() {
            break e.to_vec();
        }
    };
    let e = meta.hparams.n_embd;
    for (i, case) in all.iter().take(6).enumerate() {
        let (cos, max) = compare(&batch[i * e..(i + 1) * e], &case.embedding);
        assert!(cos >= 0.99999 && max <= 1e-4, "text {i}: cos {cos} max {max}");
    }
}

#[test]
fn a_dropped_job_leaves_nothing_behind_and_errors_poison() {
    let bytes = common::read("models/bert-tiny-Q8_0.gguf");
    let (meta, layers) = load(&bytes);
    let m = Model::new(meta, &layers).unwrap();
    let plan = Plan::new(&m, Limits::tokens(64)).unwrap();
    let ids = [101u32, 7592, 2088, 102];
    let expected = embed(m, &plan, &bytes, &ids);

    // Drop a job halfway, then run a fresh one in the same (now dirty) arena.
    let mut arena = vec![0u8; plan.arena_bytes()];
    let options = JobOptions { budget: 5_000, ..JobOptions::default() };
    {
        let mut job = Job::new(m, &plan, &mut arena, Input::Ids(&ids), Lookup::Scan, options).unwrap();
        let mut io = SliceSource::new(&bytes);
        for _ in 0..20 {
            assert!(matches!(job.step(&mut io).unwrap(), Step::Pending(_)));
        }
    }
    let mut job = Job::new(m, &plan, &mut arena, Input::Ids(&ids), Lookup::Scan, options).unwrap();
    let mut io = SliceSource::new(&bytes);
    let mut steps = 0;
    let got = loop {
        steps += 1;
        if let Step::Done(e) = job.step(&mut io).unwrap() {
            break e.to_vec();
        }
    };
    assert!(steps > 20, "a small budget gives many steps ({steps})");
    assert_eq!(got, expected);

    // A source that ends early: the error comes back on every later step.
    let cut = &bytes[..bytes.len() / 2];
    let mut job =
        Job::new(m, &plan, &mut arena, Input::Ids(&ids), Lookup::Scan, JobOptions::default()).unwrap();
    let mut io = SliceSource::new(cut);
    let err = loop {
        match job.step(&mut io) {
            Ok(Step::Pending(_)) => {}
            Ok(Step::Done(_)) => panic!("finished on half a file"),
            Err(e) => break e,
        }
    };
    assert!(matches!(err, Error::Malformed { what: Malformed::Truncated, .. }), "{err:?}");
    let mut full = SliceSource::new(&bytes);
    assert_eq!(job.step(&mut full).unwrap_err(), err);
}

#[test]
fn bad_inputs_are_typed_errors() {
    let bytes = common::read("models/bert-tiny-Q8_0.gguf");
    let (meta, layers) = load(&bytes);
    let m = Model::new(meta, &layers).unwrap();
    let plan = Plan::new(&m, Limits::tokens(8)).unwrap();
    let mut arena = vec![0u8; plan.arena_bytes()];
    let opts = JobOptions::default();
    let too_long = [101u32; 9];
    assert!(matches!(
        Job::new(m, &plan, &mut arena, Input::Ids(&too_long), Lookup::Scan, opts),
        Err(Error::Input(_))
    ));
    assert!(matches!(
        Job::new(m, &plan, &mut arena, Input::Ids(&[]), Lookup::Scan, opts),
        Err(Error::Input(_))
    ));
    assert!(matches!(
        Job::new(m, &plan, &mut arena, Input::Ids(&[101, 40_000, 102]), Lookup::Scan, opts),
        Err(Error::Input(_))
    ));
    let mut small = vec![0u8; plan.arena_bytes() - 1];
    assert!(matches!(
        Job::new(m, &plan, &mut small, Input::Ids(&[101, 102]), Lookup::Scan, opts),
        Err(Error::ArenaTooSmall { .. })
    ));
    assert!(matches!(
        Plan::fit(&m, Limits::tokens(8), 1000),
        Err(Error::ArenaTooSmall { needed, given: 1000 }) if needed == Plan::smallest(&m, Limits::tokens(8)).unwrap().arena_bytes()
    ));
}

#[test]
fn a_batch_of_texts_in_a_roomy_plan_matches_the_references() {
    // bert (learned positions restart in every text) and nomic (rotary positions).
    for model in ["minilm-l6-Q4_K_M", "nomic-small-2L-Q4_K_M"] {
        let bytes = common::read(&format!("models/{model}.gguf"));
        let (meta, layers) = load(&bytes);
        let m = Model::new(meta, &layers).unwrap();
        let all = cases(&common::fixture(&format!("reference/{model}.jsonl")));
        let texts: Vec<&str> = all.iter().take(9).map(|c| c.text.as_str()).collect();
        // Room for more tokens than the batch has: the job widens its layout.
        let plan = Plan::new(&m, Limits { max_tokens: 512, max_texts: 16 }).unwrap();
        let mut mem = vec![0u8; plan.index_bytes()];
        let index = build_index(&meta, &bytes, &mut mem);
        let batch = embed_input(m, &plan, &bytes, Input::Texts(&texts), Lookup::Index(index));
        let e = meta.hparams.n_embd;
        assert_eq!(batch.len(), texts.len() * e);
        for (i, case) in all.iter().take(9).enumerate() {
            let (cos, max) = compare(&batch[i * e..(i + 1) * e], &case.embedding);
            assert!(cos >= 0.99999 && max <= 1e-4, "{model} text {i}: cos {cos} max {max}");
        }
    }
}

#[test]
fn steps_respect_the_budget() {
    let bytes = common::read("models/minilm-l6-Q4_K_M.gguf");
    let (meta, layers) = load(&bytes);
    let m = Model::new(meta, &layers).unwrap();
    let long = &cases(&common::fixture("reference/minilm-l6-Q4_K_M.jsonl"))
        .into_iter()
        .max_by_key(|c| c.ids.len())
        .unwrap();
    assert_eq!(long.ids.len(), 512);
    let plan = Plan::new(&m, Limits::tokens(512)).unwrap();
    let mut steps_at = Vec::new();
    for budget in [0u64, 200_000, 2_000_000] {
        let mut arena = vec![0u8; plan.arena_bytes()];
        let options = JobOptions { budget, ..JobOptions::default() };
        let mut job = Job::new(m, &plan, &mut arena, Input::Ids(&long.ids), Lookup::Scan, options).unwrap();
        let mut io = SliceSource::new(&bytes);
        let (mut last, mut worst, mut steps) = (0u64, 0u64, 0usize);
        let v = loop {
            steps += 1;
            match job.step(&mut io).unwrap() {
                Step::Pending(p) => {
                    worst = worst.max(p.done - last);
                    last = p.done;
                }
                Step::Done(v) => break v.to_vec(),
            }
        };
        let (cos, _) = compare(&v, &long.embedding);
        assert!(cos >= 0.99999, "budget {budget}: cos {cos}");
        // A step overshoots its budget by at most one item; here the largest is an attention key
        // block (32 queries × 256 keys, each pair 2·head_dim multiply-adds and 750 units more),
        // larger than a weight row (512 tokens × at most 1536 columns).
        let item: u64 = 32 * 256 * (2 * 32 + 750);
        assert!(worst <= budget.max(1) + item, "budget {budget}: a step did {worst} units");
        steps_at.push(steps);
    }
    assert!(steps_at[0] > steps_at[1] && steps_at[1] > steps_at[2], "{steps_at:?}");
}

#[test]
fn plans_and_lookups_of_another_model_or_mode_are_refused() {
    let (tiny, mini) =
        (common::read("models/bert-tiny-Q8_0.gguf"), common::read("models/minilm-l6-Q4_K_M.gguf"));
    let (tiny_meta, tiny_layers) = load(&tiny);
    let (mini_meta, mini_layers) = load(&mini);
    let tiny_model = Model::new(tiny_meta, &tiny_layers).unwrap();
    let mini_model = Model::new(mini_meta, &mini_layers).unwrap();
    let plan = Plan::new(&tiny_model, Limits::tokens(32)).unwrap();
    let mut arena = vec![0u8; 1 << 24];
    let opts = JobOptions::default();
    assert_eq!(
        Job::new(mini_model, &plan, &mut arena, Input::Ids(&[101, 102]), Lookup::Scan, opts).unwrap_err(),
        Error::PlanMismatch
    );
    // The fast plan tokenizes with an index; a scan lookup does not fit its memory.
    assert_eq!(
        Job::new(tiny_model, &plan, &mut arena, Input::Text("hi"), Lookup::Scan, opts).unwrap_err(),
        Error::PlanMismatch
    );
    // Bad limits and too many texts have their own errors.
    assert_eq!(
        Plan::new(&tiny_model, Limits::tokens(1)).unwrap_err(),
        Error::Input(stepembed::core::InputError::BadLimits)
    );
    let texts = ["a"; 3];
    let small = Plan::smallest(&tiny_model, Limits { max_tokens: 32, max_texts: 2 }).unwrap();
    assert_eq!(
        Job::new(tiny_model, &small, &mut arena, Input::Texts(&texts), Lookup::Scan, opts).unwrap_err(),
        Error::Input(stepembed::core::InputError::TooManyTexts { texts: 3, max: 2 })
    );
}
