//! The engine against the float64 references: every committed fixture model, every text of
//! texts.jsonl (reference token ids), cosine ≥ 0.99999 and max |Δ| ≤ 1e-4.

mod common;

use stepembed::core::engine::{Input, Job, JobOptions, Limits, Plan, Step};
use stepembed::core::io::SliceSource;
use stepembed::core::model::{LayerRefs, Model, ModelLoader, ModelMeta};

struct Case {
    text: String,
    ids: Vec<u32>,
    embedding: Vec<f64>,
}

fn cases(model: &str) -> Vec<Case> {
    let text = String::from_utf8(common::read(&format!("reference/{model}.jsonl"))).unwrap();
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            Case {
                text: v["text"].as_str().unwrap().to_owned(),
                ids: v["ids"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_u64().unwrap() as u32)
                    .collect(),
                embedding: v["embedding"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|x| x.as_f64().unwrap())
                    .collect(),
            }
        })
        .collect()
}

fn load(bytes: &[u8]) -> (ModelMeta, Vec<LayerRefs>) {
    let mut scratch = vec![0u8; 4096];
    let mut layers = vec![LayerRefs::default(); 64];
    let mut loader = ModelLoader::new(&mut scratch, &mut layers).unwrap();
    let meta = loader.load(&mut SliceSource::new(bytes)).unwrap();
    let n = meta.hparams.n_layer;
    layers.truncate(n);
    (meta, layers)
}

fn embed(model: Model<'_>, plan: &Plan, bytes: &[u8], ids: &[u32]) -> Vec<f32> {
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut job = Job::new(
        model,
        plan,
        &mut arena,
        Input::Ids(ids),
        JobOptions::default(),
    )
    .unwrap();
    let mut io = SliceSource::new(bytes);
    loop {
        match job.step(&mut io).unwrap() {
            Step::Pending(_) => {}
            Step::Done(e) => return e.to_vec(),
        }
    }
}

fn compare(ours: &[f32], reference: &[f64]) -> (f64, f64) {
    assert_eq!(ours.len(), reference.len());
    let dot: f64 = ours
        .iter()
        .zip(reference)
        .map(|(&a, &b)| a as f64 * b)
        .sum();
    let na: f64 = ours.iter().map(|&a| (a as f64).powi(2)).sum::<f64>().sqrt();
    let nb: f64 = reference.iter().map(|b| b * b).sum::<f64>().sqrt();
    let max = ours
        .iter()
        .zip(reference)
        .map(|(&a, &b)| (a as f64 - b).abs())
        .fold(0.0, f64::max);
    (dot / (na * nb), max)
}

#[test]
fn every_fixture_model_matches_the_reference() {
    for model in common::MODELS {
        let bytes = common::read(&format!("models/{model}.gguf"));
        let (meta, layers) = load(&bytes);
        let m = Model::new(meta, &layers).unwrap();
        let plan = Plan::new(&m, Limits::tokens(meta.hparams.n_ctx)).unwrap();
        let mut worst = (1.0f64, 0.0f64);
        for case in cases(model) {
            let e = embed(m, &plan, &bytes, &case.ids);
            let (cos, max) = compare(&e, &case.embedding);
            assert!(
                cos >= 0.99999 && max <= 1e-4,
                "{model} {:?}: cos {cos} max {max}",
                case.text
            );
            worst = (worst.0.min(cos), worst.1.max(max));
        }
        eprintln!(
            "{model}: worst cosine {:.9}, worst max |Δ| {:.2e}",
            worst.0, worst.1
        );
    }
}
