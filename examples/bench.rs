//! Steady-state embedding benchmark: each bench text embedded repeatedly in one process (one
//! thread unless `--threads N`), reporting time per embedding and step times. One JSON line per
//! text length (of the keys 16, 128 and 512 that the texts file holds).
//!
//! ```sh
//! cargo run --release --example bench -- MODEL.gguf [--texts FILE] [--reps 10] [--plan fast|lean|smallest] [--mode exact|fast] [--threads N] [--budget UNITS]
//! ```
//!
//! `bench/compare.py` runs it beside llama.cpp and prints the README's table.

use std::error::Error;
use std::time::Instant;

use serde_json::json;
use stepembed::core::engine::{Input, Mode, PlanKind, Step, DEFAULT_BUDGET};
use stepembed::{Embedder, EmbedderOptions};

fn main() -> Result<(), Box<dyn Error>> {
    let mut args = std::env::args().skip(1);
    let model = args.next().ok_or("usage: bench MODEL.gguf [--texts FILE] [--reps N]")?;
    let (mut texts_path, mut reps) = ("tests/fixtures/bench-texts.json".to_owned(), 10usize);
    let mut plan = PlanKind::Fast;
    let mut mode = Mode::Exact;
    let mut threads = 1usize;
    let mut budget = DEFAULT_BUDGET;
    while let Some(a) = args.next() {
        match a.as_str() {
            "--texts" => texts_path = args.next().ok_or("--texts needs a file")?,
            "--reps" => reps = args.next().ok_or("--reps needs a number")?.parse::<usize>()?.max(1),
            "--plan" => {
                plan = match args.next().as_deref() {
                    Some("fast") => PlanKind::Fast,
                    Some("lean") => PlanKind::Lean,
                    Some("smallest") => PlanKind::Smallest,
                    _ => return Err("--plan needs fast, lean or smallest".into()),
                }
            }
            "--mode" => {
                mode = match args.next().as_deref() {
                    Some("exact") => Mode::Exact,
                    Some("fast") => Mode::Fast,
                    _ => return Err("--mode needs exact or fast".into()),
                }
            }
            "--threads" => threads = args.next().ok_or("--threads needs a number")?.parse::<usize>()?.max(1),
            "--budget" => budget = args.next().ok_or("--budget needs a number")?.parse::<u64>()?.max(1),
            other => return Err(format!("unknown argument {other}").into()),
        }
    }
    let texts: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&texts_path)?)?;
    // The keys the file holds, of 16, 128 and 512 (a file may hold a subset).
    let keys: Vec<&str> = ["16", "128", "512"].into_iter().filter(|k| texts.get(*k).is_some()).collect();
    if keys.is_empty() {
        return Err("bench texts need one of the keys 16, 128, 512".into());
    }
    for key in keys {
        let text = texts[key].as_str().ok_or("bench texts must be strings")?;
        // Plan for the text's length, as a server embedding texts of that size would.
        let options = EmbedderOptions {
            max_tokens: Some(key.parse()?),
            plan,
            mode,
            threads,
            budget,
            ..Default::default()
        };
        let mut embedder = Embedder::open_with(&model, options)?;
        let mut times = Vec::new();
        let mut steps_us = Vec::new();
        let mut tokens = 0;
        for rep in 0..=reps {
            let started = Instant::now();
            let mut job = embedder.job(Input::Text(text))?;
            let mut rep_steps = Vec::new();
            loop {
                let t0 = Instant::now();
                let step = job.step()?;
                rep_steps.push(t0.elapsed().as_secs_f64() * 1e6);
                if let Step::Done(_) = step {
                    break;
                }
            }
            tokens = job.n_tokens();
            // The first run warms caches and page tables; it is not counted.
            if rep > 0 {
                times.push(started.elapsed().as_secs_f64());
                steps_us.extend(rep_steps);
            }
        }
        times.sort_by(f64::total_cmp);
        steps_us.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        let p99 = steps_us[(steps_us.len() * 99).div_ceil(100).saturating_sub(1)];
        let line = json!({
            "tokens": tokens,
            "threads": threads,
            "budget": budget,
            "reps": reps,
            "median_ms": median * 1e3,
            "min_ms": times[0] * 1e3,
            "tokens_per_s": tokens as f64 / median,
            "steps_per_embedding": steps_us.len() / reps,
            "max_step_us": steps_us.last().copied().unwrap_or(0.0),
            "p99_step_us": p99,
            "arena_bytes": embedder.plan().arena_bytes(),
            "index_bytes": embedder.plan().index_bytes(),
        });
        println!("{line}");
    }
    Ok(())
}
