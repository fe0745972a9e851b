//! Exhaustive corruption sweeps. Every corrupted file is loaded and, when it loads, embedded;
//! each outcome must be a typed error, the clean result bit for bit, or — where the byte lies in
//! a value the format cannot check (an epsilon, a vocab piece, a special token id, an optional
//! tensor's name, a type id swapped for one of the same size) — a result the test explains from
//! the field the byte belongs to, with a specific assertion. Never a panic, never an internal
//! error (`Error::InvalidState`), never an unexplained different vector.
//!
//! (a) every single-bit flip of everything before the data section of the tiny synthetic bert
//! model (`common::tiny_bert`); (b) every one-byte change (+1, −1, 0x00, 0xFF, xor 0x80) of every
//! byte of each tensor-table field — offset, type, each dim — of the committed `bert-tiny`
//! models, plus each type id replaced by its same-size twin.
//!
//! Violations are collected and listed together (field, byte, outcome) before the test fails.

mod common;

use std::collections::BTreeMap;

use common::gguf_layout::{self, Field, Layout};
use common::tiny_bert;
use stepembed::core::engine::{Input, Job, JobOptions, Limits, Plan, Step};
use stepembed::core::gguf::GgmlType;
use stepembed::core::io::SliceSource;
use stepembed::core::model::{LayerRefs, Model, ModelLoader};
use stepembed::core::tokenizer::Lookup;
use stepembed::core::{Error, Malformed, Unsupported};

/// The embeddings of a loaded file: of a text (tokenized from the file's vocab, when asked) and
/// of fixed token ids; each may fail on its own.
#[derive(Debug, Clone, PartialEq)]
struct Embedded {
    text: Option<Result<Vec<f32>, Error>>,
    ids: Result<Vec<f32>, Error>,
}

/// Loads `bytes`, then embeds `text` (streaming the vocab: the smallest plan) and `ids` (the
/// fast plan).
fn run(bytes: &[u8], text: Option<&str>, ids: &[u32]) -> Result<Embedded, Error> {
    let mut scratch = vec![0u8; 4096];
    let mut layers = vec![LayerRefs::default(); 64];
    let meta = ModelLoader::new(&mut scratch, &mut layers)?.load(&mut SliceSource::new(bytes))?;
    let model = Model::new(meta, &layers[..meta.hparams.n_layer])?;
    let limits = Limits::tokens(meta.hparams.n_ctx.min(64));
    let job = |plan: Plan, input: Input<'_>| -> Result<Vec<f32>, Error> {
        let mut arena = vec![0u8; plan.arena_bytes()];
        let mut job = Job::new(model, &plan, &mut arena, input, Lookup::Scan, JobOptions::default())?;
        let mut io = SliceSource::new(bytes);
        loop {
            if let Step::Done(v) = job.step(&mut io)? {
                return Ok(v.to_vec());
            }
        }
    };
    let text = text.map(|t| job(Plan::smallest(&model, limits)?, Input::Text(t)));
    let ids = job(Plan::new(&model, limits)?, Input::Ids(ids));
    Ok(Embedded { text, ids })
}

