//! Whole embeddings of arbitrary text with a real (tiny) model, both tokenizer modes, small step
//! budgets: never a panic, always a finite unit vector, and both modes agree exactly.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stepembed_core::engine::{Input, Job, JobOptions, Limits, Plan, Step};
use stepembed_core::io::SliceSource;
use stepembed_core::model::{LayerRefs, Model, ModelLoader, ModelMeta};
use stepembed_core::tokenizer::{IndexBuilder, Lookup, Step as TokStep, VocabIndex};

static MODEL: &[u8] = include_bytes!("../../tests/fixtures/models/bert-tiny-Q8_0.gguf");

/// The model's metadata, layer table and vocab index, loaded once for all runs.
struct Loaded {
    meta: ModelMeta,
    layers: [LayerRefs; 4],
    index: Vec<u8>,
}

fn loaded() -> &'static Loaded {
    static LOADED: std::sync::OnceLock<Loaded> = std::sync::OnceLock::new();
    LOADED.get_or_init(|| {
        let mut io = SliceSource::new(MODEL);
        let mut scratch = [0u8; 4096];
        let mut layers = [LayerRefs::default(); 4];
        let meta = ModelLoader::new(&mut scratch, &mut layers).unwrap().load(&mut io).unwrap();
        let mut index = vec![0u8; VocabIndex::bytes_needed(&meta.vocab).unwrap()];
        let mut builder = IndexBuilder::new(&meta.vocab, &mut index).unwrap();
        while builder.step(&mut io, &mut scratch, u32::MAX).unwrap() == TokStep::Pending {}
        builder.finish().unwrap();
        Loaded { meta, layers, index }
    })
}

fn run(model: Model<'_>, plan: &Plan, text: &str, lookup: Lookup<'_>, budget: u64) -> Vec<f32> {
    let mut arena = vec![0u8; plan.arena_bytes()];
    let options = JobOptions { budget, ..JobOptions::default() };
    let mut job = Job::new(model, plan, &mut arena, Input::Text(text), lookup, options).unwrap();
    let mut io = SliceSource::new(MODEL);
    loop {
        if let Step::Done(e) = job.step(&mut io).unwrap() {
            return e.to_vec();
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&b, rest)) = data.split_first() else { return };
    let text = String::from_utf8_lossy(rest);
    let l = loaded();
    let model = Model::new(l.meta, &l.layers[..l.meta.hparams.n_layer]).unwrap();
    let limits = Limits::tokens(24);
    let (fast, small) = (Plan::new(&model, limits).unwrap(), Plan::smallest(&model, limits).unwrap());
    let index = VocabIndex::open(&l.meta.vocab, &l.index).unwrap();

    let a = run(model, &fast, &text, Lookup::Index(index), 1 + u64::from(b) * 4000);
    let b = run(model, &small, &text, Lookup::Scan, 50_000);
    assert!(a.iter().all(|v| v.is_finite()));
    let norm: f32 = a.iter().map(|v| v * v).sum();
    assert!((norm - 1.0).abs() < 1e-3, "norm² {norm}");
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0.0f32, f32::max);
    assert!(diff <= 1e-5, "modes differ by {diff}");
});
