//! Loading models and running jobs in tests.
#![allow(dead_code)]

use stepembed::core::engine::{Input, Job, JobOptions, Plan, Step};
use stepembed::core::io::SliceSource;
use stepembed::core::model::{LayerRefs, Model, ModelLoader, ModelMeta};
use stepembed::core::tokenizer::{IndexBuilder, Lookup, Step as TokStep, VocabIndex};

pub struct Case {
    pub text: String,
    pub ids: Vec<u32>,
    pub embedding: Vec<f64>,
}

pub fn cases(path: &std::path::Path) -> Vec<Case> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Case {
                text: v["text"].as_str().unwrap().to_owned(),
                ids: v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect(),
                embedding: v["embedding"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect(),
            }
        })
        .collect()
}

pub fn load(bytes: &[u8]) -> (ModelMeta, Vec<LayerRefs>) {
    let mut scratch = vec![0u8; 4096];
    let mut layers = vec![LayerRefs::default(); 64];
    let mut loader = ModelLoader::new(&mut scratch, &mut layers).unwrap();
    let meta = loader.load(&mut SliceSource::new(bytes)).unwrap();
    let n = meta.hparams.n_layer;
    layers.truncate(n);
    (meta, layers)
}

/// Runs a job on `input` to the end; the embeddings.
pub fn embed_input(
    model: Model<'_>,
    plan: &Plan,
    bytes: &[u8],
    input: Input<'_>,
    lookup: Lookup<'_>,
) -> Vec<f32> {
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut job = Job::new(model, plan, &mut arena, input, lookup, JobOptions::default()).unwrap();
    let mut io = SliceSource::new(bytes);
    loop {
        match job.step(&mut io).unwrap() {
            Step::Pending(_) => {}
            Step::Done(e) => return e.to_vec(),
        }
    }
}

/// Embeds one text given as token ids.
pub fn embed(model: Model<'_>, plan: &Plan, bytes: &[u8], ids: &[u32]) -> Vec<f32> {
    embed_input(model, plan, bytes, Input::Ids(ids), Lookup::Scan)
}

/// Builds the model's vocab index in `mem` (sized by `VocabIndex::bytes_needed`).
pub fn build_index<'m>(meta: &ModelMeta, bytes: &[u8], mem: &'m mut [u8]) -> VocabIndex<'m> {
    let mut builder = IndexBuilder::new(&meta.vocab, mem).unwrap();
    let mut io = SliceSource::new(bytes);
    let mut scratch = [0u8; 4096];
    while builder.step(&mut io, &mut scratch, 4096).unwrap() == TokStep::Pending {}
    builder.finish().unwrap()
}

pub fn compare(ours: &[f32], reference: &[f64]) -> (f64, f64) {
    assert_eq!(ours.len(), reference.len());
    let dot: f64 = ours.iter().zip(reference).map(|(&a, &b)| a as f64 * b).sum();
    let na: f64 = ours.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = reference.iter().map(|b| b * b).sum::<f64>().sqrt();
    let max = ours.iter().zip(reference).map(|(&a, &b)| (a as f64 - b).abs()).fold(0.0, f64::max);
    (dot / (na * nb), max)
}
