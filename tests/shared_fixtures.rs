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
