//! Concurrency: many jobs interleaved by one host over one model, and threads with their own
//! embedders over one file, give exactly the sequential results.
//!
//! * core jobs, each in its own arena, stepped round-robin (small budgets: many steps each) over
//!   one shared source that every step seeks around in;
//! * several `Embedder`s over the same file, their `Running` jobs stepped round-robin;
//! * threads, each with its own `Embedder` over the same file, all at once.

mod common;

use common::engine::{build_index, load};
use stepembed::core::engine::{Input, Job, JobOptions, Limits, Plan, Step};
use stepembed::core::io::SliceSource;
use stepembed::core::model::Model;
use stepembed::core::tokenizer::Lookup;
use stepembed::{Embedder, EmbedderOptions};

const MODELS: [&str; 2] = ["bert-tiny-Q8_0", "nomic-small-2L-Q4_K_M"];
/// Work units per step: small, so that the jobs interleave finely.
const BUDGET: u64 = 50_000;

fn model_path(model: &str) -> std::path::PathBuf {
    common::fixture(&format!("models/{model}.gguf"))
}

#[test]
fn core_jobs_stepped_round_robin_over_one_source_match_sequential_runs() {
    let texts = common::texts();
    for model in MODELS {
        let bytes = common::read(&format!("models/{model}.gguf"));
        let (meta, layers) = load(&bytes);
        let m = Model::new(meta, &layers).unwrap();
        let limits = Limits::tokens(128);
        // Half the jobs tokenize with the vocab index, half by streaming the vocab.
        let (fast, small) = (Plan::new(&m, limits).unwrap(), Plan::smallest(&m, limits).unwrap());
        let mut mem = vec![0u8; fast.index_bytes()];
        let index = build_index(&meta, &bytes, &mut mem);
        let setup =
            |i: usize| if i.is_multiple_of(2) { (fast, Lookup::Index(index)) } else { (small, Lookup::Scan) };
        let options = JobOptions { budget: BUDGET, ..JobOptions::default() };

        let sequential: Vec<Vec<f32>> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                let (plan, lookup) = setup(i);
                common::engine::embed_input(m, &plan, &bytes, Input::Text(t), lookup)
            })
            .collect();

        let mut arenas: Vec<Vec<u8>> =
            (0..texts.len()).map(|i| vec![0u8; setup(i).0.arena_bytes()]).collect();
        let mut jobs: Vec<Job<'_>> = arenas
            .iter_mut()
            .zip(&texts)
            .enumerate()
            .map(|(i, (arena, t))| {
                let (plan, lookup) = setup(i);
                Job::new(m, &plan, arena, Input::Text(t), lookup, options).unwrap()
            })
            .collect();
        let mut results: Vec<Option<Vec<f32>>> = vec![None; texts.len()];
        let mut io = SliceSource::new(&bytes);
        let mut rounds = 0;
        while results.iter().any(Option::is_none) {
            rounds += 1;
            for (job, result) in jobs.iter_mut().zip(&mut results) {
                if result.is_none() {
                    if let Step::Done(v) = job.step(&mut io).unwrap() {
                        *result = Some(v.to_vec());
                    }
                }
            }
        }
        assert!(rounds > 10, "{model}: the jobs took {rounds} rounds: too few to interleave");
        for (i, (got, want)) in results.iter().zip(&sequential).enumerate() {
            assert!(got.as_ref() == Some(want), "{model}: text {i} differs when interleaved");
        }
    }
}

fn options() -> EmbedderOptions {
    EmbedderOptions { budget: BUDGET, max_tokens: Some(128), ..EmbedderOptions::default() }
}

#[test]
fn several_embedders_over_one_file_interleaved_match_sequential_runs() {
    let texts = common::texts();
    for model in MODELS {
        let mut sequential_embedder = Embedder::open_with(model_path(model), options()).unwrap();
        let sequential: Vec<Vec<f32>> = texts.iter().map(|t| sequential_embedder.embed(t).unwrap()).collect();

        let mut embedders: Vec<Embedder> =
            (0..4).map(|_| Embedder::open_with(model_path(model), options()).unwrap()).collect();
        // Each embedder takes every fourth text; their jobs advance one step each per round.
        for start in (0..texts.len()).step_by(embedders.len()) {
            let chunk: Vec<usize> = (start..texts.len()).take(embedders.len()).collect();
            let mut running: Vec<_> = embedders
                .iter_mut()
                .zip(&chunk)
                .map(|(e, &i)| e.job(Input::Text(&texts[i])).unwrap())
                .collect();
            let mut done: Vec<Option<Vec<f32>>> = vec![None; chunk.len()];
            while done.iter().any(Option::is_none) {
                for (job, slot) in running.iter_mut().zip(&mut done) {
                    if slot.is_none() {
                        if let Step::Done(v) = job.step().unwrap() {
                            *slot = Some(v.to_vec());
                        }
                    }
                }
            }
            for (&i, got) in chunk.iter().zip(&done) {
                assert!(got.as_ref() == Some(&sequential[i]), "{model}: text {i} differs when interleaved");
            }
        }
    }
}

#[test]
fn threads_with_their_own_embedders_over_one_file_match_sequential_runs() {
    let texts = common::texts();
    for model in MODELS {
        let mut sequential_embedder = Embedder::open_with(model_path(model), options()).unwrap();
        let sequential: Vec<Vec<f32>> = texts.iter().map(|t| sequential_embedder.embed(t).unwrap()).collect();
        let batch: Vec<&str> = texts.iter().map(String::as_str).collect();
        let sequential_batch = sequential_embedder.embed_batch(&batch).unwrap();
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..4)
                .map(|thread| {
                    let (batch, sequential, sequential_batch) = (&batch, &sequential, &sequential_batch);
                    s.spawn(move || {
                        let mut embedder = Embedder::open_with(model_path(model), options()).unwrap();
                        // Each thread starts elsewhere in the list, one by one and in batches.
                        for round in 0..2 {
                            for k in 0..batch.len() {
                                let i = (k + thread * 7) % batch.len();
                                let got = embedder.embed(batch[i]).unwrap();
                                assert!(
                                    got == sequential[i],
                                    "{model}: thread {thread} round {round} text {i}"
                                );
                            }
                        }
                        let got = embedder.embed_batch(batch).unwrap();
                        assert!(got == *sequential_batch, "{model}: thread {thread} batch");
                    })
                })
                .collect();
            for h in handles {
                h.join().unwrap();
            }
        });
    }
}
