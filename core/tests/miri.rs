//! The core's safe paths on tiny in-memory inputs, small enough for Miri (`cargo +nightly miri
//! test -p stepembed-core --test miri`), and ordinary tests under `cargo test`: the GGUF reader
//! (whole file, cut files, flipped bytes), the tokenizer in both lookup modes, the scalar quant
//! kernels of every block format the tiny model uses, and a whole job.
//!
//! Buffers are the smallest each API accepts: Miri's aliasing model retags a whole slice on every
//! reborrow, so big scratch buffers cost time, not coverage.
//!
//! Under Miri, `Kernels::detect` finds no SIMD (the `cpufeatures` crate reports no features
//! there), so every kernel call is scalar; the tests also select `Kernels::scalar` explicitly.

#[path = "../../tests/common/gguf_writer.rs"]
mod gguf_writer;
#[path = "../../tests/common/tiny_bert.rs"]
mod tiny_bert;

use stepembed_core::engine::{Input, Job, JobOptions, Limits, Plan, Step};
use stepembed_core::gguf::{Event, GgmlType, Reader, MIN_SCRATCH};
use stepembed_core::io::SliceSource;
use stepembed_core::model::{LayerRefs, Model, ModelLoader, ModelMeta, MIN_LOADER_SCRATCH};
use stepembed_core::quant::{Isa, Kernels};
use stepembed_core::tokenizer::{self, IndexBuilder, Lookup, Step as TokStep, Tokenize, VocabIndex};
use stepembed_core::{Error, Malformed};
use tiny_bert::Rng;

/// The tiny model, as `tiny_bert::model` writes it (committed: writing it takes Miri minutes).
static MODEL: &[u8] = include_bytes!("../../tests/fixtures/models/tiny-bert-synth.gguf");

fn model_bytes() -> &'static [u8] {
    MODEL
}

#[test]
#[cfg_attr(miri, ignore = "writing the model is slow under Miri; the native run checks it")]
fn the_committed_tiny_model_is_what_the_writer_writes() {
    assert!(tiny_bert::model() == MODEL, "regenerate tests/fixtures/models/tiny-bert-synth.gguf");
}

/// Tensors of the tiny model: 5 global ones and 16 per layer.
const N_TENSORS: usize = 5 + 16 * tiny_bert::N_LAYER;

/// Reads `bytes` to the end with the streaming reader; the KV and tensor counts.
fn read_all(bytes: &[u8]) -> Result<(usize, usize), Error> {
    let mut scratch = vec![0u8; MIN_SCRATCH];
    let mut reader = Reader::new(&mut scratch)?;
    let mut io = SliceSource::new(bytes);
    let (mut kvs, mut tensors) = (0, 0);
    loop {
        match reader.next_event(&mut io)? {
            Event::Kv { .. } => kvs += 1,
            Event::Tensor(_) => tensors += 1,
            Event::Done(_) => return Ok((kvs, tensors)),
            Event::Header(_) | Event::Progress => {}
        }
    }
}

#[test]
fn the_reader_reads_the_tiny_model_and_refuses_cut_files() {
    let bytes = model_bytes();
    assert_eq!(read_all(bytes), Ok((16, N_TENSORS)));
    // Cut inside the header, the tensor table and the data: each a typed error.
    for cut in [3, 20, 200, 1500, 2600, bytes.len() / 2, bytes.len() - 1] {
        let err = read_all(&bytes[..cut]).expect_err("a cut file");
        assert!(matches!(err, Error::Malformed { .. }), "cut at {cut}: {err:?}");
    }
    assert!(matches!(read_all(&bytes[..20]), Err(Error::Malformed { what: Malformed::Truncated, .. })));
}

#[test]
fn flipped_bytes_of_the_tiny_model_never_panic() {
    let clean = model_bytes();
    let mut rng = Rng::new(7);
    for _ in 0..6 {
        let mut bytes = clean.to_vec();
        let at = rng.below(3000) as usize;
        bytes[at] ^= 1 << rng.below(8);
        // Either outcome is fine here (tests/sweeps.rs asserts which); no panic, no UB.
        let _ = read_all(&bytes);
    }
}

