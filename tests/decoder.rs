//! The decoder architectures (gemma-embedding, qwen3, qwen2) against their float64 references
//! (`tools/reference/decoder.py`): every line of every reference through `Input::Ids` at
//! cosine ≥ 0.99999, the same vectors bit for bit with a tiny step budget and in one batch; and
//! text tokenized as llama.cpp does (SentencePiece for gemma-embedding, BPE for qwen), embedding
//! exactly as its ids do.

mod common;

use common::engine::{compare, embed, load};
use common::gguf_layout;
use stepembed::core::engine::{Input, Job, JobOptions, Limits, Mode, Plan, Step};
use stepembed::core::io::SliceSource;
use stepembed::core::model::{Arch, LayerRefs, Model, ModelLoader, Pooling};
use stepembed::core::tokenizer::{Lookup, TokenizerKind};
use stepembed::core::{Error, Malformed, Name, Unsupported};

/// The decoder fixtures, their architecture and pooling.
const MODELS: &[(&str, Arch, Pooling)] = &[
    ("gemma-emb-tiny-3L-Q4_K_M", Arch::GemmaEmbedding, Pooling::Mean),
    ("gemma-emb-tiny-2L-Q8_0", Arch::GemmaEmbedding, Pooling::Mean),
    ("qwen3-tiny-2L-Q4_K_M", Arch::Qwen3, Pooling::Last),
    ("qwen2-tiny-2L-Q4_K_M", Arch::Qwen2, Pooling::Mean),
];

/// One reference line: the ids and the float64 embedding.
struct Case {
    ids: Vec<u32>,
    embedding: Vec<f64>,
}

fn cases(model: &str) -> Vec<Case> {
    let path = common::fixture(&format!("reference/decoder/{model}.jsonl"));
    let text = std::fs::read_to_string(&path).unwrap();
    let cases: Vec<Case> = text
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let numbers = |key: &str| v[key].as_array().unwrap().clone();
            Case {
                ids: numbers("ids").iter().map(|x| x.as_u64().unwrap() as u32).collect(),
                embedding: numbers("embedding").iter().map(|x| x.as_f64().unwrap()).collect(),
            }
        })
        .collect();
    assert!(cases.len() >= 10, "{model}: {} cases", cases.len());
    cases
}

/// Runs `input` to the end with `budget` work units per step: the embeddings and the steps.
fn run(model: Model<'_>, plan: &Plan, bytes: &[u8], input: Input<'_>, budget: u64) -> (Vec<f32>, usize) {
    run_with(model, plan, bytes, input, JobOptions { budget, ..JobOptions::default() })
}

/// [`run`] with any job options.
fn run_with(
    model: Model<'_>,
    plan: &Plan,
    bytes: &[u8],
    input: Input<'_>,
    options: JobOptions,
) -> (Vec<f32>, usize) {
    let mut arena = vec![0u8; plan.arena_bytes()];
    let mut job = Job::new(model, plan, &mut arena, input, Lookup::Scan, options).unwrap();
    let mut io = SliceSource::new(bytes);
    let mut steps = 0;
    loop {
        steps += 1;
        if let Step::Done(e) = job.step(&mut io).unwrap() {
            return (e.to_vec(), steps);
        }
    }
}

#[test]
fn the_fixtures_load_as_their_architecture() {
    for &(model, arch, pooling) in MODELS {
        let bytes = common::read(&format!("models/{model}.gguf"));
        let (meta, _) = load(&bytes);
        assert_eq!((meta.arch, meta.hparams.pooling), (arch, pooling), "{model}");
        let tokenizer =
            if arch == Arch::GemmaEmbedding { TokenizerKind::SentencePiece } else { TokenizerKind::Bpe };
        assert_eq!(meta.tokenizer, tokenizer, "{model}");
        let hp = meta.hparams;
        assert_eq!(
            (hp.n_embd, hp.n_head, hp.n_head_kv, hp.causal),
            (256, 4, 2, arch != Arch::GemmaEmbedding)
        );
        let head = if arch == Arch::Qwen3 { 128 } else { 64 };
        assert_eq!((hp.head_dim_k, hp.head_dim_v, hp.n_rot), (head, head, head), "{model}");
        assert_eq!(meta.dense.is_some(), model.starts_with("gemma-emb-tiny-3L"), "{model}");
    }
}

