//! Where every field of a (valid) GGUF file's header and tensor table lies, byte by byte: what
//! the sweeps use to say which field a corrupted byte belongs to. Independent of the core's
//! reader on purpose; it panics on a file it cannot parse (it only ever parses clean files).
#![allow(dead_code)]

use std::ops::Range;

/// A metadata entry of the file.
#[derive(Debug, Clone)]
pub struct KvInfo {
    pub key: String,
    /// The GGUF value type id.
    pub ty: u32,
    /// The value's bytes (for a string: after its length; for an array: after its header).
    pub value: Range<usize>,
}

/// A tensor-table entry of the file.
#[derive(Debug, Clone)]
pub struct TensorEntry {
    pub name: String,
    pub ne: Vec<u64>,
    pub ty: u32,
    /// Relative to the data section.
    pub offset: u64,
    /// Where its type id and offset fields are.
    pub ty_at: usize,
    pub offset_at: usize,
    /// Where each dim is.
    pub dims_at: Vec<usize>,
}

/// Which field of the file a byte belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    Magic,
    Version,
    TensorCount,
    KvCount,
    /// Key `kv`'s length or bytes.
    KeyLen(usize),
    Key(usize),
    /// The value type id of KV `kv`.
    ValueType(usize),
    /// A string value's length.
    StringLen(usize),
    /// A scalar value's bytes, or a string value's bytes.
    Value(usize),
    /// An array's element type or element count.
    ArrayType(usize),
    ArrayCount(usize),
    /// Element `i` of a string array: its length or bytes.
    ElemLen(usize, usize),
    Elem(usize, usize),
    /// Tensor `t`'s name length, name, dimension count, dimension `d`, type, offset.
    NameLen(usize),
    Name(usize),
    NDims(usize),
    Dim(usize, usize),
    Type(usize),
    Offset(usize),
    /// The zero bytes between the tensor table and the data section.
    Padding,
}

/// The parsed header: each byte's field, the KVs and the tensors.
#[derive(Debug, Clone)]
pub struct Layout {
    /// The field of every byte before the data section.
    pub fields: Vec<Field>,
    pub kvs: Vec<KvInfo>,
    pub tensors: Vec<TensorEntry>,
    pub alignment: u64,
    /// Where the data section starts.
    pub data_start: usize,
}

impl Layout {
    /// The KV named `key`.
    pub fn kv(&self, key: &str) -> Option<(usize, &KvInfo)> {
        self.kvs.iter().enumerate().find(|(_, k)| k.key == key)
    }
}

/// Byte sizes of the fixed-size GGUF value types, by type id (strings and arrays are `None`).
pub fn scalar_size(ty: u32) -> Option<usize> {
    match ty {
        0 | 1 | 7 => Some(1),
        2 | 3 => Some(2),
        4..=6 => Some(4),
        10..=12 => Some(8),
        _ => None,
    }
}

struct Cursor<'a> {
    bytes: &'a [u8],
    pos: usize,
    fields: Vec<Field>,
}

impl Cursor<'_> {
    fn take(&mut self, n: usize, field: Field) -> &[u8] {
        let start = self.pos;
        self.pos += n;
        self.fields.resize(self.pos, field);
        &self.bytes[start..self.pos]
    }

    fn u32(&mut self, field: Field) -> u32 {
        u32::from_le_bytes(self.take(4, field).try_into().unwrap())
    }

    fn u64(&mut self, field: Field) -> u64 {
        u64::from_le_bytes(self.take(8, field).try_into().unwrap())
    }

    fn string(&mut self, len: Field, bytes: Field) -> String {
        let n = self.u64(len) as usize;
        String::from_utf8_lossy(self.take(n, bytes)).into_owned()
    }
}

/// Parses the header and tensor table of a valid GGUF v2/v3 file.
pub fn parse(bytes: &[u8]) -> Layout {
    let mut c = Cursor { bytes, pos: 0, fields: Vec::new() };
    assert_eq!(c.take(4, Field::Magic), b"GGUF");
    let version = c.u32(Field::Version);
    assert!(version == 2 || version == 3, "version {version}");
    let n_tensors = c.u64(Field::TensorCount) as usize;
    let n_kv = c.u64(Field::KvCount) as usize;
    let mut kvs = Vec::new();
    let mut alignment = 32;
    for k in 0..n_kv {
        let key = c.string(Field::KeyLen(k), Field::Key(k));
        let ty = c.u32(Field::ValueType(k));
        let start = c.pos;
        match ty {
            8 => {
                c.string(Field::StringLen(k), Field::Value(k));
            }
            9 => {
                let elem = c.u32(Field::ArrayType(k));
                let count = c.u64(Field::ArrayCount(k)) as usize;
                for i in 0..count {
                    match elem {
                        8 => {
                            c.string(Field::ElemLen(k, i), Field::Elem(k, i));
                        }
                        _ => {
                            let size = scalar_size(elem).expect("array of fixed-size values");
                            c.take(size, Field::Elem(k, i));
                        }
                    }
                }
            }
            _ => {
                let size = scalar_size(ty).expect("known value type");
                let v = c.take(size, Field::Value(k));
                if key == "general.alignment" {
                    alignment = u32::from_le_bytes(v.try_into().unwrap()) as u64;
                }
            }
        }
        kvs.push(KvInfo { key, ty, value: start..c.pos });
    }
    let mut tensors = Vec::new();
    for t in 0..n_tensors {
        let name = c.string(Field::NameLen(t), Field::Name(t));
        let n_dims = c.u32(Field::NDims(t)) as usize;
        let mut ne = Vec::new();
        let mut dims_at = Vec::new();
        for d in 0..n_dims {
            dims_at.push(c.pos);
            ne.push(c.u64(Field::Dim(t, d)));
        }
        let ty_at = c.pos;
        let ty = c.u32(Field::Type(t));
        let offset_at = c.pos;
        let offset = c.u64(Field::Offset(t));
        tensors.push(TensorEntry { name, ne, ty, offset, ty_at, offset_at, dims_at });
    }
    let data_start = c.pos.next_multiple_of(alignment as usize);
    c.take(data_start - c.pos, Field::Padding);
    Layout { fields: c.fields, kvs, tensors, alignment, data_start }
}
