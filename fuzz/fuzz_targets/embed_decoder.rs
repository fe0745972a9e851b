//! Decoder models (gemma-embedding, qwen3, qwen2) with a mutated header, embedded from token
//! ids with small step budgets: loading either fails with an error or gives a model whose job
//! never panics and ends in an error or a finite unit vector; the unmutated models embed like
//! their own unbudgeted runs, bit for bit.
#![no_main]

use libfuzzer_sys::fuzz_target;
use stepembed_core::engine::{Input, Job, JobOptions, Limits, Plan, Step};
use stepembed_core::io::SliceSource;
use stepembed_core::model::{LayerRefs, Model, ModelLoader};
use stepembed_core::tokenizer::Lookup;

static MODELS: [&[u8]; 4] = [
    include_bytes!("../../tests/fixtures/models/gemma-emb-tiny-3L-Q4_K_M.gguf"),
    include_bytes!("../../tests/fixtures/models/gemma-emb-tiny-2L-Q8_0.gguf"),
    include_bytes!("../../tests/fixtures/models/qwen3-tiny-2L-Q4_K_M.gguf"),
    include_bytes!("../../tests/fixtures/models/qwen2-tiny-2L-Q4_K_M.gguf"),
];

/// Bytes of each file that mutations may touch: the header (metadata and tensor table) and the
/// first weights.
const MUTABLE: usize = 1 << 16;

/// Loads `bytes` and embeds `ids` (taken modulo the vocab) with `budget` units per step. `None`
/// when the file or the job is refused; panics only on a broken promise (a non-finite or
/// non-unit embedding).
fn embed(bytes: &[u8], ids: &[u32], budget: u64) -> Option<Vec<f32>> {
    let mut io = SliceSource::new(bytes);
    let mut scratch = [0u8; 4096];
    let mut layers = [LayerRefs::default(); 8];
    let meta = ModelLoader::new(&mut scratch, &mut layers).ok()?.load(&mut io).ok()?;
    let model = Model::new(meta, layers.get(..meta.hparams.n_layer)?).ok()?;
    let vocab = meta.hparams.n_vocab.max(1) as u32;
    let ids: Vec<u32> = ids.iter().map(|&id| id % vocab).take(meta.hparams.n_ctx.min(64)).collect();
    let plan = Plan::new(&model, Limits::tokens(64)).ok()?;
    let mut arena = vec![0u8; plan.arena_bytes()];
    let options = JobOptions { budget, ..JobOptions::default() };
    let mut job = Job::new(model, &plan, &mut arena, Input::Ids(&ids), Lookup::Scan, options).ok()?;
    let e = loop {
        match job.step(&mut io) {
            Ok(Step::Pending(_)) => {}
            Ok(Step::Done(e)) => break e.to_vec(),
            Err(_) => return None,
        }
    };
    assert!(e.iter().all(|v| v.is_finite()));
    let norm: f32 = e.iter().map(|v| v * v).sum();
    assert!((norm - 1.0).abs() < 1e-3, "norm² {norm}");
    Some(e)
}

fuzz_target!(|data: &[u8]| {
    let [which, budget, n_patches, rest @ ..] = data else { return };
    let original = MODELS[usize::from(*which) % MODELS.len()];
    let patches = usize::from(*n_patches % 8);
    let (patch_bytes, id_bytes) = rest.split_at(rest.len().min(patches * 3));
    let ids: Vec<u32> = id_bytes.chunks_exact(2).map(|p| u32::from(u16::from_le_bytes([p[0], p[1]]))).collect();
    if ids.is_empty() {
        return;
    }
    let budget = 1 + u64::from(*budget) * 20_000;
    let mut bytes = original.to_vec();
    for p in patch_bytes.chunks_exact(3) {
        let at = usize::from(u16::from_le_bytes([p[0], p[1]])) % MUTABLE.min(bytes.len());
        bytes[at] = p[2];
    }
    let mutated = embed(&bytes, &ids, budget);
    if patches == 0 {
        let whole = embed(original, &ids, u64::MAX).expect("the fixture embeds");
        assert_eq!(mutated.as_deref(), Some(whole.as_slice()), "budget {budget}");
    }
});
