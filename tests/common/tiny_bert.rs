//! A tiny synthetic bert model written by the tests themselves: 32-dim, 2 heads, 2 layers, FFN
//! 64, 32 positions, a 74-token WordPiece vocab, weights in eight ggml types (F32, F16, BF16,
//! Q8_0, Q4_0, Q4_1, Q5_0, Q5_1), data stored contiguously in table order as ggml writes it.
//! The header and tensor table take about 3 KiB, so every bit of them can be swept, and a whole
//! embedding is cheap enough for Miri.
#![allow(dead_code)]

use super::gguf_writer::{file, kv, kv_str, kv_u32, string_array, tensor_info};

/// The model's dimensions.
pub const N_EMBD: usize = 32;
pub const N_HEAD: u32 = 2;
pub const N_FF: usize = 64;
pub const N_LAYER: usize = 2;
pub const N_CTX: usize = 32;
/// The data section's alignment (GGUF's default).
pub const ALIGNMENT: usize = 32;

/// A text of words the vocab covers (`über` loses its accent: `▁u b e r`), and one it cannot
/// (`42`: `[UNK]`).
pub const TEXT: &str = "The quick fox jumps, hello world! über 42";

/// [`TEXT`]'s token ids: `[CLS] the quick fox jump ##s , hello world ! u ##b ##e ##r [UNK] [SEP]`.
pub const TEXT_IDS: [u32; 16] = [2, 5, 6, 8, 9, 55, 71, 10, 11, 72, 58, 21, 27, 53, 1, 3];

/// The ggml type ids [`tensor_data`] writes.
pub const TYPES: [u32; 8] = [F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1];

/// ggml type ids used here.
const F32: u32 = 0;
const F16: u32 = 1;
const Q4_0: u32 = 2;
const Q4_1: u32 = 3;
const Q5_0: u32 = 6;
const Q5_1: u32 = 7;
const Q8_0: u32 = 8;
const BF16: u32 = 30;