/// What a corrupted byte may do, from the field it lies in.
#[derive(Debug, Clone, Copy)]
enum Expect {
    /// A typed error (the format, or the model check, catches it).
    Error,
    /// This error.
    ErrorLike(fn(&Error) -> bool, &'static str),
    /// The byte is never used: the clean result.
    Identical,
    /// A typed error, or the clean result (e.g. a renamed optional key falls back to its default,
    /// which the file held).
    ErrorOrIdentical,
    /// The version field: 2 reads like 3; anything else is an unsupported version.
    Version(u32),
    /// A vocab piece or special token id: weights are untouched, so the ids embed bit for bit;
    /// the text's tokenization may change, so its result only has to be a finite unit vector.
    /// (Or a typed error, e.g. an id outside the vocab.)
    TokenizerOnly,
    /// A value the format cannot check changed the computation (an epsilon, a dropped optional
    /// tensor, a same-size type swap): a typed error, or finite unit vectors. The label says
    /// which, for the tally.
    ErrorOrFiniteUnit(&'static str),
    /// `context_length` changed: a typed error, or the clean result for inputs that still fit
    /// (`n_ctx` only limits the input length); a text longer than it is cut (finite unit vector).
    ContextLength,
}

/// Whether `v` is a finite unit vector.
fn finite_unit(v: &[f32]) -> bool {
    let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().all(|x| x.is_finite()) && (norm - 1.0).abs() < 1e-3
}

/// Whether the outcome failed: the load, or every job.
fn failed(outcome: &Result<Embedded, Error>) -> bool {
    match outcome {
        Err(_) => true,
        Ok(e) => e.ids.is_err() && e.text.as_ref().is_none_or(|t| t.is_err()),
    }
}

/// Every error of an outcome.
fn errors(outcome: &Result<Embedded, Error>) -> Vec<Error> {
    match outcome {
        Err(e) => vec![*e],
        Ok(e) => e
            .ids
            .as_ref()
            .err()
            .into_iter()
            .chain(e.text.as_ref().and_then(|t| t.as_ref().err()))
            .copied()
            .collect(),
    }
}

/// The outcome's class for the tally, or why it breaks the expectation.
fn judge(
    expect: Expect,
    outcome: &Result<Embedded, Error>,
    clean: &Embedded,
) -> Result<&'static str, String> {
    if let Some(bug) = errors(outcome).into_iter().find(|e| *e == Error::InvalidState) {
        return Err(format!("internal error {bug:?}"));
    }
    let identical = outcome.as_ref().is_ok_and(|e| e == clean);
    let all_finite_unit = |e: &Embedded| e.ids.iter().chain(e.text.iter().flatten()).all(|v| finite_unit(v));
    let ok = match expect {
        Expect::Error => failed(outcome),
        Expect::ErrorLike(is, _) => matches!(outcome, Err(e) if is(e)),
        Expect::Identical => identical,
        Expect::ErrorOrIdentical => failed(outcome) || identical,
        Expect::Version(v) => match (v, outcome) {
            (2, _) => identical,
            (
                _,
                Err(Error::Malformed {
                    what: Malformed::UnsupportedVersion(_) | Malformed::BigEndian, ..
                }),
            ) => true,
            _ => false,
        },
        Expect::TokenizerOnly => match outcome {
            Err(_) => true,
            Ok(e) => e.ids == clean.ids && e.text.iter().all(|t| t.as_ref().is_ok_and(|v| finite_unit(v))),
        },
        Expect::ErrorOrFiniteUnit(_) => match outcome {
            Err(_) => true,
            Ok(e) => e.ids.iter().chain(e.text.iter().flatten()).all(|v| finite_unit(v)),
        },
        Expect::ContextLength => match outcome {
            Err(_) => true,
            Ok(e) => {
                let ids_ok = e.ids == clean.ids
                    || matches!(e.ids, Err(Error::Input(stepembed::core::InputError::TooManyTokens { .. })));
                ids_ok && all_finite_unit(e)
            }
        },
    };
    if !ok {
        let summary = match outcome {
            Err(e) => format!("error {e:?}"),
            Ok(e) if identical => "the clean result".to_owned(),
            Ok(e) => format!(
                "a different result (ids: {}, finite unit: {})",
                e.ids == clean.ids,
                all_finite_unit(e)
            ),
        };
        let expected = match expect {
            Expect::ErrorLike(_, what) => format!("an error: {what}"),
            other => format!("{other:?}"),
        };
        return Err(format!("{summary}, expected {expected}"));
    }
    Ok(match (outcome, expect) {
        (Err(_), _) => "error",
        (Ok(_), _) if identical => "identical",
        (Ok(_), Expect::ErrorOrFiniteUnit(why)) => why,
        (Ok(_), Expect::TokenizerOnly) => "tokenization changed",
        (Ok(_), Expect::ContextLength) => "text cut at the new context",
        (Ok(_), _) => "explained difference",
    })
}

/// The keys without which the model does not load.
const REQUIRED_KEYS: &[&str] = &[
    "general.architecture",
    "bert.block_count",
    "bert.context_length",
    "bert.embedding_length",
    "bert.feed_forward_length",
    "bert.attention.head_count",
    "bert.attention.layer_norm_epsilon",
    "tokenizer.ggml.tokens",
    "tokenizer.ggml.unknown_token_id",
    "tokenizer.ggml.cls_token_id",
    "tokenizer.ggml.seperator_token_id",
];

/// Whether a bert model may lack tensor `name`: only the token-type table (biases are required).
fn optional_tensor(name: &str) -> bool {
    name == "token_types.weight"
}

/// The byte size of `ne` elements of ggml type `ty`, if the type is known and `ne[0]` fits its
/// blocks.
fn tensor_bytes(ty: u32, ne: &[u64]) -> Option<u64> {
    let row = GgmlType::from_id(ty)?.row_bytes(ne[0])?;
    ne[1..].iter().try_fold(row, |acc, &d| acc.checked_mul(d))
}

/// What changing tensor `t`'s type id to `new` may do: a type of the same byte size for its
/// shape is indistinguishable from a valid file; any other breaks the data chain or the type
/// check.
fn type_change(layout: &Layout, t: usize, new: u32) -> Expect {
    let info = &layout.tensors[t];
    let computable = GgmlType::from_id(new).is_some_and(stepembed::core::quant::is_computable);
    if computable && tensor_bytes(new, &info.ne) == tensor_bytes(info.ty, &info.ne) {
        Expect::ErrorOrFiniteUnit("same-size type swap: undetectable")
    } else {
        Expect::Error
    }
}

/// The expectation for a single-bit flip of byte `at` (bit `bit`) of the tiny model.
fn expect_flip(layout: &Layout, bytes: &[u8], at: usize, bit: u8) -> Expect {
    let key = |k: usize| layout.kvs[k].key.as_str();
    let flipped_u32 = |start: usize| {
        let mut v = [0u8; 4];
        v.copy_from_slice(&bytes[start..start + 4]);
        v[at - start] ^= 1 << bit;
        u32::from_le_bytes(v)
    };
    match layout.fields[at] {
        Field::Magic => {
            Expect::ErrorLike(|e| matches!(e, Error::Malformed { what: Malformed::BadMagic, .. }), "BadMagic")
        }
        Field::Version => Expect::Version(flipped_u32(4)),
        Field::TensorCount | Field::KvCount | Field::KeyLen(_) | Field::StringLen(_) => Expect::Error,
        Field::ArrayType(_) | Field::ArrayCount(_) | Field::ElemLen(..) => Expect::Error,
        Field::NameLen(_) | Field::NDims(_) | Field::Dim(..) | Field::Offset(_) => Expect::Error,
        // A renamed key is an unknown key, ignored: a required one is missing, an optional one
        // falls back to its default (the file held the defaults: mean pooling, a bert
        // tokenizer, no [PAD]/[MASK] in the text).
        Field::Key(k) if REQUIRED_KEYS.contains(&key(k)) => Expect::Error,
        Field::Key(_) => Expect::ErrorOrIdentical,
        // Another type of the same size holding the same number (u32 ↔ i32) reads the same.
        Field::ValueType(_) => Expect::ErrorOrIdentical,
        Field::Value(k) => match key(k) {
            "general.name" => Expect::Identical,
            "general.architecture" => Expect::ErrorLike(
                |e| {
                    matches!(
                        e,
                        Error::Unsupported(Unsupported::Architecture(_))
                            | Error::Malformed { what: Malformed::WrongValueType, .. }
                    )
                },
                "another architecture (or a non-UTF-8 name)",
            ),
            "tokenizer.ggml.model" => Expect::ErrorLike(
                |e| matches!(e, Error::Unsupported(Unsupported::TokenizerModel(_))),
                "another tokenizer model",
            ),
            "bert.pooling_type" => Expect::ErrorLike(
                // Every one-bit flip of 1 (mean) is 0 or ≥ 3: never 2 (CLS).
                |e| matches!(e, Error::Unsupported(Unsupported::PoolingType(_))),
                "an unknown pooling type",
            ),
            // Every one-bit flip of 2 layers is 0, 3 or ≥ 6 (missing tensors), of 2 heads one that
            // does not divide 32, of 32 / 64 a width no tensor has.
            "bert.block_count" | "bert.attention.head_count" => Expect::Error,
            "bert.embedding_length" | "bert.feed_forward_length" => Expect::Error,
            "bert.context_length" => Expect::ContextLength,
            "bert.attention.layer_norm_epsilon" => Expect::ErrorOrFiniteUnit("another epsilon in [0, 1)"),
            k if k.starts_with("tokenizer.ggml.") && k.ends_with("_token_id") => Expect::TokenizerOnly,
            other => panic!("no expectation for the value of {other}"),
        },
        Field::Elem(_, _) => Expect::TokenizerOnly,
        Field::Name(t) if optional_tensor(&layout.tensors[t].name) => {
            Expect::ErrorOrFiniteUnit("token_types renamed: dropped, as if absent")
        }
        Field::Name(_) => Expect::Error,
        Field::Type(t) => type_change(layout, t, flipped_u32(layout.tensors[t].ty_at)),
        Field::Padding => Expect::Identical,
    }
}

/// A readable name of the field at a byte.
fn describe(layout: &Layout, field: Field) -> String {
    let key = |k: usize| &layout.kvs[k].key;
    let tensor = |t: usize| &layout.tensors[t].name;
    match field {
        Field::KeyLen(k) | Field::Key(k) | Field::ValueType(k) | Field::StringLen(k) | Field::Value(k) => {
            format!("{field:?} of {}", key(k))
        }
        Field::ArrayType(k) | Field::ArrayCount(k) | Field::ElemLen(k, _) | Field::Elem(k, _) => {
            format!("{field:?} of {}", key(k))
        }
        Field::NameLen(t)
        | Field::Name(t)
        | Field::NDims(t)
        | Field::Dim(t, _)
        | Field::Type(t)
        | Field::Offset(t) => {
            format!("{field:?} of {}", tensor(t))
        }
        other => format!("{other:?}"),
    }
}

/// The field's kind, for the tally.
fn kind(field: Field) -> &'static str {
    match field {
        Field::Magic => "magic",
        Field::Version => "version",
        Field::TensorCount | Field::KvCount => "counts",
        Field::KeyLen(_) => "key length",
        Field::Key(_) => "key",
        Field::ValueType(_) => "value type",
        Field::StringLen(_) => "string length",
        Field::Value(_) => "value",
        Field::ArrayType(_) | Field::ArrayCount(_) => "array header",
        Field::ElemLen(..) => "vocab piece length",
        Field::Elem(..) => "vocab piece",
        Field::NameLen(_) => "tensor name length",
        Field::Name(_) => "tensor name",
        Field::NDims(_) | Field::Dim(..) => "tensor dims",
        Field::Type(_) => "tensor type",
        Field::Offset(_) => "tensor offset",
        Field::Padding => "padding",
    }
}

