//! Embeds a sentence, driving the core's state machine step by step as a host loop would.
//!
//! ```sh
//! cargo run --release --example embed_file -- "A sentence to embed"
//! cargo run --release --example embed_file -- path/to/model.gguf "A sentence to embed"
//! ```
//!
//! Without a model path it uses the model built into this example: the real all-MiniLM-L6-v2
//! (Apache-2.0) quantized to Q4_K_M, from `tests/fixtures/models/`.

use std::error::Error;
use std::time::{Duration, Instant};

use stepembed::core::engine::{Input, Job, JobOptions, Limits, Plan, Step};
use stepembed::core::io::{SliceSource, Source};
use stepembed::core::model::{LayerRefs, Model, ModelLoader};
use stepembed::core::tokenizer::{self, IndexBuilder, Lookup};

/// all-MiniLM-L6-v2, Q4_K_M (21 MB), built into the binary.
static DEFAULT_MODEL: &[u8] = include_bytes!("../tests/fixtures/models/minilm-l6-Q4_K_M.gguf");

fn main() -> Result<(), Box<dyn Error>> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let model_path = match args.first() {
        Some(a) if a.ends_with(".gguf") => Some(args.remove(0)),
        _ => None,
    };
    let text = if args.is_empty() { "Hello world".to_owned() } else { args.join(" ") };
    match model_path {
        Some(path) => run(stepembed::io::open(&path).map_err(|e| format!("{path}: {e}"))?, &text),
        None => {
            println!("model: built-in all-MiniLM-L6-v2 Q4_K_M (pass a .gguf path to use another)");
            run(SliceSource::new(DEFAULT_MODEL), &text)
        }
    }
}

/// Loads the model from `source` and embeds `text`, one bounded step at a time.
fn run<S: Source>(mut source: S, text: &str) -> Result<(), Box<dyn Error>> {
    // 1. Metadata only: hyper-parameters, where each tensor is, where the vocab is.
    let mut scratch = [0u8; 4096];
    let mut layers = [LayerRefs::default(); 64];
    let meta = ModelLoader::new(&mut scratch, &mut layers)?.load(&mut source)?;
    let hp = meta.hparams;
    let model = Model::new(meta, &layers[..hp.n_layer])?;
    println!("{} layers, {}-dim, context {} tokens", hp.n_layer, hp.n_embd, hp.n_ctx);

    // 2. The memory plan, allocated once: a job arena, and a vocab index for fast tokenizing.
    let plan = Plan::new(&model, Limits::tokens(hp.n_ctx))?;
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut index_memory = vec![0u8; plan.index_bytes()];
    let mut builder = IndexBuilder::new(&meta.vocab, &mut index_memory)?;
    while builder.step(&mut source, &mut scratch, 4096)? == tokenizer::Step::Pending {}
    let index = builder.finish()?;
    println!("arena {} KiB, vocab index {} KiB", plan.arena_bytes() / 1024, plan.index_bytes() / 1024);

    // 3. The host loop: each step does a bounded amount of work and returns.
    let started = Instant::now();
    let mut job =
        Job::new(model, &plan, &mut arena, Input::Text(text), Lookup::Index(index), JobOptions::default())?;
    let (mut steps, mut longest) = (0u32, Duration::ZERO);
    let embedding = loop {
        let t0 = Instant::now();
        let step = job.step(&mut source)?;
        longest = longest.max(t0.elapsed());
        steps += 1;
        match step {
            // A real host would run its own work here (events, rendering, other requests).
            Step::Pending(_progress) => {}
            Step::Done(embedding) => break embedding.to_vec(),
        }
    };
    let took = started.elapsed();

    println!("text: {text:?} ({} tokens)", job.n_tokens());
    println!(
        "{} steps in {:.1} ms, longest step {:.2} ms",
        steps,
        took.as_secs_f64() * 1e3,
        longest.as_secs_f64() * 1e3
    );
    let head: Vec<String> = embedding.iter().take(8).map(|v| format!("{v:+.5}")).collect();
    let norm = embedding.iter().map(|v| v * v).sum::<f32>().sqrt();
    println!("embedding[{}] = [{}, …]  (L2 norm {norm:.4})", embedding.len(), head.join(", "));
    Ok(())
}