#[test]
fn every_decoder_reference_line_matches() {
    for &(model, ..) in MODELS {
        let bytes = common::read(&format!("models/{model}.gguf"));
        let (meta, layers) = load(&bytes);
        let m = Model::new(meta, &layers).unwrap();
        let plan = Plan::new(&m, Limits::tokens(meta.hparams.n_ctx)).unwrap();
        let mut worst = (1.0f64, 0.0f64);
        for case in cases(model) {
            let e = embed(m, &plan, &bytes, &case.ids);
            let (cos, max) = compare(&e, &case.embedding);
            assert!(cos >= 0.99999, "{model} ({} ids): cos {cos} max {max}", case.ids.len());
            worst = (worst.0.min(cos), worst.1.max(max));
        }
        eprintln!("{model}: worst cosine {:.9}, worst max |Δ| {:.2e}", worst.0, worst.1);
    }
}

/// Fast mode (int8 activations in the quantized products) on the decoder fixtures: cosine ≥ 0.999
/// to the float64 reference on every line, the target the encoder fixtures meet
/// (tests/fast_mode.rs).
#[test]
fn fast_mode_stays_within_cosine_0_999_of_every_decoder_reference() {
    for &(model, ..) in MODELS {
        let bytes = common::read(&format!("models/{model}.gguf"));
        let (meta, layers) = load(&bytes);
        let m = Model::new(meta, &layers).unwrap();
        let plan = Plan::new(&m, Limits::tokens(meta.hparams.n_ctx)).unwrap().with_mode(Mode::Fast).unwrap();
        let options = JobOptions { mode: Mode::Fast, ..JobOptions::default() };
        let mut worst = 1.0f64;
        for case in cases(model) {
            let (e, _) = run_with(m, &plan, &bytes, Input::Ids(&case.ids), options);
            let (cos, _) = compare(&e, &case.embedding);
            assert!(cos >= 0.999, "{model} ({} ids): fast cos {cos}", case.ids.len());
            worst = worst.min(cos);
        }
        eprintln!("{model}: worst cosine in fast mode {worst:.6}");
    }
}

#[test]
fn tiny_budgets_and_batches_give_the_same_vectors_bit_for_bit() {
    for &(model, ..) in MODELS {
        let bytes = common::read(&format!("models/{model}.gguf"));
        let (meta, layers) = load(&bytes);
        let m = Model::new(meta, &layers).unwrap();
        let all = cases(model);
        let n_ctx = meta.hparams.n_ctx;
        // A batch of short and long texts within one context (its layout, all heads and the
        // whole FFN at once, is then that of each text alone); the longest text crosses the
        // sliding window and many attention tiles.
        let mut batch: Vec<&[u32]> = Vec::new();
        for case in all.iter().step_by(2) {
            if batch.iter().map(|t| t.len()).sum::<usize>() + case.ids.len() <= n_ctx {
                batch.push(&case.ids);
            }
        }
        assert!(batch.len() >= 4, "{model}: {} texts", batch.len());
        let plan = Plan::new(&m, Limits { max_tokens: n_ctx, max_texts: batch.len() }).unwrap();
        let mut one_by_one = Vec::new();
        for ids in batch.iter().copied().chain([all.last().unwrap().ids.as_slice()]) {
            let (e, _) = run(m, &plan, &bytes, Input::Ids(ids), 8_000_000);
            let (tiny, steps) = run(m, &plan, &bytes, Input::Ids(ids), 20_000);
            assert_eq!(tiny, e, "{model} ({} ids), {steps} steps", ids.len());
            assert!(steps > 20, "{model}: {steps} steps");
            one_by_one.push(e);
        }
        let (together, _) = run(m, &plan, &bytes, Input::IdBatch(&batch), 8_000_000);
        assert_eq!(together, one_by_one[..batch.len()].concat(), "{model}: batch of {}", batch.len());
        // The smallest plan groups heads and FFN columns differently: the same to rounding.
        let small = Plan::smallest(&m, Limits::tokens(n_ctx)).unwrap();
        let longest = all.last().unwrap();
        let (smallest, _) = run(m, &small, &bytes, Input::Ids(&longest.ids), 8_000_000);
        let exact: Vec<f64> = one_by_one.last().unwrap().iter().map(|&v| f64::from(v)).collect();
        let (cos, max) = compare(&smallest, &exact);
        assert!(cos >= 0.999999 && max <= 1e-5, "{model}: smallest plan cos {cos} max {max}");
    }
}

/// The fixture texts and the ids llama.cpp's `llama-tokenize` gives them for `model`
/// (`tools/tokenizer-fixtures/llama_text_ids.py`).
fn text_ids(model: &str) -> Vec<(String, Vec<u32>)> {
    let path = common::fixture(&format!("reference/decoder/{model}.text-ids.jsonl"));
    let lines: Vec<(String, Vec<u32>)> = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let ids = v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
            (v["text"].as_str().unwrap().to_owned(), ids)
        })
        .collect();
    assert!(lines.len() >= 20, "{model}: {} texts", lines.len());
    lines
}

