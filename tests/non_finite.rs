//! Corrupt weights that make the forward pass compute NaN or infinity — a NaN or infinite
//! quantization scale, a NaN norm weight or embedding row, a bias large enough to overflow — are
//! `Error::NonFinite` naming the stage (and layer) that computed them, never an embedding.
//! Each case patches the bytes of a committed fixture model in memory, finding the tensor
//! through the core's GGUF reader.

mod common;

use std::io::Cursor;

use embedded_io_adapters::std::FromStd;
use stepembed::core::engine::{Input, PlanKind, Step};
use stepembed::core::gguf::{Event, GgmlType, Reader, TensorInfo, MIN_SCRATCH};
use stepembed::core::io::SliceSource;
use stepembed::core::Error;
use stepembed::{Embedder, EmbedderOptions};

const TEXT: &str = "The quick brown fox jumps over the lazy dog.";

/// f16 bit patterns.
const F16_NAN: u16 = 0x7e00;
const F16_INF: u16 = 0x7c00;

/// A committed fixture model held in memory, to patch.
#[derive(Clone)]
struct Patched {
    bytes: Vec<u8>,
    tensors: Vec<TensorInfo>,
}

type MemoryEmbedder = Embedder<FromStd<Cursor<Vec<u8>>>>;

impl Patched {
    fn load(model: &str) -> Self {
        let bytes = common::read(&format!("models/{model}.gguf"));
        let mut scratch = vec![0u8; MIN_SCRATCH];
        let mut reader = Reader::new(&mut scratch).unwrap();
        let mut io = SliceSource::new(&bytes);
        let mut tensors = Vec::new();
        loop {
            match reader.next_event(&mut io).unwrap() {
                Event::Tensor(t) => tensors.push(t),
                Event::Done(_) => break,
                _ => {}
            }
        }
        Patched { bytes, tensors }
    }

    fn tensor(&self, name: &str) -> TensorInfo {
        *self.tensors.iter().find(|t| t.name.as_str() == name).unwrap_or_else(|| panic!("no tensor {name}"))
    }

    /// The file offset of block `block` of row `row` of tensor `name`, checking its type.
    fn block_at(&self, name: &str, ty: GgmlType, row: u64, block: u64) -> usize {
        let t = self.tensor(name);
        assert_eq!(t.ty, ty, "{name}");
        assert!(row < t.n_rows() && block < t.row_len() / u64::from(ty.block_elems()), "{name}");
        (t.offset + row * t.row_bytes() + block * u64::from(ty.block_bytes())) as usize
    }

    fn set_f16(&mut self, at: usize, bits: u16) {
        self.bytes[at..at + 2].copy_from_slice(&bits.to_le_bytes());
    }

    fn set_f32(&mut self, at: usize, v: f32) {
        self.bytes[at..at + 4].copy_from_slice(&v.to_le_bytes());
    }

    /// Sets element `i` of row `row` of F32 tensor `name`.
    fn set_f32_element(&mut self, name: &str, row: u64, i: u64, v: f32) {
        let at = self.block_at(name, GgmlType::F32, row, i);
        self.set_f32(at, v);
    }

    fn embedder(&self) -> MemoryEmbedder {
        self.embedder_with(EmbedderOptions::default())
    }

    fn embedder_with(&self, options: EmbedderOptions) -> MemoryEmbedder {
        Embedder::from_source(FromStd::new(Cursor::new(self.bytes.clone())), options).unwrap()
    }
}

/// Asserts that `result` is `NonFinite` at `stage` and `layer`.
fn assert_non_finite<T: std::fmt::Debug>(
    result: stepembed::Result<T>,
    stage: &str,
    layer: Option<u16>,
    case: &str,
) {
    match result {
        Err(stepembed::Error::Core(Error::NonFinite { stage: s, layer: l })) => {
            assert_eq!((s, l), (stage, layer), "{case}")
        }
        other => panic!("{case}: expected NonFinite in {stage} {layer:?}, got {other:?}"),
    }
}

/// Patches a model, embeds [`TEXT`] and checks the error.
fn check(model: &str, patch: impl FnOnce(&mut Patched), stage: &str, layer: Option<u16>, case: &str) {
    let mut m = Patched::load(model);
    patch(&mut m);
    assert_non_finite(m.embedder().embed(TEXT), stage, layer, case);
}

#[test]
fn the_clean_models_embed_finite_values() {
    for model in common::MODELS {
        let v = Patched::load(model).embedder().embed(TEXT).unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{model}");
    }
}

