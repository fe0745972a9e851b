//! Step times per stage: embeds one text a few times through one `Embedder` and prints, for
//! the last run, how many steps each stage took and their median and longest time (a step is
//! counted under the stage it worked on). For checking the step-time target per plan and model.
//!
//! ```sh
//! cargo run --release --example step_times -- MODEL.gguf [--plan fast|lean|smallest] [--threads N] [--runs 3] [TEXT]
//! ```
//!
//! Without TEXT it embeds "Hello world". Steps are wall time: on a busy machine the longest
//! ones measure the scheduler, so compare medians there.

use std::collections::BTreeMap;
use std::error::Error;
use std::time::Instant;

use stepembed::core::engine::{Input, PlanKind, Step};
use stepembed::{Embedder, EmbedderOptions};

fn main() -> Result<(), Box<dyn Error>> {
    let usage = "usage: step_times MODEL.gguf [--plan fast|lean|smallest] [--threads N] [--runs N] [TEXT]";
    let mut args = std::env::args().skip(1);
    let model = args.next().ok_or(usage)?;
    let mut options = EmbedderOptions { threads: 1, max_texts: 1, ..EmbedderOptions::default() };
    let (mut runs, mut text) = (3usize, "Hello world".to_owned());
    while let Some(a) = args.next() {
        let mut value = || args.next().ok_or(usage);
        match a.as_str() {
            "--plan" => {
                options.plan = match value()?.as_str() {
                    "fast" => PlanKind::Fast,
                    "lean" => PlanKind::Lean,
                    "smallest" => PlanKind::Smallest,
                    _ => return Err(usage.into()),
                }
            }
            "--threads" => options.threads = value()?.parse()?,
            "--runs" => runs = value()?.parse::<usize>()?.max(1),
            _ => text = a,
        }
    }
    let mut embedder = Embedder::open_with(&model, options)?;
    let mut stages: BTreeMap<&'static str, Vec<u128>> = BTreeMap::new();
    for _ in 0..runs {
        stages.clear();
        let mut job = embedder.job(Input::Text(&text))?;
        let mut stage = "tokenize";
        loop {
            let start = Instant::now();
            let step = job.step()?;
            stages.entry(stage).or_default().push(start.elapsed().as_micros());
            match step {
                Step::Pending(progress) => stage = progress.stage,
                Step::Done(_) => break,
            }
        }
    }
    println!("{:>14}  {:>5}  {:>10}  {:>10}", "stage", "steps", "median µs", "longest µs");
    for (stage, mut times) in stages {
        times.sort_unstable();
        let (median, longest) = (times[times.len() / 2], times[times.len() - 1]);
        println!("{stage:>14}  {:>5}  {median:>10}  {longest:>10}", times.len());
    }
    Ok(())
}
