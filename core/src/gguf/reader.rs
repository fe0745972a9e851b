//! The streaming GGUF reader: a state machine that parses the header, the metadata and the
//! tensor table a bounded piece at a time, and hands each item out as an [`Event`].
//!
//! Nothing is kept but a few counters and the caller's scratch buffer: a 4 GB file is read with
//! the same memory as a 4 MB one. Everything in the file is treated as hostile; every length and
//! count is checked against the file's real size before it is trusted.

use crate::error::{Error, Malformed, Name, Result};
use crate::gguf::value::{decode_scalar, ArrayRef, Str, Value, ValueType};
use crate::gguf::window::Window;
use crate::gguf::GgmlType;
use crate::io::{source_len, Source};

/// The longest metadata key the reader accepts, in bytes.
pub const MAX_KEY_LEN: usize = 256;
/// The longest tensor name, in bytes (llama.cpp rejects names of 64 bytes or more).
pub const MAX_NAME_LEN: usize = Name::CAPACITY;
/// The smallest scratch buffer [`Reader::new`] accepts.
pub const MIN_SCRATCH: usize = MAX_KEY_LEN + 512;
/// The scratch size that reads large metadata efficiently (sequential 4 KiB reads).
pub const DEFAULT_SCRATCH: usize = 4096;
/// Alignment of tensor data when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;

const MAGIC: &[u8; 4] = b"GGUF";
const HEADER_LEN: u64 = 24;
/// The fewest bytes a metadata KV can occupy: u64 key length, u32 type, one byte of value.
const MIN_KV_BYTES: u64 = 13;
/// The fewest bytes a tensor info can occupy (a lower bound; the exact minimum is 32).
const MIN_TENSOR_INFO_BYTES: u64 = 28;
/// String or nested-array elements walked by one step.
const ELEMENTS_PER_STEP: u32 = 1024;
/// Tensor infos validated by one step of the first pass over the tensor table.
const TENSORS_PER_SCAN_STEP: u32 = 64;

/// The fixed file header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Number of tensor infos.
    pub tensor_count: u64,
    /// Number of metadata key-value pairs.
    pub kv_count: u64,
}

/// Where everything is in a file that has been read to the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// GGUF version (2 or 3).
    pub version: u32,
    /// Number of metadata key-value pairs.
    pub kv_count: u64,
    /// Number of tensors.
    pub tensor_count: u64,
    /// Alignment of tensor data (a power of two).
    pub alignment: u64,
    /// Absolute offset of the first tensor info.
    pub tensor_info_offset: u64,
    /// Absolute offset of the data section (tensor offsets are relative to it in the file).
    pub data_offset: u64,
    /// Size of the file in bytes.
    pub file_len: u64,
}

/// One tensor of the file: everything needed to find, size and decode its data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TensorInfo {
    /// The tensor's name.
    pub name: Name,
    /// Its element type.
    pub ty: GgmlType,
    /// Number of dimensions (1 to 4).
    pub n_dims: u8,
    /// Dimensions in ggml order (`ne[0]` is the contiguous row length); unused ones are 1.
    pub ne: [u64; 4],
    /// Absolute offset of the data in the file.
    pub offset: u64,
    /// Size of the data in bytes.
    pub n_bytes: u64,
}

impl TensorInfo {
    /// The used dimensions, `ne[0]` first.
    pub fn dims(&self) -> &[u64] {
        self.ne.get(..usize::from(self.n_dims)).unwrap_or(&self.ne)
    }

    /// The row length (`ne[0]`).
    pub fn row_len(&self) -> u64 {
        self.ne[0]
    }

    /// Number of rows: the product of `ne[1..]` (validated not to overflow when read).
    pub fn n_rows(&self) -> u64 {
        self.ne[1].saturating_mul(self.ne[2]).saturating_mul(self.ne[3])
    }

    /// Number of elements (validated not to overflow when read).
    pub fn n_elements(&self) -> u64 {
        self.row_len().saturating_mul(self.n_rows())
    }