#[test]
fn nan_and_infinite_q4_k_scales_are_errors() {
    let at = |m: &Patched, name| m.block_at(name, GgmlType::Q4_K, 3, 0);
    // Block layout: d (f16), dmin (f16), scales, quants.
    check(
        "bert-synth-2L-Q4_K_M",
        |m| m.set_f16(at(m, "blk.0.attn_q.weight"), F16_NAN),
        "qkv",
        Some(0),
        "NaN d",
    );
    check(
        "bert-synth-2L-Q4_K_M",
        |m| m.set_f16(at(m, "blk.1.ffn_up.weight"), F16_INF),
        "ffn",
        Some(1),
        "+Inf d",
    );
    check(
        "bert-synth-2L-Q4_K_M",
        |m| m.set_f16(at(m, "blk.1.attn_output.weight") + 2, F16_NAN),
        "attention-out",
        Some(1),
        "NaN dmin",
    );
    check(
        "minilm-l6-Q4_K_M",
        |m| m.set_f16(at(m, "blk.3.ffn_down.weight") + 2, F16_NAN),
        "ffn",
        Some(3),
        "NaN dmin in ffn_down",
    );
    // The gated FFN and rotary attention of nomic-bert.
    check(
        "nomic-small-2L-Q4_K_M",
        |m| m.set_f16(at(m, "blk.1.ffn_gate.weight"), F16_NAN),
        "ffn",
        Some(1),
        "NaN d in ffn_gate",
    );
    check(
        "nomic-small-2L-Q4_K_M",
        |m| m.set_f16(at(m, "blk.0.attn_qkv.weight"), F16_INF),
        "qkv",
        Some(0),
        "+Inf d in attn_qkv",
    );
}

#[test]
fn nan_scales_of_q5_0_q8_0_and_q6_k_blocks_are_errors() {
    // Q5_0 and Q8_0 blocks start with d; Q6_K blocks (210 bytes) end with it.
    check(
        "minilm-l6-Q4_K_M",
        |m| m.set_f16(m.block_at("blk.0.attn_output.weight", GgmlType::Q5_0, 7, 1), F16_NAN),
        "attention-out",
        Some(0),
        "Q5_0",
    );
    check(
        "bert-tiny-Q8_0",
        |m| m.set_f16(m.block_at("blk.1.attn_v.weight", GgmlType::Q8_0, 5, 0), F16_INF),
        "qkv",
        Some(1),
        "Q8_0",
    );
    check(
        "minilm-l6-Q4_K_M",
        |m| m.set_f16(m.block_at("blk.2.attn_v.weight", GgmlType::Q8_0, 0, 0), F16_NAN),
        "qkv",
        Some(2),
        "Q8_0 in a mixed model",
    );
    check(
        "minilm-l6-Q4_K_M",
        |m| m.set_f16(m.block_at("blk.5.ffn_down.weight", GgmlType::Q6_K, 1, 0) + 208, F16_NAN),
        "ffn",
        Some(5),
        "Q6_K",
    );
    check(
        "nomic-small-2L-Q4_K_M",
        |m| m.set_f16(m.block_at("blk.1.attn_qkv.weight", GgmlType::Q6_K, 2, 0) + 208, F16_INF),
        "qkv",
        Some(1),
        "Q6_K in a fused Q|K|V",
    );
}

#[test]
fn nan_norm_weights_are_errors() {
    check(
        "bert-tiny-F16",
        |m| m.set_f32_element("token_embd_norm.weight", 0, 5, f32::NAN),
        "norm",
        None,
        "embedding norm",
    );
    check(
        "bert-tiny-F16",
        |m| m.set_f32_element("blk.1.layer_output_norm.weight", 0, 0, f32::NAN),
        "norm",
        Some(1),
        "output norm",
    );
    check(
        "nomic-small-2L-Q4_K_M",
        |m| m.set_f32_element("blk.0.attn_output_norm.bias", 0, 9, f32::INFINITY),
        "norm",
        Some(0),
        "attention norm bias",
    );
}