/// The tiny model's metadata and layer table.
fn load(bytes: &[u8]) -> (ModelMeta, Vec<LayerRefs>) {
    let mut scratch = vec![0u8; MIN_LOADER_SCRATCH];
    let mut layers = vec![LayerRefs::default(); tiny_bert::N_LAYER];
    let meta =
        ModelLoader::new(&mut scratch, &mut layers).unwrap().load(&mut SliceSource::new(bytes)).unwrap();
    (meta, layers)
}

/// Tokenizes `text` with `lookup` into at most `max_tokens` ids.
fn tokenize(meta: &ModelMeta, bytes: &[u8], lookup: Lookup<'_>, text: &str, max_tokens: usize) -> Vec<u32> {
    let window = tokenizer::MIN_WINDOW_CHARS;
    let mut work = vec![0u8; tokenizer::work_bytes(lookup.mode(), window)];
    let mut out = vec![0u32; max_tokens];
    let options = tokenizer::Options { max_tokens, truncate: true };
    let mut tok = Tokenize::new(&meta.vocab, lookup, text, &mut work, &mut out, options).unwrap();
    tok.run(&mut SliceSource::new(bytes)).unwrap().to_vec()
}

#[test]
fn the_tokenizer_gives_the_same_ids_with_an_index_and_by_streaming_the_vocab() {
    let bytes = model_bytes();
    let (meta, _) = load(bytes);
    // u32-aligned memory: an unaligned buffer of `bytes_needed` bytes can be refused (see
    // `an_index_fits_in_bytes_needed_at_any_alignment`); Miri's allocator exposes it.
    let needed = VocabIndex::bytes_needed(&meta.vocab).unwrap();
    let mut words = vec![0u32; needed.div_ceil(4)];
    let mem: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    let mut builder = IndexBuilder::new(&meta.vocab, &mut mem[..needed]).unwrap();
    let mut scratch = vec![0u8; tokenizer::MIN_VOCAB_SCRATCH];
    while builder.step(&mut SliceSource::new(bytes), &mut scratch, 16).unwrap() == TokStep::Pending {}
    let index = builder.finish().unwrap();
    for lookup in [Lookup::Index(index), Lookup::Scan] {
        assert_eq!(
            tokenize(&meta, bytes, lookup, tiny_bert::TEXT, tiny_bert::N_CTX),
            tiny_bert::TEXT_IDS,
            "{:?}",
            lookup.mode()
        );
        // Cut at the limit: [CLS], the first pieces, [SEP].
        let cut = tokenize(&meta, bytes, lookup, "hello world hello world hello", 6);
        assert_eq!(cut, [2, 10, 11, 10, 11, 3]);
    }
}

/// `VocabIndex::bytes_needed` promises room for the index in any buffer of that many bytes (it
/// includes 3 bytes of alignment slack) at any start offset: a `Vec<u8>`, which the std
/// `Embedder` allocates, has no alignment guarantee. (The key bytes were once taken from the
/// u32-aligned middle only, which lost up to 3 more bytes at the end.)
#[test]
fn an_index_fits_in_bytes_needed_at_any_alignment() {
    let bytes = model_bytes();
    let (meta, _) = load(bytes);
    let needed = VocabIndex::bytes_needed(&meta.vocab).unwrap();
    let mut words = vec![0u32; needed.div_ceil(4) + 1];
    let buffer: &mut [u8] = bytemuck::cast_slice_mut(&mut words);
    for start in 0..4 {
        let built = IndexBuilder::new(&meta.vocab, &mut buffer[start..start + needed]).map(|_| ());
        assert_eq!(
            built,
            Ok(()),
            "a buffer of bytes_needed = {needed} bytes starting {start} bytes past a u32"
        );
    }
}