    /// Bytes of one row.
    pub fn row_bytes(&self) -> u64 {
        self.ty.row_bytes(self.row_len()).unwrap_or(0)
    }

    /// Absolute offset one past the data's last byte.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.n_bytes)
    }
}

/// What one [`Reader::step`] produced.
#[derive(Debug, Clone, Copy, PartialEq)]
#[must_use]
pub enum Event<'a> {
    /// The header was read. First event of a full read.
    Header(Header),
    /// A metadata key-value pair. Strings and arrays stay in the file (see [`Str`], [`ArrayRef`]);
    /// an array's event comes once all its elements have been checked.
    Kv {
        /// The key.
        key: &'a str,
        /// The value.
        value: Value<'a>,
    },
    /// A tensor info, with its absolute data offset. Tensors come in file order, after all KVs.
    Tensor(TensorInfo),
    /// Work was done but there is nothing to report yet: call `step` again.
    Progress,
    /// The whole header and tensor table are read and valid. Later steps return this again.
    Done(Layout),
}

/// What a step has to report, without borrowing the reader (built into an [`Event`] afterwards).
enum Emit {
    Header(Header),
    /// A KV; for a string value, `head_len` bytes of it at its offset are in the window.
    Kv {
        value: Value<'static>,
        head_len: usize,
    },
    Tensor(TensorInfo),
    Progress,
    Done(Layout),
}

#[derive(Debug, Clone, Copy)]
enum Phase {
    Header,
    Kvs,
    /// Walking the elements of a string array or of an array of arrays.
    Walk(Walk),
    /// First pass over the tensor table: validate it and find where the data section starts.
    ScanTensors,
    /// Second pass: hand out each tensor with its absolute offset.
    Tensors,
    Done(Layout),
    Failed(Error),
}

#[derive(Debug, Clone, Copy)]
struct Walk {
    array: ArrayRef,
    /// Outer elements not yet walked.
    remaining: u64,
    /// For an array of arrays: the current inner array's element type and elements left.
    inner: Option<(ValueType, u64)>,
}

/// The streaming GGUF reader. See the module documentation.
///
/// Drive it with [`Reader::step`] until it returns [`Event::Done`]. Each step parses a bounded
/// number of items — one KV or tensor info, up to 1024 array elements, up to 64 tensor infos in
/// the first pass — each item at most one read of the scratch buffer, so a step reads at most
/// that many buffers' worth of the file. After an error the reader is poisoned: every later step
/// returns the same error.
#[derive(Debug)]
pub struct Reader<'s> {
    key: &'s mut [u8],
    key_len: usize,
    window: Window<'s>,
    phase: Phase,
    /// Next byte to parse.
    pos: u64,
    /// Items (KVs or tensors) of the current phase already parsed.
    index: u64,
    file_len: Option<u64>,
    header: Header,
    alignment: u64,
    tensor_info_offset: u64,
    data_offset: u64,
    /// First pass: where the next tensor's data must start (relative to the data section) and
    /// where the last one's ends, unpadded.
    chain: DataChain,
}

/// ggml's storage rule, checked in the first pass over the tensor table: tensor data is laid
/// out in table order, each tensor starting where the previous one ends rounded up to the
/// alignment, the first at the data section's start. Any patched offset, type or dimension of a
/// tensor breaks the chain at that tensor or the next, so no two tensors can share bytes and
/// no tensor's size can silently change.
#[derive(Debug, Clone, Copy, Default)]
struct DataChain {
    /// Where the next tensor must start, relative to the data section.
    next: u64,
    /// One past the last tensor's last byte, relative to the data section.
    end: u64,
}