#[test]
fn nan_embedding_rows_fail_only_when_used() {
    let clean = Patched::load("bert-tiny-F16");
    let ids = clean.embedder().tokenize(TEXT).unwrap();
    let used = ids[2];
    let unused = (1000..).find(|id| !ids.contains(id)).unwrap();
    let row = |m: &Patched, id: u32| m.block_at("token_embd.weight", GgmlType::F16, u64::from(id), 7);
    check("bert-tiny-F16", |m| m.set_f16(row(m, used), F16_NAN), "embed", None, "used token row");
    check(
        "bert-tiny-Q8_0",
        |m| m.set_f16(m.block_at("token_embd.weight", GgmlType::Q8_0, u64::from(used), 0), F16_NAN),
        "embed",
        None,
        "used Q8_0 token row",
    );
    check(
        "bert-synth-2L-Q4_K_M",
        |m| {
            let ids = m.embedder().tokenize(TEXT).unwrap();
            let at = m.block_at("token_embd.weight", GgmlType::Q6_K, u64::from(ids[1]), 0);
            m.set_f16(at + 208, F16_NAN)
        },
        "embed",
        None,
        "used Q6_K token row",
    );
    // Position 1 is the text's first token after [CLS].
    check(
        "bert-tiny-F16",
        |m| m.set_f32_element("position_embd.weight", 1, 0, f32::NAN),
        "embed",
        None,
        "used position row",
    );

    let mut patched = clean.clone();
    patched.set_f16(row(&patched, unused), F16_NAN);
    let last_position = patched.tensor("position_embd.weight").n_rows() - 1;
    patched.set_f32_element("position_embd.weight", last_position, 0, f32::NAN);
    let expect = clean.embedder().embed(TEXT).unwrap();
    assert_eq!(patched.embedder().embed(TEXT).unwrap(), expect, "unused rows are never read");
}

#[test]
fn a_bias_that_overflows_is_an_error() {
    // q·k of 3e38 by 3e38 overflows f32: the scores and then the attention output are not finite.
    check(
        "minilm-l6-Q4_K_M",
        |m| {
            for name in ["blk.0.attn_q.bias", "blk.0.attn_k.bias"] {
                m.set_f32_element(name, 0, 0, 3e38);
            }
        },
        "attention",
        Some(0),
        "q and k bias",
    );
}

#[test]
fn every_plan_reports_the_same_stage() {
    // The plans group heads and slice the FFN differently; the check follows the work.
    let mut m = Patched::load("nomic-small-2L-Q4_K_M");
    let at = m.block_at("blk.0.ffn_down.weight", GgmlType::Q4_K, 4, 1);
    m.set_f16(at + 2, F16_INF);
    for plan in [PlanKind::Fast, PlanKind::Lean, PlanKind::Smallest] {
        let mut embedder = m.embedder_with(EmbedderOptions { plan, ..EmbedderOptions::default() });
        assert_non_finite(embedder.embed(TEXT), "ffn", Some(0), &format!("{plan:?}"));
    }
}

#[test]
fn a_batch_fails_when_one_text_reads_a_nan_row() {
    let clean = Patched::load("bert-tiny-Q8_0");
    let mut embedder = clean.embedder();
    let first = embedder.tokenize("hello").unwrap();
    let second = embedder.tokenize(TEXT).unwrap();
    let only_second = *second.iter().find(|id| !first.contains(id)).unwrap();
    let mut m = clean.clone();
    let at = m.block_at("token_embd.weight", GgmlType::Q8_0, u64::from(only_second), 0);
    m.set_f16(at, F16_NAN);
    assert_non_finite(m.embedder().embed_batch(&["hello", TEXT]), "embed", None, "batch");
    assert!(m.embedder().embed("hello").unwrap().iter().all(|x| x.is_finite()));
}

#[test]
fn a_job_returns_the_error_from_step_and_stays_poisoned() {
    let mut m = Patched::load("bert-synth-2L-Q4_K_M");
    let at = m.block_at("blk.1.ffn_up.weight", GgmlType::Q4_K, 0, 0);
    m.set_f16(at, F16_NAN);
    let mut embedder = m.embedder_with(EmbedderOptions { budget: 20_000, ..EmbedderOptions::default() });
    let mut job = embedder.job(Input::Text(TEXT)).unwrap();
    let mut steps = 0;
    let err = loop {
        steps += 1;
        assert!(steps < 1_000_000, "the job does not end");
        match job.step() {
            Ok(Step::Pending(_)) => {}
            Ok(Step::Done(v)) => panic!("embedded corrupt weights: {v:?}"),
            Err(e) => break e,
        }
    };
    assert!(steps > 10, "the error comes from a later step ({steps})");
    assert_non_finite::<()>(Err(err), "ffn", Some(1), "step");
    assert_non_finite(job.step(), "ffn", Some(1), "the next step");
}
