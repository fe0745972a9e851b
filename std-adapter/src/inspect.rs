//! `stepembed inspect`: a validated listing of a GGUF file's metadata and tensor table.

use std::collections::HashSet;
use std::fmt::Write as _;

use serde_json::{json, Map, Value as Json};
use stepembed_core::gguf::{self, ArrayReader, Event, Layout, Reader, TensorInfo, Value, ValueType};
use stepembed_core::io::{read_exact_at, Source};
use stepembed_core::{Error, Malformed};

use crate::validate::{self, ScanError};

/// How many elements of each array a listing shows (gguf-py's reference listings show 5).
pub const ARRAY_HEAD: usize = 5;

/// One metadata entry as listed.
#[derive(Debug, Clone, PartialEq)]
pub enum MetaValue {
    /// A scalar or string, already in JSON form, with its gguf-py type name.
    Scalar { ty: &'static str, value: Json },
    /// An array: element type name, length and its first [`ARRAY_HEAD`] elements.
    Array { of: &'static str, len: u64, first: Vec<Json> },
}

/// A whole file, read and validated.
#[derive(Debug, Clone)]
pub struct Listing {
    /// Where everything is.
    pub layout: Layout,
    /// Metadata in file order.
    pub metadata: Vec<(String, MetaValue)>,
    /// Tensors in file order, with absolute data offsets.
    pub tensors: Vec<TensorInfo>,
}

/// Reads and validates the whole file: every KV, every tensor's extent against the real file
/// size, alignment, sizes, duplicates and overlaps. The first problem is the error.
pub fn list<S: Source>(io: &mut S) -> Result<Listing, Error> {
    let mut scratch = vec![0u8; gguf::DEFAULT_SCRATCH];
    let mut reader = Reader::new(&mut scratch)?;
    let mut pending = Vec::new();
    let mut tensors = Vec::new();
    let layout = loop {
        match reader.next_event(io)? {
            Event::Kv { key, value } => pending.push((key.to_owned(), owned(value))),
            Event::Tensor(t) => tensors.push(t),
            Event::Done(layout) => break layout,
            Event::Header(_) | Event::Progress => {}
        }
    };
    let mut seen = HashSet::new();
    let mut metadata = Vec::with_capacity(pending.len());
    for (key, value) in pending {
        if !seen.insert(key.clone()) {
            return Err(Error::malformed(Malformed::DuplicateKey, layout.tensor_info_offset));
        }
        metadata.push((key, resolve(io, value)?));
    }
    let mut sorted = tensors.clone();
    gguf::check_table(&mut sorted)?;
    Ok(Listing { layout, metadata, tensors })
}

/// A KV value detached from the reader's buffer, to be completed from the file.
enum Pending {
    Scalar(Value<'static>),
    String { offset: u64, len: u64 },
    Array(gguf::ArrayRef),
}

fn owned(value: Value<'_>) -> Pending {
    match value {
        Value::String(s) => Pending::String { offset: s.offset, len: s.len },
        Value::Array(a) => Pending::Array(a),
        Value::U8(v) => Pending::Scalar(Value::U8(v)),
        Value::I8(v) => Pending::Scalar(Value::I8(v)),
        Value::U16(v) => Pending::Scalar(Value::U16(v)),
        Value::I16(v) => Pending::Scalar(Value::I16(v)),
        Value::U32(v) => Pending::Scalar(Value::U32(v)),
        Value::I32(v) => Pending::Scalar(Value::I32(v)),
        Value::F32(v) => Pending::Scalar(Value::F32(v)),
        Value::Bool(v) => Pending::Scalar(Value::Bool(v)),
        Value::U64(v) => Pending::Scalar(Value::U64(v)),
        Value::I64(v) => Pending::Scalar(Value::I64(v)),
        Value::F64(v) => Pending::Scalar(Value::F64(v)),
    }
}

fn resolve<S: Source>(io: &mut S, value: Pending) -> Result<MetaValue, Error> {
    Ok(match value {
        Pending::Scalar(v) => MetaValue::Scalar { ty: v.value_type().name(), value: scalar_json(&v) },
        Pending::String { offset, len } => MetaValue::Scalar {
            ty: ValueType::String.name(),
            value: Json::String(read_string(io, offset, len)?),
        },
        Pending::Array(a) => {
            let mut scratch = vec![0u8; gguf::DEFAULT_SCRATCH];
            let mut elems = ArrayReader::new(a, &mut scratch);
            let mut first = Vec::new();
            while first.len() < ARRAY_HEAD {
                let Some(v) = elems.next(io)? else { break };
                let v = match v {
                    Value::String(s) => Pending::String { offset: s.offset, len: s.len },
                    other => owned(other),
                };
                first.push(match resolve(io, v)? {
                    MetaValue::Scalar { value, .. } => value,
                    MetaValue::Array { len, .. } => json!({ "len": len }),
                });
            }
            MetaValue::Array { of: a.elem.name(), len: a.count, first }
        }
    })
}

/// A string value read whole from the file (lossily decoded if it is not UTF-8).
fn read_string<S: Source>(io: &mut S, offset: u64, len: u64) -> Result<String, Error> {
    let n = usize::try_from(len).map_err(|_| Error::malformed(Malformed::LengthTooLarge(len), offset))?;
    let mut buf = vec![0u8; n];
    read_exact_at(io, offset, &mut buf)?;
    Ok(String::from_utf8(buf).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()))
}

fn scalar_json(v: &Value<'_>) -> Json {
    match *v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F32(x) => float_json(f64::from(x)),
        Value::F64(x) => float_json(x),
        Value::Bool(x) => json!(x),
        Value::String(_) | Value::Array(_) => Json::Null,
    }
}

/// JSON has no NaN or infinity: those become strings, as Python's json would not allow either.
fn float_json(x: f64) -> Json {
    serde_json::Number::from_f64(x).map_or_else(|| Json::String(x.to_string()), Json::Number)
}

impl Listing {
    /// Adds `sum`, `abs_sum` and `first` (see [`DequantStats`]) to every tensor of `json` (a
    /// [`Listing::to_json`]), streaming each tensor once; `null` for types that cannot be decoded.
    /// The first tensor holding a NaN or an infinity is the error ([`dequant_stats`]).
    pub fn add_dequant_stats<S: Source>(&self, io: &mut S, json: &mut Json) -> Result<(), ScanError> {
        let Some(tensors) = json.get_mut("tensors").and_then(Json::as_array_mut) else {
            return Ok(());
        };
        for (t, j) in self.tensors.iter().zip(tensors) {
            let stats = dequant_stats(io, t)?;
            let Some(obj) = j.as_object_mut() else {
                continue;
            };
            match stats {
                Some(s) => {
                    obj.insert("sum".into(), float_json(s.sum));
                    obj.insert("abs_sum".into(), float_json(s.abs_sum));
                    obj.insert("first".into(), s.first.iter().map(|&v| float_json(f64::from(v))).collect());
                }
                None => {
                    for k in ["sum", "abs_sum", "first"] {
                        obj.insert(k.into(), Json::Null);
                    }
                }
            }
        }
        Ok(())
    }