/// Outcome counts by field kind and class, and the violations.
#[derive(Default)]
struct Report {
    tally: BTreeMap<(&'static str, &'static str), usize>,
    violations: Vec<String>,
}

impl Report {
    fn record(&mut self, field: Field, verdict: Result<&'static str, String>, what: impl FnOnce() -> String) {
        match verdict {
            Ok(class) => *self.tally.entry((kind(field), class)).or_default() += 1,
            Err(why) => self.violations.push(format!("{}: {why}", what())),
        }
    }

    fn finish(self, name: &str) {
        let total: usize = self.tally.values().sum::<usize>() + self.violations.len();
        eprintln!("{name}: {total} corrupted files");
        for ((kind, class), n) in &self.tally {
            eprintln!("  {kind:>18} {class:<36} {n}");
        }
        for v in &self.violations {
            eprintln!("VIOLATION {v}");
        }
        assert!(self.violations.is_empty(), "{name}: {} violations (listed above)", self.violations.len());
    }
}

/// Token ids for the id input: [CLS] the quick brown fox [SEP] of the tiny vocab.
const TINY_IDS: [u32; 6] = [2, 5, 6, 7, 8, 3];

#[test]
fn every_bit_flip_of_the_tiny_models_header_is_an_error_the_clean_result_or_explained() {
    let clean_bytes = tiny_bert::model();
    let layout = gguf_layout::parse(&clean_bytes);
    assert!(layout.data_start <= 16 * 1024, "header of {} bytes", layout.data_start);
    assert!(layout.kv("tokenizer.ggml.tokens").is_some());
    let clean = run(&clean_bytes, Some(tiny_bert::TEXT), &TINY_IDS).expect("the clean model loads");
    assert!(clean.ids.as_ref().is_ok_and(|v| finite_unit(v)));
    assert!(clean.text.as_ref().is_some_and(|t| t.as_ref().is_ok_and(|v| finite_unit(v))));

    let mut report = Report::default();
    let mut bytes = clean_bytes.clone();
    for at in 0..layout.data_start {
        for bit in 0..8u8 {
            bytes[at] ^= 1 << bit;
            let outcome = run(&bytes, Some(tiny_bert::TEXT), &TINY_IDS);
            bytes[at] ^= 1 << bit;
            let expect = expect_flip(&layout, &clean_bytes, at, bit);
            let field = layout.fields[at];
            report.record(field, judge(expect, &outcome, &clean), || {
                format!("byte {at} bit {bit} ({})", describe(&layout, field))
            });
        }
    }
    report.finish("tiny bert, every bit before the data section");
}