impl<'s> Reader<'s> {
    /// A reader that reads a whole file from its start, parsing in `scratch`.
    ///
    /// `scratch` must hold at least [`MIN_SCRATCH`] bytes; [`DEFAULT_SCRATCH`] is a good size.
    pub fn new(scratch: &'s mut [u8]) -> Result<Self> {
        if scratch.len() < MIN_SCRATCH {
            return Err(Error::BufferTooSmall { needed: MIN_SCRATCH, given: scratch.len() });
        }
        let (key, window) = scratch.split_at_mut(MAX_KEY_LEN);
        Ok(Reader {
            key,
            key_len: 0,
            window: Window::new(window),
            phase: Phase::Header,
            pos: 0,
            index: 0,
            file_len: None,
            header: Header { version: 0, tensor_count: 0, kv_count: 0 },
            alignment: DEFAULT_ALIGNMENT,
            tensor_info_offset: 0,
            data_offset: 0,
            chain: DataChain::default(),
        })
    }

    /// A reader that streams only the tensor table of a file already read to the end (for
    /// looking tensors up again without keeping them). Yields [`Event::Tensor`]s, then
    /// [`Event::Done`].
    pub fn tensors(layout: &Layout, scratch: &'s mut [u8]) -> Result<Self> {
        let mut r = Reader::new(scratch)?;
        r.phase = Phase::Tensors;
        r.pos = layout.tensor_info_offset;
        r.file_len = Some(layout.file_len);
        r.header =
            Header { version: layout.version, tensor_count: layout.tensor_count, kv_count: layout.kv_count };
        r.alignment = layout.alignment;
        r.tensor_info_offset = layout.tensor_info_offset;
        r.data_offset = layout.data_offset;
        Ok(r)
    }