    /// The listing as JSON, in the conventions of the reference listings made with gguf-py
    /// (`shared/tools/ref_tensors.py`).
    pub fn to_json(&self) -> Json {
        let mut metadata = Map::new();
        for (key, value) in &self.metadata {
            let v = match value {
                MetaValue::Scalar { ty, value } => json!({ "type": ty, "value": value }),
                MetaValue::Array { of, len, first } => {
                    json!({ "array_of": of, "len": len, "first": first })
                }
            };
            metadata.insert(key.clone(), v);
        }
        let tensors: Vec<Json> = self.tensors.iter().map(tensor_json).collect();
        json!({
            "version": self.layout.version,
            "alignment": self.layout.alignment,
            "tensor_count": self.layout.tensor_count,
            "metadata": metadata,
            "tensors": tensors,
        })
    }

    /// The listing as a human-readable report.
    pub fn to_text(&self) -> String {
        let l = &self.layout;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "GGUF v{}  {} bytes  alignment {}  {} metadata keys  {} tensors (data at byte {})",
            l.version, l.file_len, l.alignment, l.kv_count, l.tensor_count, l.data_offset
        );
        let _ = writeln!(out, "\nmetadata:");
        let width = self.metadata.iter().map(|(k, _)| k.len()).max().unwrap_or(0);
        for (key, value) in &self.metadata {
            let shown = match value {
                MetaValue::Scalar { ty, value } => format!("{ty:<8} {}", short(value)),
                MetaValue::Array { of, len, first } => {
                    let head: Vec<String> = first.iter().map(short).collect();
                    format!(
                        "[{of}; {len}] {}{}",
                        head.join(", "),
                        if *len > first.len() as u64 { ", …" } else { "" }
                    )
                }
            };
            let _ = writeln!(out, "  {key:<width$}  {shown}");
        }
        let _ = writeln!(out, "\ntensors:");
        let name_w = self.tensors.iter().map(|t| t.name.as_str().len()).max().unwrap_or(4).max(4);
        let _ = writeln!(
            out,
            "  {:<name_w$}  {:<7}  {:<22}  {:>12}  {:>11}",
            "name", "type", "shape (ne)", "offset", "bytes"
        );
        for t in &self.tensors {
            let ne: Vec<String> = t.dims().iter().map(u64::to_string).collect();
            let _ = writeln!(
                out,
                "  {:<name_w$}  {:<7}  {:<22}  {:>12}  {:>11}",
                t.name.as_str(),
                t.ty.name(),
                ne.join(" x "),
                t.offset,
                t.n_bytes
            );
        }
        out
    }
}