/// A small deterministic generator (SplitMix64), for weights and for test seeds.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// Uniform in [-1, 1).
    pub fn unit(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// The vocab, in GGUF's phantom-space form: five special tokens, whole words, then every
/// lowercase letter as a word start (`▁a`) and as a continuation (`a`), and some punctuation.
pub fn vocab() -> Vec<String> {
    let mut v: Vec<String> = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"].map(String::from).to_vec();
    for w in ["the", "quick", "brown", "fox", "jump", "hello", "world", "over", "lazy", "dog", "is"] {
        v.push(format!("\u{2581}{w}"));
    }
    v.extend(["ing", "ed"].map(String::from));
    for c in 'a'..='z' {
        v.push(format!("\u{2581}{c}"));
        v.push(c.to_string());
    }
    v.extend(["\u{2581}.", "\u{2581},", "\u{2581}!", "\u{2581}?"].map(String::from));
    v
}

/// One tensor of the model: name, dims (ne0 first), ggml type id.
struct TensorSpec {
    name: String,
    ne: Vec<u64>,
    ty: u32,
}

/// Every tensor, in file order.
fn tensors(n_vocab: usize) -> Vec<TensorSpec> {
    let t = |name: &str, ne: &[usize], ty: u32| TensorSpec {
        name: name.to_owned(),
        ne: ne.iter().map(|&d| d as u64).collect(),
        ty,
    };
    let (e, f) = (N_EMBD, N_FF);
    let mut v = vec![
        t("token_embd.weight", &[e, n_vocab], F16),
        t("position_embd.weight", &[e, N_CTX], F32),
        t("token_types.weight", &[e, 2], F32),
        t("token_embd_norm.weight", &[e], F32),
        t("token_embd_norm.bias", &[e], F32),
    ];
    // Each layer uses other types, so that together they cover every block format here.
    let layer_types = [[Q8_0, Q4_0, Q5_1, F16, Q4_1, Q5_0], [BF16, Q4_1, Q8_0, Q5_0, F16, Q4_0]];
    for (i, [q, k, vt, out, up, down]) in layer_types.into_iter().enumerate() {
        let n = |s: &str| format!("blk.{i}.{s}");
        for (name, cols, rows, ty) in
            [("attn_q", e, e, q), ("attn_k", e, e, k), ("attn_v", e, e, vt), ("attn_output", e, e, out)]
        {
            v.push(t(&n(&format!("{name}.weight")), &[cols, rows], ty));
            v.push(t(&n(&format!("{name}.bias")), &[rows], F32));
        }
        v.push(t(&n("attn_output_norm.weight"), &[e], F32));
        v.push(t(&n("attn_output_norm.bias"), &[e], F32));
        v.push(t(&n("ffn_up.weight"), &[e, f], up));
        v.push(t(&n("ffn_up.bias"), &[f], F32));
        v.push(t(&n("ffn_down.weight"), &[f, e], down));
        v.push(t(&n("ffn_down.bias"), &[e], F32));
        v.push(t(&n("layer_output_norm.weight"), &[e], F32));
        v.push(t(&n("layer_output_norm.bias"), &[e], F32));
    }
    v
}

/// The f16 bits of a random finite value of magnitude in [2^-7, 2^-1).
fn f16_bits(rng: &mut Rng) -> u16 {
    let sign = (rng.below(2) as u16) << 15;
    let exponent = (8 + rng.below(7) as u16) << 10;
    sign | exponent | rng.below(1 << 10) as u16
}

/// The bf16 bits of a random finite value of magnitude in [2^-7, 2^-1).
fn bf16_bits(rng: &mut Rng) -> u16 {
    let sign = (rng.below(2) as u16) << 15;
    let exponent = (120 + rng.below(7) as u16) << 7;
    sign | exponent | rng.below(1 << 7) as u16
}

/// f16 bits of the block scale 1/64 (and of the Q4_1/Q5_1 minimum, -1/8).
const SCALE_F16: u16 = 0x2400;
const MIN_F16: u16 = 0xB000;

/// Random data for `rows` rows of `cols` elements of ggml type `ty` (one of the eight above);
/// norm weights (`is_norm_weight`) are near 1. Block formats have the scale 1/64 (and the
/// minimum −1/8), F16 and BF16 values are in ±[2^-7, 2^-1): products with small integers and
/// their sums over a row are exact in f32.
pub fn tensor_data(rng: &mut Rng, ty: u32, cols: usize, rows: usize, is_norm_weight: bool) -> Vec<u8> {
    let n = cols * rows;
    let mut b = Vec::new();
    match ty {
        F32 => {
            for _ in 0..n {
                let x = if is_norm_weight { 1.0 + 0.1 * rng.unit() } else { 0.5 * rng.unit() };
                b.extend(x.to_le_bytes());
            }
        }
        F16 => (0..n).for_each(|_| b.extend(f16_bits(rng).to_le_bytes())),
        BF16 => (0..n).for_each(|_| b.extend(bf16_bits(rng).to_le_bytes())),
        _ => {
            // Block formats: the f16 scale (and minimum), then random quants.
            let (with_min, quant_bytes) = match ty {
                Q8_0 => (false, 32),
                Q4_0 => (false, 16),
                Q4_1 => (true, 16),
                Q5_0 => (false, 20),
                Q5_1 => (true, 20),
                other => panic!("no writer for ggml type {other}"),
            };
            for _ in 0..n / 32 {
                b.extend(SCALE_F16.to_le_bytes());
                if with_min {
                    b.extend(MIN_F16.to_le_bytes());
                }
                b.extend((0..quant_bytes).map(|_| rng.below(256) as u8));
            }
        }
    }
    b
}

/// The whole model file.
pub fn model() -> Vec<u8> {
    let vocab = vocab();
    let pieces: Vec<&str> = vocab.iter().map(String::as_str).collect();
    let kvs = [
        kv_str("general.architecture", "bert"),
        kv_str("general.name", "stepembed tiny synthetic bert"),
        kv_u32("bert.block_count", N_LAYER as u32),
        kv_u32("bert.context_length", N_CTX as u32),
        kv_u32("bert.embedding_length", N_EMBD as u32),
        kv_u32("bert.feed_forward_length", N_FF as u32),
        kv_u32("bert.attention.head_count", N_HEAD),
        kv("bert.attention.layer_norm_epsilon", 6, &1e-12f32.to_le_bytes()),
        kv_u32("bert.pooling_type", 1),
        kv_str("tokenizer.ggml.model", "bert"),
        kv("tokenizer.ggml.tokens", 9, &string_array(&pieces)),
        kv_u32("tokenizer.ggml.padding_token_id", 0),
        kv_u32("tokenizer.ggml.unknown_token_id", 1),
        kv_u32("tokenizer.ggml.cls_token_id", 2),
        kv_u32("tokenizer.ggml.seperator_token_id", 3),
        kv_u32("tokenizer.ggml.mask_token_id", 4),
    ];
    let mut rng = Rng::new(0x5EED);
    let (mut infos, mut data) = (Vec::new(), Vec::new());
    for t in tensors(vocab.len()) {
        while !data.len().is_multiple_of(ALIGNMENT) {
            data.push(0);
        }
        infos.push(tensor_info(&t.name, &t.ne, t.ty, data.len() as u64));
        let rows = t.ne.get(1).copied().unwrap_or(1) as usize;
        let norm = t.name.ends_with("norm.weight");
        data.extend(tensor_data(&mut rng, t.ty, t.ne[0] as usize, rows, norm));
    }
    file(3, &kvs, &infos, ALIGNMENT, &data)
}