#[test]
fn scalar_kernels_decode_and_multiply_every_block_format_exactly() {
    let kernels = Kernels::scalar();
    assert_eq!(kernels.isa(), Isa::Scalar);
    let (k, n_rows, n_tokens) = (64usize, 3usize, 2usize);
    let mut rng = Rng::new(11);
    // Small integer inputs: every product and sum below is exact in f32 (see `tensor_data`),
    // except for F32 weights.
    let x: Vec<f32> = (0..k * n_tokens).map(|_| rng.below(5) as f32 - 2.0).collect();
    for id in tiny_bert::TYPES {
        let ty = GgmlType::from_id(id).unwrap();
        let w = tiny_bert::tensor_data(&mut rng, id, k, n_rows, false);
        let mut dense = vec![0f32; k * n_rows];
        assert_eq!(kernels.dequantize(ty, &w, &mut dense), Ok(k * n_rows), "{ty:?}");
        assert!(dense.iter().all(|v| v.is_finite() && v.abs() <= 2.5), "{ty:?}");
        let mut out = vec![0f32; n_rows * n_tokens];
        let mut scratch = vec![0f32; k * n_rows];
        kernels.matmul_acc(ty, &w, n_rows, k, &x, k, n_tokens, &mut out, n_rows, &mut scratch).unwrap();
        for t in 0..n_tokens {
            for r in 0..n_rows {
                let row = &dense[r * k..(r + 1) * k];
                let want: f64 =
                    row.iter().zip(&x[t * k..(t + 1) * k]).map(|(&a, &b)| a as f64 * b as f64).sum();
                let got = out[t * n_rows + r] as f64;
                let tolerance = if ty == GgmlType::F32 { 1e-5 } else { 0.0 };
                assert!((got - want).abs() <= tolerance, "{ty:?} row {r} token {t}: {got} vs {want}");
            }
        }
    }
    // Q8_0 and Q4_0 by their definitions: d·q and d·(nibble − 8), d = 1/64.
    let q8 = tiny_bert::tensor_data(&mut rng, 8, 32, 1, false);
    let q4 = tiny_bert::tensor_data(&mut rng, 2, 32, 1, false);
    let (mut a, mut b) = ([0f32; 32], [0f32; 32]);
    kernels.dequantize(GgmlType::Q8_0, &q8, &mut a).unwrap();
    kernels.dequantize(GgmlType::Q4_0, &q4, &mut b).unwrap();
    for i in 0..32 {
        assert_eq!(a[i], f32::from(q8[2 + i] as i8) / 64.0);
        let nibble = if i < 16 { q4[2 + i] & 0xF } else { q4[2 + i - 16] >> 4 };
        assert_eq!(b[i], (f32::from(nibble) - 8.0) / 64.0);
    }
}

/// Runs a job to the end with the scalar kernels, in as few steps as it takes (tokenizing takes a
/// step of its own).
fn embed(model: Model<'_>, plan: &Plan, bytes: &[u8], input: Input<'_>) -> Vec<f32> {
    let mut arena = vec![0u8; plan.arena_bytes()];
    let options = JobOptions { budget: u64::MAX, ..JobOptions::default() };
    let mut job = Job::new(model, plan, &mut arena, input, Lookup::Scan, options).unwrap();
    job.set_kernels(Kernels::scalar());
    let mut io = SliceSource::new(bytes);
    loop {
        if let Step::Done(v) = job.step(&mut io).unwrap() {
            return v.to_vec();
        }
    }
}

#[test]
fn a_tiny_job_embeds_text_like_its_ids() {
    let bytes = model_bytes();
    let (meta, layers) = load(bytes);
    let model = Model::new(meta, &layers).unwrap();
    // Four tokens: [CLS] hello world [SEP] (Miri runs about a million times slower).
    let plan = Plan::smallest(&model, Limits::tokens(4)).unwrap();
    let from_ids = embed(model, &plan, bytes, Input::Ids(&[2, 10, 11, 3]));
    assert_eq!(from_ids.len(), tiny_bert::N_EMBD);
    let norm: f32 = from_ids.iter().map(|v| v * v).sum::<f32>().sqrt();
    assert!(from_ids.iter().all(|v| v.is_finite()) && (norm - 1.0).abs() < 1e-4, "norm {norm}");
    // A second forward pass doubles Miri's time; the tokenizer has its own test above.
    if !cfg!(miri) {
        assert_eq!(embed(model, &plan, bytes, Input::Text("Hello world")), from_ids);
    }
}