/// Statistics of a tensor's dequantized values, accumulated in f64.
#[derive(Debug, Clone, PartialEq)]
pub struct DequantStats {
    /// Σ v.
    pub sum: f64,
    /// Σ |v|.
    pub abs_sum: f64,
    /// The first (up to) 8 values.
    pub first: Vec<f32>,
}

/// Streams `t` through a fixed buffer and computes its [`DequantStats`]; `None` for a type the
/// engine cannot decode. A block that decodes to NaN or infinity is [`ScanError::NonFinite`]:
/// statistics over it would mean nothing.
pub fn dequant_stats<S: Source>(io: &mut S, t: &TensorInfo) -> Result<Option<DequantStats>, ScanError> {
    if !stepembed_core::quant::is_computable(t.ty) {
        return Ok(None);
    }
    let kernels = stepembed_core::quant::Kernels::detect();
    let (block_bytes, block_elems) = (t.ty.block_bytes() as usize, t.ty.block_elems() as usize);
    let mut raw = vec![0u8; 64 * 1024 * block_bytes / block_elems + block_bytes];
    let mut vals = vec![0f32; raw.len() / block_bytes * block_elems];
    let mut stats = DequantStats { sum: 0.0, abs_sum: 0.0, first: Vec::new() };
    validate::scan_tensor(io, t, &mut raw, |chunk| {
        let n = kernels.dequantize(t.ty, chunk, &mut vals)?;
        for &v in &vals[..n] {
            stats.sum += f64::from(v);
            stats.abs_sum += f64::from(v).abs();
        }
        let want = 8usize.saturating_sub(stats.first.len()).min(n);
        stats.first.extend_from_slice(&vals[..want]);
        Ok(())
    })?;
    Ok(Some(stats))
}

/// One tensor as a JSON object (name, type, ne, data_offset, n_bytes).
pub fn tensor_json(t: &TensorInfo) -> Json {
    json!({
        "name": t.name.as_str(),
        "type": t.ty.name(),
        "ne": t.dims(),
        "data_offset": t.offset,
        "n_bytes": t.n_bytes,
    })
}

/// A value for the human-readable listing, long strings cut.
fn short(v: &Json) -> String {
    let s = match v {
        Json::String(s) => format!("{s:?}"),
        other => other.to_string(),
    };
    if s.chars().count() > 60 {
        let cut: String = s.chars().take(57).collect();
        format!("{cut}…")
    } else {
        s
    }
}
