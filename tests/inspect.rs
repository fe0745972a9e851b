//! `inspect --json` agrees with gguf-py's listing (tests/fixtures/reference/tensors/*.json) on
//! every committed fixture, and the CLI reports broken files with one line and exit code 1
//! (non-finite weights under `--dequant-stats`: tests/cli.rs).

mod common;

use serde_json::Value as Json;
use stepembed::core::io::SliceSource;
use stepembed::inspect;

/// Compares two JSON values, treating numbers as equal when they are the same f64.
fn assert_same(ours: &Json, reference: &Json, path: &str) {
    match (ours, reference) {
        (Json::Number(a), Json::Number(b)) => {
            assert_eq!(a.as_f64(), b.as_f64(), "{path}: {a} vs {b}")
        }
        (Json::Object(a), Json::Object(b)) => {
            let ka: Vec<_> = a.keys().collect();
            let kb: Vec<_> = b.keys().collect();
            assert_eq!(ka, kb, "{path}: keys");
            for (k, v) in a {
                assert_same(v, &b[k], &format!("{path}.{k}"));
            }
        }
        (Json::Array(a), Json::Array(b)) => {
            assert_eq!(a.len(), b.len(), "{path}: length");
            for (i, (x, y)) in a.iter().zip(b).enumerate() {
                assert_same(x, y, &format!("{path}[{i}]"));
            }
        }
        _ => assert_eq!(ours, reference, "{path}"),
    }
}

/// The reference listing without the dequantized-value statistics (checked by the quant tests).
fn reference_listing(model: &str) -> Json {
    let mut r = common::json(&format!("reference/tensors/{model}.json"));
    for t in r["tensors"].as_array_mut().unwrap() {
        let t = t.as_object_mut().unwrap();
        for k in ["sum", "abs_sum", "first", "probes"] {
            t.remove(k);
        }
    }
    r
}

#[test]
fn listing_matches_gguf_py_on_every_fixture() {
    let mut models: Vec<&str> = common::MODELS.to_vec();
    models.extend(["quant-zoo", "vocab-bert-uncased"]);
    for model in models {
        let bytes = common::read(&format!("models/{model}.gguf"));
        let listing = inspect::list(&mut SliceSource::new(&bytes)).unwrap();
        assert_same(&listing.to_json(), &reference_listing(model), model);
        // The same through a real file.
        let mut file = stepembed::io::open(common::fixture(&format!("models/{model}.gguf"))).unwrap();
        assert_eq!(inspect::list(&mut file).unwrap().to_json(), listing.to_json(), "{model}");
    }
}

fn stepembed(args: &[&str]) -> std::process::Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_stepembed")).args(args).output().expect("run stepembed")
}

#[test]
fn cli_lists_a_model_as_text_and_json() {
    let model = common::fixture("models/bert-tiny-Q8_0.gguf");
    let out = stepembed(&["inspect", model.to_str().unwrap()]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("blk.1.ffn_down.weight"), "{text}");
    assert!(text.contains("Q8_0"));

    let out = stepembed(&["inspect", "--json", model.to_str().unwrap()]);
    assert!(out.status.success());
    let json: Json = serde_json::from_slice(&out.stdout).unwrap();
    assert_same(&json, &reference_listing("bert-tiny-Q8_0"), "cli");
}

#[test]
fn cli_reports_a_truncated_file_in_one_line() {
    let bytes = common::read("models/bert-tiny-Q8_0.gguf");
    let dir = std::env::temp_dir().join(format!("stepembed-inspect-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cut = dir.join("truncated.gguf");
    std::fs::write(&cut, &bytes[..bytes.len() - 1000]).unwrap();
    let out = stepembed(&["inspect", "--json", cut.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(out.stdout.is_empty(), "a broken file must not be listed");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(err.contains("file truncated"), "{err}");

    let out = stepembed(&["inspect", dir.join("absent.gguf").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(String::from_utf8(out.stderr).unwrap().lines().count(), 1);

    // A usage error, as clap reports it (exit code 2).
    let out = stepembed(&["inspect", "--bogus", cut.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8(out.stderr).unwrap().contains("unexpected argument '--bogus'"));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dequant_stats_match_gguf_py() {
    let mut models: Vec<&str> = common::MODELS.to_vec();
    models.push("quant-zoo");
    for model in models {
        let bytes = common::read(&format!("models/{model}.gguf"));
        let mut io = SliceSource::new(&bytes);
        let listing = inspect::list(&mut io).unwrap();
        let mut json = listing.to_json();
        listing.add_dequant_stats(&mut io, &mut json).unwrap();
        let reference = common::json(&format!("reference/tensors/{model}.json"));
        for (ours, r) in
            json["tensors"].as_array().unwrap().iter().zip(reference["tensors"].as_array().unwrap())
        {
            let name = r["name"].as_str().unwrap();
            for key in ["sum", "abs_sum"] {
                let (a, b) = (ours[key].as_f64().unwrap(), r[key].as_f64().unwrap());
                assert!((a - b).abs() <= 1e-6 * b.abs().max(1e-12), "{model} {name} {key}: {a} vs {b}");
            }
            assert_eq!(ours["first"], r["first"], "{model} {name}");
        }
    }
}
