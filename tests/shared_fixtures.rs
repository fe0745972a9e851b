//! The second suite: what needs the big fixtures in ../shared/fixtures (the 90 MB 768-dim
//! benchmark model and the models not copied into the repository). Each test says loudly when
//! the fixtures are absent; CI sets STEPEMBED_REQUIRE_SHARED=1 so that absence fails.

mod common;

use stepembed::inspect;

/// Models only in ../shared/fixtures.
const SHARED_MODELS: &[&str] = &["nomic-synth-12L-Q4_K_M", "bert-synth-2L-Q5_K_M"];

#[test]
fn listing_matches_gguf_py_on_the_shared_models() {
    let Some(dir) = common::shared_fixtures() else {
        return;
    };
    for model in SHARED_MODELS {
        let mut file = stepembed::io::open(dir.join(format!("models/{model}.gguf"))).unwrap();
        let listing = inspect::list(&mut file).unwrap();
        let reference: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join(format!("reference/tensors/{model}.json"))).unwrap(),
        )
        .unwrap();
        let ours = listing.to_json();
        assert_eq!(ours["metadata"], reference["metadata"], "{model}");
        let tensors = reference["tensors"].as_array().unwrap();
        assert_eq!(listing.tensors.len(), tensors.len());
        for (t, r) in listing.tensors.iter().zip(tensors) {
            let ours = inspect::tensor_json(t);
            for key in ["name", "type", "ne", "data_offset", "n_bytes"] {
                assert_eq!(ours[key], r[key], "{model} {} {key}", t.name);
            }
        }
    }
}

use common::engine::*;
use stepembed::core::engine::{Input, Limits, Plan};
use stepembed::core::model::Model;
use stepembed::core::tokenizer::Lookup;

/// Every text of texts.jsonl on every shared model, against the float64 reference.
#[test]
fn shared_models_match_the_reference() {
    let Some(dir) = common::shared_fixtures() else {
        return;
    };
    for model in SHARED_MODELS {
        let bytes = std::fs::read(dir.join(format!("models/{model}.gguf"))).unwrap();
        let (meta, layers) = load(&bytes);
        let m = Model::new(meta, &layers).unwrap();
        let plan = Plan::new(&m, Limits::tokens(meta.hparams.n_ctx)).unwrap();
        let mut mem = vec![0u8; plan.index_bytes()];
        let index = build_index(&meta, &bytes, &mut mem);
        let mut worst = (1.0f64, 0.0f64);
        for case in cases(&dir.join(format!("reference/{model}.jsonl"))) {
            let e = embed_input(m, &plan, &bytes, Input::Text(&case.text), Lookup::Index(index));
            assert_eq!(e, embed(m, &plan, &bytes, &case.ids), "{model} {:?}: ids differ", case.text);
            let (cos, max) = compare(&e, &case.embedding);
            assert!(cos >= 0.99999 && max <= 1e-4, "{model} {:?}: cos {cos} max {max}", case.text);
            worst = (worst.0.min(cos), worst.1.max(max));
        }
        eprintln!("{model}: worst cosine {:.9}, worst max |Δ| {:.2e}", worst.0, worst.1);
    }
}

/// "Hello world" on the 768-dim, 12-layer model in a 96 KiB arena.
#[test]
fn hello_world_in_96_kib() {
    let Some(dir) = common::shared_fixtures() else {
        return;
    };
    let model = "nomic-synth-12L-Q4_K_M";
    let bytes = std::fs::read(dir.join(format!("models/{model}.gguf"))).unwrap();
    let (meta, layers) = load(&bytes);
    let m = Model::new(meta, &layers).unwrap();
    let case = cases(&dir.join(format!("reference/{model}.jsonl"))).into_iter().next().unwrap();
    assert_eq!(case.text, "Hello world");
    let plan = Plan::fit(&m, Limits::tokens(case.ids.len()), 96 * 1024).unwrap();
    assert!(plan.arena_bytes() <= 96 * 1024, "{}", plan.arena_bytes());
    assert_eq!(plan.index_bytes(), 0, "no vocab index fits: the tokenizer streams the vocab");
    eprintln!("Hello world: {} bytes of arena", plan.arena_bytes());
    let e = embed_input(m, &plan, &bytes, Input::Text(&case.text), Lookup::Scan);
    let (cos, max) = compare(&e, &case.embedding);
    assert!(cos >= 0.99999 && max <= 1e-4, "cos {cos} max {max}");
}
