//! GGUF metadata values: their type ids, scalar decoding, and references to strings and arrays
//! that stay in the file.

use crate::error::{Error, Malformed, Result};

/// A metadata value type id (GGUF `gguf_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ValueType {
    /// 0
    U8,
    /// 1
    I8,
    /// 2
    U16,
    /// 3
    I16,
    /// 4
    U32,
    /// 5
    I32,
    /// 6
    F32,
    /// 7
    Bool,
    /// 8: u64 length + UTF-8 bytes
    String,
    /// 9: u32 element type + u64 count + elements
    Array,
    /// 10
    U64,
    /// 11
    I64,
    /// 12
    F64,
}

impl ValueType {
    /// The type with this id, if any.
    pub const fn from_id(id: u32) -> Option<Self> {
        Some(match id {
            0 => ValueType::U8,
            1 => ValueType::I8,
            2 => ValueType::U16,
            3 => ValueType::I16,
            4 => ValueType::U32,
            5 => ValueType::I32,
            6 => ValueType::F32,
            7 => ValueType::Bool,
            8 => ValueType::String,
            9 => ValueType::Array,
            10 => ValueType::U64,
            11 => ValueType::I64,
            12 => ValueType::F64,
            _ => return None,
        })
    }

    /// The type with this id, or [`Malformed::UnknownValueType`] at `offset`.
    pub(crate) fn parse(id: u32, offset: u64) -> Result<Self> {
        Self::from_id(id).ok_or(Error::malformed(Malformed::UnknownValueType(id), offset))
    }

    /// The name gguf-py gives the type (`"UINT32"`, `"STRING"`, …).
    pub const fn name(self) -> &'static str {
        match self {
            ValueType::U8 => "UINT8",
            ValueType::I8 => "INT8",
            ValueType::U16 => "UINT16",
            ValueType::I16 => "INT16",
            ValueType::U32 => "UINT32",
            ValueType::I32 => "INT32",
            ValueType::F32 => "FLOAT32",
            ValueType::Bool => "BOOL",
            ValueType::String => "STRING",
            ValueType::Array => "ARRAY",
            ValueType::U64 => "UINT64",
            ValueType::I64 => "INT64",
            ValueType::F64 => "FLOAT64",
        }
    }

    /// Bytes of a value of this type, for fixed-size types; `None` for strings and arrays.
    pub const fn fixed_size(self) -> Option<u64> {
        match self {
            ValueType::U8 | ValueType::I8 | ValueType::Bool => Some(1),
            ValueType::U16 | ValueType::I16 => Some(2),
            ValueType::U32 | ValueType::I32 | ValueType::F32 => Some(4),
            ValueType::U64 | ValueType::I64 | ValueType::F64 => Some(8),
            ValueType::String | ValueType::Array => None,
        }
    }

    /// The fewest bytes one value of this type can take in a file (a string or an array header
    /// with no content).
    pub const fn min_size(self) -> u64 {
        match self {
            ValueType::String => 8,
            ValueType::Array => 12,
            _ => match self.fixed_size() {
                Some(n) => n,
                None => 1,
            },
        }
    }
}

/// A metadata value. Scalars are decoded; strings and arrays are references into the file.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value<'a> {
    /// UINT8
    U8(u8),
    /// INT8
    I8(i8),
    /// UINT16
    U16(u16),
    /// INT16
    I16(i16),
    /// UINT32
    U32(u32),
    /// INT32
    I32(i32),
    /// FLOAT32
    F32(f32),
    /// BOOL (any non-zero byte is true)
    Bool(bool),
    /// STRING
    String(Str<'a>),
    /// ARRAY
    Array(ArrayRef),
    /// UINT64
    U64(u64),
    /// INT64
    I64(i64),
    /// FLOAT64
    F64(f64),
}