#[test]
fn text_is_tokenized_as_llama_cpp_does_in_every_plan() {
    use stepembed::core::engine::PlanKind;
    for &(model, ..) in MODELS {
        let path = common::fixture(&format!("models/{model}.gguf"));
        for plan in [PlanKind::Fast, PlanKind::Lean, PlanKind::Smallest] {
            let options = stepembed::EmbedderOptions { plan, ..Default::default() };
            let mut embedder = stepembed::Embedder::open_with(&path, options).unwrap();
            let max = embedder.plan().limits().max_tokens;
            let mut compared = 0;
            for (text, ids) in text_ids(model) {
                // llama-tokenize does not truncate: compare the texts that fit whole.
                if ids.len() > max {
                    continue;
                }
                // The smallest plan's window is too small for long uncut fragments (a typed
                // error, checked below); the others tokenize every fixture text.
                match embedder.tokenize(&text) {
                    Ok(got) => assert_eq!(got, ids, "{model} {plan:?}: {text:?}"),
                    Err(e) if plan == PlanKind::Smallest => assert_eq!(e.code(), "BUFFER_TOO_SMALL", "{e}"),
                    Err(e) => panic!("{model} {plan:?}: {text:?}: {e}"),
                }
                compared += 1;
            }
            assert!(compared >= 20, "{model} {plan:?}: {compared} texts compared");
        }
    }
}

#[test]
fn embedding_text_equals_embedding_its_llama_cpp_ids() {
    for &(model, ..) in MODELS {
        let bytes = common::read(&format!("models/{model}.gguf"));
        let path = common::fixture(&format!("models/{model}.gguf"));
        let mut embedder = stepembed::Embedder::open(&path).unwrap();
        assert!(embedder.plan().index_bytes() > 0, "{model}: the fast plan builds the vocab index");
        let (meta, layers) = load(&bytes);
        let m = Model::new(meta, &layers).unwrap();
        let plan = Plan::new(&m, Limits::tokens(embedder.plan().limits().max_tokens)).unwrap();
        let lines: Vec<_> = text_ids(model).into_iter().filter(|(_, ids)| ids.len() <= 256).take(8).collect();
        for (text, ids) in &lines {
            let by_text = embedder.embed(text).unwrap();
            let (by_ids, _) = run(m, &plan, &bytes, Input::Ids(ids), u64::MAX);
            assert_eq!(by_text, by_ids, "{model}: {text:?}");
        }
        let texts: Vec<&str> = lines.iter().map(|(t, _)| t.as_str()).collect();
        let batch = embedder.embed_batch(&texts).unwrap();
        for ((text, ids), e) in lines.iter().zip(&batch) {
            let (by_ids, _) = run(m, &plan, &bytes, Input::Ids(ids), u64::MAX);
            let (cos, _) = compare(e, &by_ids.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());
            assert!(cos >= 0.999_999, "{model}: batch {text:?}: cos {cos}");
        }
    }
}

/// BPE models in the smallest plan: no vocab index (the tokenizer streams the tokens and the
/// merges), and text embeds bit for bit as its llama.cpp ids do in that plan; the fast plan
/// (with the index) likewise. Both plans get the same ids from the text.
#[test]
fn bpe_text_in_the_smallest_plan_streams_the_vocab_and_embeds_as_its_ids() {
    use stepembed::core::engine::PlanKind;
    for &(model, ..) in MODELS.iter().filter(|(m, ..)| m.starts_with("qwen")) {
        let bytes = common::read(&format!("models/{model}.gguf"));
        let path = common::fixture(&format!("models/{model}.gguf"));
        let (meta, layers) = load(&bytes);
        let m = Model::new(meta, &layers).unwrap();
        let lines: Vec<_> = text_ids(model).into_iter().filter(|(_, ids)| ids.len() <= 64).take(6).collect();
        assert!(lines.len() >= 4, "{model}: {} texts", lines.len());
        let mut per_plan = Vec::new();
        for kind in [PlanKind::Smallest, PlanKind::Fast] {
            let options = stepembed::EmbedderOptions { plan: kind, ..Default::default() };
            let mut embedder = stepembed::Embedder::open_with(&path, options).unwrap();
            let plan = *embedder.plan();
            match kind {
                PlanKind::Smallest => {
                    assert_eq!(plan.index_bytes(), 0, "{model}: no vocab index");
                    assert_eq!(plan.tokenizer_mode(), stepembed::core::tokenizer::Mode::Scan);
                }
                _ => assert!(plan.index_bytes() > 0, "{model}: the fast plan builds the index"),
            }
            let mut vectors = Vec::new();
            for (text, ids) in &lines {
                assert_eq!(&embedder.tokenize(text).unwrap(), ids, "{model} {kind:?}: {text:?}");
                let by_text = embedder.embed(text).unwrap();
                let (by_ids, _) = run(m, &plan, &bytes, Input::Ids(ids), u64::MAX);
                assert_eq!(by_text, by_ids, "{model} {kind:?}: {text:?}");
                // The core job tokenizing in scan mode itself, in small steps.
                if kind == PlanKind::Smallest {
                    let (job_text, steps) = run(m, &plan, &bytes, Input::Text(text), 50_000);
                    assert_eq!(job_text, by_ids, "{model}: job on {text:?}, {steps} steps");
                }
                vectors.push(by_text);
            }
            per_plan.push(vectors);
        }
        // Across plans the layouts differ (heads and FFN columns grouped otherwise): equal to
        // rounding.
        for (a, b) in per_plan[0].iter().zip(&per_plan[1]) {
            let (cos, max) = compare(a, &b.iter().map(|&x| f64::from(x)).collect::<Vec<_>>());
            assert!(cos >= 0.999999 && max <= 1e-5, "{model}: plans differ: cos {cos} max {max}");
        }
    }
}