    /// Does one bounded piece of parsing and reports what it found.
    pub fn step<S: Source + ?Sized>(&mut self, io: &mut S) -> Result<Event<'_>> {
        let emit = match self.phase {
            Phase::Failed(e) => return Err(e),
            Phase::Done(layout) => Emit::Done(layout),
            _ => match self.advance(io) {
                Ok(emit) => emit,
                Err(e) => {
                    self.phase = Phase::Failed(e);
                    return Err(e);
                }
            },
        };
        Ok(self.event(emit))
    }

    /// Runs [`Reader::step`] until the next event that is not [`Event::Progress`].
    ///
    /// Not bounded: use it where blocking is fine (tools, tests), `step` elsewhere.
    pub fn next_event<S: Source + ?Sized>(&mut self, io: &mut S) -> Result<Event<'_>> {
        loop {
            let emit = match self.phase {
                Phase::Failed(e) => return Err(e),
                Phase::Done(layout) => Emit::Done(layout),
                _ => match self.advance(io) {
                    Ok(Emit::Progress) => continue,
                    Ok(emit) => emit,
                    Err(e) => {
                        self.phase = Phase::Failed(e);
                        return Err(e);
                    }
                },
            };
            return Ok(self.event(emit));
        }
    }

    /// The header, once the first event has been returned.
    pub fn header(&self) -> Header {
        self.header
    }

    fn event(&self, emit: Emit) -> Event<'_> {
        match emit {
            Emit::Header(h) => Event::Header(h),
            Emit::Tensor(t) => Event::Tensor(t),
            Emit::Progress => Event::Progress,
            Emit::Done(l) => Event::Done(l),
            Emit::Kv { value, head_len } => {
                let key = self.key.get(..self.key_len).unwrap_or_default();
                // Checked to be UTF-8 when it was read.
                let key = core::str::from_utf8(key).unwrap_or_default();
                let value = match value {
                    Value::String(s) => Value::String(Str {
                        head: self.window.buffered(s.offset, head_len).unwrap_or_default(),
                        ..s
                    }),
                    other => other,
                };
                Event::Kv { key, value }
            }
        }
    }

    fn file_len(&self) -> u64 {
        self.file_len.unwrap_or(0)
    }

    /// Bytes of the file from `pos` to its end.
    fn remaining_from(&self, pos: u64) -> u64 {
        self.file_len().saturating_sub(pos)
    }

    fn advance<S: Source + ?Sized>(&mut self, io: &mut S) -> Result<Emit> {
        match self.phase {
            Phase::Header => self.read_header(io),
            Phase::Kvs => self.read_kv(io),
            Phase::Walk(walk) => self.walk(io, walk),
            Phase::ScanTensors => self.scan_tensors(io),
            Phase::Tensors => self.read_tensor(io),
            Phase::Done(layout) => Ok(Emit::Done(layout)),
            Phase::Failed(e) => Err(e),
        }
    }

    fn read_header<S: Source + ?Sized>(&mut self, io: &mut S) -> Result<Emit> {
        let file_len = source_len(io)?;
        self.file_len = Some(file_len);
        let magic = self.window.bytes(io, 0, 4)?;
        if magic != MAGIC {
            return Err(Error::malformed(Malformed::BadMagic, 0));
        }
        let version = self.window.u32(io, 4)?;
        match version {
            2 | 3 => {}
            v if v & 0xffff == 0 && matches!(v.swap_bytes(), 1..=3) => {
                return Err(Error::malformed(Malformed::BigEndian, 4))
            }
            v => return Err(Error::malformed(Malformed::UnsupportedVersion(v), 4)),
        }
        let tensor_count = self.window.u64(io, 8)?;
        let kv_count = self.window.u64(io, 16)?;
        let room = file_len.saturating_sub(HEADER_LEN);
        if kv_count > room.checked_div(MIN_KV_BYTES).unwrap_or(0) {
            return Err(Error::malformed(Malformed::CountTooLarge(kv_count), 16));
        }
        if tensor_count > room.checked_div(MIN_TENSOR_INFO_BYTES).unwrap_or(0) {
            return Err(Error::malformed(Malformed::CountTooLarge(tensor_count), 8));
        }
        // Both bounded above, so neither product overflows.
        let least = kv_count
            .saturating_mul(MIN_KV_BYTES)
            .saturating_add(tensor_count.saturating_mul(MIN_TENSOR_INFO_BYTES));
        if least > room {
            return Err(Error::malformed(Malformed::CountTooLarge(tensor_count), 8));
        }
        self.header = Header { version, tensor_count, kv_count };
        self.pos = HEADER_LEN;
        self.index = 0;
        self.phase = Phase::Kvs;
        self.after_kv();
        Ok(Emit::Header(self.header))
    }

    /// Moves on from the metadata to the tensor table once every KV has been read.
    fn after_kv(&mut self) {
        if self.index >= self.header.kv_count {
            self.phase = Phase::ScanTensors;
            self.index = 0;
            self.tensor_info_offset = self.pos;
        } else {
            self.phase = Phase::Kvs;
        }
    }

    fn read_kv<S: Source + ?Sized>(&mut self, io: &mut S) -> Result<Emit> {
        let at = self.pos;
        let key_len = self.window.u64(io, at)?;
        let key_len = match usize::try_from(key_len) {
            Ok(n) if n <= MAX_KEY_LEN => n,
            _ => return Err(Error::malformed(Malformed::KeyTooLong(key_len), at)),
        };
        let key_at = add(at, 8, at)?;
        let key = self.window.bytes(io, key_at, key_len)?;
        if core::str::from_utf8(key).is_err() {
            return Err(Error::malformed(Malformed::InvalidUtf8, key_at));
        }
        let dst = self.key.get_mut(..key_len).ok_or(Error::InvalidState)?;
        dst.copy_from_slice(key);
        self.key_len = key_len;

        let type_at = add(key_at, key_len as u64, at)?;
        let ty = ValueType::parse(self.window.u32(io, type_at)?, type_at)?;
        let value_at = add(type_at, 4, at)?;
        self.index = self.index.saturating_add(1);
        let mut head_len = 0;
        let value = match ty {
            ValueType::String => {
                let (s, head) = self.string_at(io, value_at)?;
                self.pos = add(s.offset, s.len, value_at)?;
                head_len = head;
                Value::String(s)
            }
            ValueType::Array => {
                let array = self.array_header(io, value_at)?;
                self.pos = array.offset;
                if let Some(size) = array.elem.fixed_size() {
                    let byte_len = mul(array.count, size, value_at)?;
                    self.pos = add(array.offset, byte_len, value_at)?;
                    Value::Array(ArrayRef { byte_len, ..array })
                } else {
                    let walk = Walk { array, remaining: array.count, inner: None };
                    self.phase = Phase::Walk(walk);
                    return Ok(Emit::Progress);
                }
            }
            _ => {
                let size = ty.fixed_size().unwrap_or(0);
                let bytes = self.window.bytes(io, value_at, size as usize)?;
                let value =
                    decode_scalar(ty, bytes).ok_or(Error::malformed(Malformed::Truncated, value_at))?;
                self.pos = add(value_at, size, at)?;
                value
            }
        };
        self.check_known_key(value, at)?;
        self.after_kv();
        Ok(Emit::Kv { value, head_len })
    }

    /// Validates the keys the reader itself depends on.
    fn check_known_key(&mut self, value: Value<'_>, at: u64) -> Result<()> {
        if self.key.get(..self.key_len) == Some(b"general.alignment".as_slice()) {
            let Value::U32(a) = value else {
                return Err(Error::malformed(Malformed::WrongValueType, at));
            };
            if !a.is_power_of_two() {
                return Err(Error::malformed(Malformed::BadAlignment(a.into()), at));
            }
            self.alignment = a.into();
        }
        Ok(())
    }

    /// Reads the string whose u64 length is at `at`, checking it lies within the file. Returns it
    /// (with an empty head) and how many of its first bytes are now in the window.
    fn string_at<S: Source + ?Sized>(&mut self, io: &mut S, at: u64) -> Result<(Str<'static>, usize)> {
        let len = self.window.u64(io, at)?;
        let offset = add(at, 8, at)?;
        if len > self.remaining_from(offset) {
            return Err(Error::malformed(Malformed::LengthTooLarge(len), at));
        }
        let head = usize::try_from(len).unwrap_or(usize::MAX).min(self.window.capacity());
        self.window.bytes(io, offset, head)?;
        // The head is borrowed from the window when the event is built.
        Ok((Str { offset, len, head: &[] }, head))
    }

    /// Reads an array header (element type, count) at `at` and checks the count against the
    /// file; `byte_len` is left 0 for the caller to fill.
    fn array_header<S: Source + ?Sized>(&mut self, io: &mut S, at: u64) -> Result<ArrayRef> {
        let elem = ValueType::parse(self.window.u32(io, at)?, at)?;
        let count_at = add(at, 4, at)?;
        let count = self.window.u64(io, count_at)?;
        let offset = add(at, 12, at)?;
        if count > self.remaining_from(offset).checked_div(elem.min_size()).unwrap_or(0) {
            return Err(Error::malformed(Malformed::CountTooLarge(count), count_at));
        }
        Ok(ArrayRef { elem, count, offset, byte_len: 0 })
    }

    fn walk<S: Source + ?Sized>(&mut self, io: &mut S, mut walk: Walk) -> Result<Emit> {
        for _ in 0..ELEMENTS_PER_STEP {
            if let Some((ty, left)) = walk.inner {
                if left > 0 {
                    if ty == ValueType::String {
                        self.skip_string(io)?;
                        walk.inner = Some((ty, left.saturating_sub(1)));
                    } else {
                        let size = ty.fixed_size().unwrap_or(0);
                        let at = self.pos;
                        let bytes = mul(left, size, at)?;
                        if bytes > self.remaining_from(at) {
                            return Err(Error::malformed(Malformed::LengthTooLarge(bytes), at));
                        }
                        self.pos = add(at, bytes, at)?;
                        walk.inner = Some((ty, 0));
                    }
                    continue;
                }
                walk.inner = None;
            }
            if walk.remaining == 0 {
                let array = ArrayRef { byte_len: self.pos.saturating_sub(walk.array.offset), ..walk.array };
                self.after_kv();
                return Ok(Emit::Kv { value: Value::Array(array), head_len: 0 });
            }
            walk.remaining = walk.remaining.saturating_sub(1);
            if walk.array.elem == ValueType::String {
                self.skip_string(io)?;
            } else {
                let at = self.pos;
                let inner = self.array_header(io, at)?;
                if inner.elem == ValueType::Array {
                    return Err(Error::malformed(Malformed::NestingTooDeep, at));
                }
                self.pos = inner.offset;
                walk.inner = Some((inner.elem, inner.count));
            }
        }
        self.phase = Phase::Walk(walk);
        Ok(Emit::Progress)
    }

    fn skip_string<S: Source + ?Sized>(&mut self, io: &mut S) -> Result<()> {
        let at = self.pos;
        let len = self.window.u64(io, at)?;
        let offset = add(at, 8, at)?;
        if len > self.remaining_from(offset) {
            return Err(Error::malformed(Malformed::LengthTooLarge(len), at));
        }
        self.pos = add(offset, len, at)?;
        Ok(())
    }

    fn scan_tensors<S: Source + ?Sized>(&mut self, io: &mut S) -> Result<Emit> {
        for _ in 0..TENSORS_PER_SCAN_STEP {
            if self.index >= self.header.tensor_count {
                let end = self.pos;
                self.data_offset =
                    align_up(end, self.alignment).ok_or(Error::malformed(Malformed::Overflow, end))?;
                self.check_data_size(end)?;
                self.phase = Phase::Tensors;
                self.pos = self.tensor_info_offset;
                self.index = 0;
                return Ok(Emit::Progress);
            }
            let (info, next) = self.parse_tensor_info(io)?;
            let offset_field = next.saturating_sub(8);
            if info.offset != self.chain.next {
                let expected = self.chain.next;
                return Err(Error::malformed(Malformed::UnexpectedOffset { expected }, offset_field));
            }
            let end = add(info.offset, info.n_bytes, offset_field)?;
            let next_start =
                align_up(end, self.alignment).ok_or(Error::malformed(Malformed::Overflow, end))?;
            self.chain = DataChain { next: next_start, end };
            self.pos = next;
            self.index = self.index.saturating_add(1);
        }
        Ok(Emit::Progress)
    }

    /// Once the whole table is scanned: the file must end within the last tensor's padding
    /// (with no tensors, between the end of the tensor table, `infos_end`, and the data
    /// section's start). Missing bytes are a truncation, extra bytes a table that does not
    /// describe the file.
    fn check_data_size(&self, infos_end: u64) -> Result<()> {
        let at = self.tensor_info_offset;
        let (least, most) = if self.header.tensor_count == 0 {
            (infos_end, self.data_offset)
        } else {
            (add(self.data_offset, self.chain.end, at)?, add(self.data_offset, self.chain.next, at)?)
        };
        let len = self.file_len();
        if len < least {
            return Err(Error::malformed(Malformed::Truncated, len));
        }
        if len > most {
            return Err(Error::malformed(Malformed::DataSizeMismatch { expected: self.chain.next }, most));
        }
        Ok(())
    }

    fn read_tensor<S: Source + ?Sized>(&mut self, io: &mut S) -> Result<Emit> {
        if self.index >= self.header.tensor_count {
            let layout = Layout {
                version: self.header.version,
                kv_count: self.header.kv_count,
                tensor_count: self.header.tensor_count,
                alignment: self.alignment,
                tensor_info_offset: self.tensor_info_offset,
                data_offset: self.data_offset,
                file_len: self.file_len(),
            };
            self.phase = Phase::Done(layout);
            return Ok(Emit::Done(layout));
        }
        let (mut info, next) = self.parse_tensor_info(io)?;
        let offset_field = next.saturating_sub(8);
        info.offset = add(self.data_offset, info.offset, offset_field)?;
        if add(info.offset, info.n_bytes, offset_field)? > self.file_len() {
            return Err(Error::malformed(Malformed::OutOfBounds, offset_field));
        }
        self.pos = next;
        self.index = self.index.saturating_add(1);
        Ok(Emit::Tensor(info))
    }

    /// Parses and validates the tensor info at `self.pos`; returns it (offset still relative to
    /// the data section) and the position after it.
    fn parse_tensor_info<S: Source + ?Sized>(&mut self, io: &mut S) -> Result<(TensorInfo, u64)> {
        let at = self.pos;
        let name_len = self.window.u64(io, at)?;
        let name_len = match usize::try_from(name_len) {
            Ok(n) if n <= MAX_NAME_LEN => n,
            _ => return Err(Error::malformed(Malformed::NameTooLong(name_len), at)),
        };
        let name_at = add(at, 8, at)?;
        let name = core::str::from_utf8(self.window.bytes(io, name_at, name_len)?)
            .map_err(|_| Error::malformed(Malformed::InvalidUtf8, name_at))?;
        let name = Name::new(name);

        let dims_at = add(name_at, name_len as u64, at)?;
        let n_dims = self.window.u32(io, dims_at)?;
        if !(1..=4).contains(&n_dims) {
            return Err(Error::malformed(Malformed::BadDimensionCount(n_dims), dims_at));
        }
        let mut ne = [1u64; 4];
        let mut p = add(dims_at, 4, at)?;
        let mut elements: u64 = 1;
        for slot in ne.iter_mut().take(n_dims as usize) {
            let d = self.window.u64(io, p)?;
            if i64::try_from(d).is_err() {
                return Err(Error::malformed(Malformed::BadDimension(d), p));
            }
            elements = elements
                .checked_mul(d)
                .filter(|&n| i64::try_from(n).is_ok())
                .ok_or(Error::malformed(Malformed::Overflow, p))?;
            *slot = d;
            p = add(p, 8, at)?;
        }
        let type_id = self.window.u32(io, p)?;
        let ty =
            GgmlType::from_id(type_id).ok_or(Error::malformed(Malformed::UnknownGgmlType(type_id), p))?;
        let offset_at = add(p, 4, at)?;
        let offset = self.window.u64(io, offset_at)?;
        let next = add(offset_at, 8, at)?;

        let [ne0, ne1, ne2, ne3] = ne;
        let row_bytes =
            ty.row_bytes(ne0).ok_or(Error::malformed(Malformed::RowNotBlockMultiple { ty, ne0 }, dims_at))?;
        let n_bytes = [ne1, ne2, ne3]
            .iter()
            .try_fold(row_bytes, |acc, &d| acc.checked_mul(d))
            .ok_or(Error::malformed(Malformed::Overflow, dims_at))?;
        if !offset.is_multiple_of(self.alignment) {
            return Err(Error::malformed(Malformed::Misaligned(offset), offset_at));
        }
        let info = TensorInfo { name, ty, n_dims: n_dims as u8, ne, offset, n_bytes };
        Ok((info, next))
    }
}

/// `a + b`, or [`Malformed::Overflow`] at `at`.
fn add(a: u64, b: u64, at: u64) -> Result<u64> {
    a.checked_add(b).ok_or(Error::malformed(Malformed::Overflow, at))
}

/// `a * b`, or [`Malformed::Overflow`] at `at`.
fn mul(a: u64, b: u64, at: u64) -> Result<u64> {
    a.checked_mul(b).ok_or(Error::malformed(Malformed::Overflow, at))
}

/// `pos` rounded up to a multiple of `align` (a power of two).
pub(crate) fn align_up(pos: u64, align: u64) -> Option<u64> {
    let mask = align.checked_sub(1)?;
    pos.checked_add(mask).map(|p| p & !mask)
}