impl Value<'_> {
    /// The value's type.
    pub const fn value_type(&self) -> ValueType {
        match self {
            Value::U8(_) => ValueType::U8,
            Value::I8(_) => ValueType::I8,
            Value::U16(_) => ValueType::U16,
            Value::I16(_) => ValueType::I16,
            Value::U32(_) => ValueType::U32,
            Value::I32(_) => ValueType::I32,
            Value::F32(_) => ValueType::F32,
            Value::Bool(_) => ValueType::Bool,
            Value::String(_) => ValueType::String,
            Value::Array(_) => ValueType::Array,
            Value::U64(_) => ValueType::U64,
            Value::I64(_) => ValueType::I64,
            Value::F64(_) => ValueType::F64,
        }
    }

    /// The value as an unsigned integer, when it is a non-negative integer of any width.
    pub fn as_u64(&self) -> Option<u64> {
        match *self {
            Value::U8(v) => Some(v.into()),
            Value::U16(v) => Some(v.into()),
            Value::U32(v) => Some(v.into()),
            Value::U64(v) => Some(v),
            Value::I8(v) => u64::try_from(v).ok(),
            Value::I16(v) => u64::try_from(v).ok(),
            Value::I32(v) => u64::try_from(v).ok(),
            Value::I64(v) => u64::try_from(v).ok(),
            _ => None,
        }
    }

    /// The value as a float, when it is a float.
    pub fn as_f64(&self) -> Option<f64> {
        match *self {
            Value::F32(v) => Some(v.into()),
            Value::F64(v) => Some(v),
            _ => None,
        }
    }

    /// The value as a complete UTF-8 string, when it is a string that was read whole.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::String(s) => s.as_str(),
            _ => None,
        }
    }
}

/// Decodes a fixed-size scalar of type `ty` from `bytes` (which hold at least its size).
///
/// Returns `None` for strings and arrays or when `bytes` is too short.
pub(crate) fn decode_scalar(ty: ValueType, bytes: &[u8]) -> Option<Value<'static>> {
    fn arr<const N: usize>(b: &[u8]) -> Option<[u8; N]> {
        b.get(..N)?.try_into().ok()
    }
    Some(match ty {
        ValueType::U8 => Value::U8(*bytes.first()?),
        ValueType::I8 => Value::I8(i8::from_le_bytes(arr(bytes)?)),
        ValueType::Bool => Value::Bool(*bytes.first()? != 0),
        ValueType::U16 => Value::U16(u16::from_le_bytes(arr(bytes)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(arr(bytes)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(arr(bytes)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(arr(bytes)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(arr(bytes)?)),
        ValueType::U64 => Value::U64(u64::from_le_bytes(arr(bytes)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(arr(bytes)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(arr(bytes)?)),
        ValueType::String | ValueType::Array => return None,
    })
}

/// A string value: where its bytes are in the file, and as many of them as the reader's window
/// held (all of them when `head.len() == len`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Str<'a> {
    /// Absolute offset of the first byte (after the u64 length).
    pub offset: u64,
    /// Length in bytes.
    pub len: u64,
    /// The first bytes of the string: all of it, or as much as fitted the reader's window.
    pub head: &'a [u8],
}

impl<'a> Str<'a> {
    /// Whether `head` holds the whole string.
    pub fn is_complete(&self) -> bool {
        self.head.len() as u64 == self.len
    }

    /// The string, when it was read whole and is UTF-8.
    pub fn as_str(&self) -> Option<&'a str> {
        if self.is_complete() {
            core::str::from_utf8(self.head).ok()
        } else {
            None
        }
    }
}

/// An array value left in the file: its element type, count, and where its elements are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArrayRef {
    /// The element type. [`ValueType::Array`] for an array of arrays (one level of nesting).
    pub elem: ValueType,
    /// Number of elements.
    pub count: u64,
    /// Absolute offset of the first element.
    pub offset: u64,
    /// Total bytes of the elements (validated: they lie within the file).
    pub byte_len: u64,
}

impl ArrayRef {
    /// Absolute offset of element `index` of a fixed-size array; `None` for string or nested
    /// arrays and for indexes past the end.
    pub fn element_offset(&self, index: u64) -> Option<u64> {
        if index >= self.count {
            return None;
        }
        self.offset.checked_add(index.checked_mul(self.elem.fixed_size()?)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalars_decode_little_endian() {
        assert_eq!(decode_scalar(ValueType::U32, &[1, 2, 0, 0]), Some(Value::U32(0x201)));
        assert_eq!(decode_scalar(ValueType::I8, &[0xff]), Some(Value::I8(-1)));
        assert_eq!(decode_scalar(ValueType::Bool, &[2]), Some(Value::Bool(true)));
        assert_eq!(decode_scalar(ValueType::F32, &1.5f32.to_le_bytes()), Some(Value::F32(1.5)));
        assert_eq!(decode_scalar(ValueType::U64, &[0; 7]), None);
        assert_eq!(decode_scalar(ValueType::String, &[0; 16]), None);
    }

    #[test]
    fn integer_views() {
        assert_eq!(Value::I32(-1).as_u64(), None);
        assert_eq!(Value::I64(7).as_u64(), Some(7));
        assert_eq!(Value::F32(1.0).as_u64(), None);
        assert_eq!(Value::F32(1.0).as_f64(), Some(1.0));
    }
}