/// The one-byte changes of a field byte: +1, −1, 0x00, 0xFF, xor 0x80 (those that change it).
fn byte_changes(b: u8) -> Vec<u8> {
    let mut v = vec![b.wrapping_add(1), b.wrapping_sub(1), 0x00, 0xFF, b ^ 0x80];
    v.sort_unstable();
    v.dedup();
    v.retain(|&x| x != b);
    v
}

/// The type of the same byte size that the format cannot tell apart from `ty`.
fn same_size_twin(ty: GgmlType) -> Option<GgmlType> {
    match ty {
        GgmlType::F16 => Some(GgmlType::BF16),
        GgmlType::BF16 => Some(GgmlType::F16),
        GgmlType::Q4_0 => Some(GgmlType::IQ4_NL),
        GgmlType::IQ4_NL => Some(GgmlType::Q4_0),
        _ => None,
    }
}

/// Sweeps every one-byte change of every tensor-table field of a committed model.
fn sweep_tensor_table(model: &str) {
    let clean_bytes = common::read(&format!("models/{model}.gguf"));
    let layout = gguf_layout::parse(&clean_bytes);
    let ids = [101u32, 7592, 2088, 102];
    let clean = run(&clean_bytes, None, &ids).expect("the clean model loads");
    let mut report = Report::default();
    let mut bytes = clean_bytes.clone();
    let mut twins = 0;
    for (t, info) in layout.tensors.iter().enumerate() {
        let fields = info.dims_at.iter().map(|&at| (at, 8)).chain([(info.ty_at, 4), (info.offset_at, 8)]);
        for (start, len) in fields {
            for at in start..start + len {
                for value in byte_changes(clean_bytes[at]) {
                    bytes[at] = value;
                    let outcome = run(&bytes, None, &ids);
                    bytes[at] = clean_bytes[at];
                    let field = layout.fields[at];
                    let expect = match field {
                        Field::Type(_) => {
                            let mut changed: [u8; 4] = clean_bytes[start..start + 4].try_into().unwrap();
                            changed[at - start] = value;
                            type_change(&layout, t, u32::from_le_bytes(changed))
                        }
                        _ => Expect::Error,
                    };
                    report.record(field, judge(expect, &outcome, &clean), || {
                        format!("byte {at} = {value:#04x} ({})", describe(&layout, field))
                    });
                }
            }
        }
        // The same-size twin type: a valid-looking file the format cannot detect.
        let ty = GgmlType::from_id(info.ty).expect("known type");
        if let Some(twin) = same_size_twin(ty) {
            twins += 1;
            bytes[info.ty_at..info.ty_at + 4].copy_from_slice(&twin.id().to_le_bytes());
            let outcome = run(&bytes, None, &ids);
            bytes[info.ty_at..info.ty_at + 4].copy_from_slice(&info.ty.to_le_bytes());
            let expect = type_change(&layout, t, twin.id());
            assert!(matches!(expect, Expect::ErrorOrFiniteUnit(_)), "{ty:?} and {twin:?} have the same size");
            report.record(Field::Type(t), judge(expect, &outcome, &clean), || {
                format!("{} type {ty:?} -> {twin:?}", info.name)
            });
        }
    }
    eprintln!("{model}: {twins} same-size type swaps");
    report.finish(&format!("{model}, every one-byte change of the tensor table"));
}

#[test]
fn every_byte_change_of_the_q8_0_models_tensor_table_is_an_error_or_explained() {
    sweep_tensor_table("bert-tiny-Q8_0");
}

#[test]
fn every_byte_change_of_the_f16_models_tensor_table_is_an_error_or_explained() {
    sweep_tensor_table("bert-tiny-F16");
}