/// `model`'s bytes with `patch` applied to the value of metadata key `key` (or, with `key`
/// a tensor name, to that name), then loaded: the loader's error.
fn load_patched(model: &str, key: &str, patch: impl Fn(&mut [u8])) -> Error {
    let mut bytes = common::read(&format!("models/{model}.gguf"));
    let layout = gguf_layout::parse(&bytes);
    let range = match layout.kv(key) {
        Some((_, kv)) => kv.value.clone(),
        None => {
            // A tensor name: its bytes follow the name's length, just before its dimension count.
            let at = bytes.windows(key.len()).position(|w| w == key.as_bytes()).unwrap();
            at..at + key.len()
        }
    };
    patch(&mut bytes[range]);
    let mut scratch = vec![0u8; 4096];
    let mut layers = vec![LayerRefs::default(); 8];
    let mut loader = ModelLoader::new(&mut scratch, &mut layers).unwrap();
    loader.load(&mut SliceSource::new(&bytes)).unwrap_err()
}

#[test]
fn corrupted_decoder_headers_fail_with_typed_errors() {
    let bad = |key| Error::Malformed { what: Malformed::BadHyperParameter(key), offset: 0 };
    // Key/value heads that do not divide the heads.
    let err = load_patched("qwen3-tiny-2L-Q4_K_M", "qwen3.attention.head_count_kv", |v| v[0] = 3);
    assert_eq!(err, bad("attention.head_count_kv"));
    // A key length the tensors do not have.
    let err = load_patched("qwen3-tiny-2L-Q4_K_M", "qwen3.attention.key_length", |v| v[0] = 64);
    assert!(matches!(err, Error::Malformed { what: Malformed::BadShape(_), .. }), "{err}");
    // A dense width the tensors do not have.
    let err = load_patched("gemma-emb-tiny-3L-Q4_K_M", "gemma-embedding.dense_2_feat_out", |v| v[0] ^= 1);
    assert_eq!(err, bad("dense_2_feat_out"));
    // A per-layer pattern holding something else than a bool (its first element follows the
    // element type and count).
    let key = "gemma-embedding.attention.sliding_window_pattern";
    let err = load_patched("gemma-emb-tiny-2L-Q8_0", key, |v| v[12] = 2);
    assert!(matches!(err, Error::Malformed { what: Malformed::WrongValueType, .. }), "{err}");
    // A renamed tensor: required ones are missing, an optional bias in one layer only is too.
    let err = load_patched("gemma-emb-tiny-3L-Q4_K_M", "blk.1.post_ffw_norm.weight", |v| v[6] = b'X');
    let missing = |name| Error::malformed(Malformed::MissingTensor(Name::new(name)), 0);
    assert_eq!(err, missing("blk.1.post_ffw_norm.weight"));
    let err = load_patched("qwen3-tiny-2L-Q4_K_M", "blk.0.attn_q_norm.weight", |v| v[6] = b'X');
    assert_eq!(err, missing("blk.0.attn_q_norm.weight"));
    let err = load_patched("qwen2-tiny-2L-Q4_K_M", "blk.1.attn_v.bias", |v| v[6] = b'X');
    assert_eq!(err, missing("blk.1.attn_v.bias"));
    let err = load_patched("gemma-emb-tiny-3L-Q4_K_M", "dense_3.weight", |v| v[0] = b'X');
    assert_eq!(err, missing("dense_3.weight"));
    // Pooling type 4 does not exist.
    let err = load_patched("qwen3-tiny-2L-Q4_K_M", "qwen3.pooling_type", |v| v[0] = 4);
    assert_eq!(err, Error::Unsupported(Unsupported::PoolingType(4)));
}
