//! Write-then-read: a GGUF file built from an arbitrary (sanitised) description reads back with
//! exactly the metadata and tensor table it was written with.
#![no_main]

use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use stepembed_core::gguf::{self, ArrayReader, Event, GgmlType, Reader, Value};
use stepembed_core::io::SliceSource;

#[derive(Arbitrary, Debug)]
enum Val {
    U8(u8),
    I16(i16),
    U32(u32),
    I64(i64),
    F32(f32),
    F64(f64),
    Bool(bool),
    Str(String),
    U32s(Vec<u32>),
    Strs(Vec<String>),
    Nested(Vec<Vec<i8>>),
}

#[derive(Arbitrary, Debug)]
struct Spec {
    version3: bool,
    align_pow: u8,
    kvs: Vec<(String, Val)>,
    tensors: Vec<(String, u8, Vec<u8>)>,
}

fn put_str(b: &mut Vec<u8>, s: &[u8]) {
    b.extend((s.len() as u64).to_le_bytes());
    b.extend_from_slice(s);
}

fn put_val(b: &mut Vec<u8>, v: &Val) {
    match v {
        Val::U8(x) => b.push(*x),
        Val::I16(x) => b.extend(x.to_le_bytes()),
        Val::U32(x) => b.extend(x.to_le_bytes()),
        Val::I64(x) => b.extend(x.to_le_bytes()),
        Val::F32(x) => b.extend(x.to_le_bytes()),
        Val::F64(x) => b.extend(x.to_le_bytes()),
        Val::Bool(x) => b.push(u8::from(*x)),
        Val::Str(s) => put_str(b, s.as_bytes()),
        Val::U32s(xs) => {
            b.extend(4u32.to_le_bytes());
            b.extend((xs.len() as u64).to_le_bytes());
            xs.iter().for_each(|x| b.extend(x.to_le_bytes()));
        }
        Val::Strs(xs) => {
            b.extend(8u32.to_le_bytes());
            b.extend((xs.len() as u64).to_le_bytes());
            xs.iter().for_each(|x| put_str(b, x.as_bytes()));
        }
        Val::Nested(xs) => {
            b.extend(9u32.to_le_bytes());
            b.extend((xs.len() as u64).to_le_bytes());
            for inner in xs {
                b.extend(1u32.to_le_bytes());
                b.extend((inner.len() as u64).to_le_bytes());
                inner.iter().for_each(|x| b.extend(x.to_le_bytes()));
            }
        }
    }
}

fn type_id(v: &Val) -> u32 {
    match v {
        Val::U8(_) => 0,
        Val::I16(_) => 3,
        Val::U32(_) => 4,
        Val::I64(_) => 11,
        Val::F32(_) => 6,
        Val::F64(_) => 12,
        Val::Bool(_) => 7,
        Val::Str(_) => 8,
        Val::U32s(_) | Val::Strs(_) | Val::Nested(_) => 9,
    }
}

fuzz_target!(|spec: Spec| {
    let alignment = 1u64 << (spec.align_pow % 8);
    // Sanitise: short unique keys (general.alignment is written by us), short unique names.
    let mut kvs: Vec<(String, Val)> = Vec::new();
    for (k, v) in spec.kvs.into_iter().take(16) {
        let k: String = k.chars().take(40).collect();
        if k != "general.alignment" && !kvs.iter().any(|(x, _)| *x == k) {
            kvs.push((k, v));
        }
    }
    let mut tensors = Vec::new();
    let mut offset = 0u64;
    for (i, (name, ty, dims)) in spec.tensors.into_iter().take(8).enumerate() {
        let name: String = format!("{i}.{}", name.chars().take(20).collect::<String>());
        let ty = GgmlType::ALL[usize::from(ty) % GgmlType::ALL.len()];
        let mut ne: Vec<u64> = dims.iter().take(4).map(|&d| u64::from(d % 5) + 1).collect();
        if ne.is_empty() {
            ne.push(1);
        }
        ne[0] *= u64::from(ty.block_elems());
        let n_bytes = ty.row_bytes(ne[0]).unwrap() * ne[1..].iter().product::<u64>();
        tensors.push((name, ty, ne, offset, n_bytes));
        offset = (offset + n_bytes).div_ceil(alignment) * alignment;
    }

    let mut b = b"GGUF".to_vec();
    b.extend((if spec.version3 { 3u32 } else { 2 }).to_le_bytes());
    b.extend((tensors.len() as u64).to_le_bytes());
    b.extend((kvs.len() as u64 + 1).to_le_bytes());
    put_str(&mut b, b"general.alignment");
    b.extend(4u32.to_le_bytes());
    b.extend((alignment as u32).to_le_bytes());
    for (k, v) in &kvs {
        put_str(&mut b, k.as_bytes());
        b.extend(type_id(v).to_le_bytes());
        put_val(&mut b, v);
    }
    for (name, ty, ne, off, _) in &tensors {
        put_str(&mut b, name.as_bytes());
        b.extend((ne.len() as u32).to_le_bytes());
        ne.iter().for_each(|d| b.extend(d.to_le_bytes()));
        b.extend(ty.id().to_le_bytes());
        b.extend(off.to_le_bytes());
    }
    while b.len() as u64 % alignment != 0 {
        b.push(0);
    }
    let data_start = b.len() as u64;
    b.resize((data_start + offset) as usize, 0xa5);

    let mut io = SliceSource::new(&b);
    let mut scratch = [0u8; gguf::MIN_SCRATCH];
    let mut reader = Reader::new(&mut scratch).unwrap();
    let (mut seen_kvs, mut seen_tensors) = (0usize, 0usize);
    let mut arrays = Vec::new();
    loop {
        match reader.step(&mut io).unwrap() {
            Event::Kv { key, value } => {
                if key == "general.alignment" {
                    assert_eq!(value, Value::U32(alignment as u32));
                    continue;
                }
                let (k, v) = &kvs[seen_kvs];
                assert_eq!(key, k);
                match (v, value) {
                    (Val::U8(x), Value::U8(y)) => assert_eq!(*x, y),
                    (Val::I16(x), Value::I16(y)) => assert_eq!(*x, y),
                    (Val::U32(x), Value::U32(y)) => assert_eq!(*x, y),
                    (Val::I64(x), Value::I64(y)) => assert_eq!(*x, y),
                    (Val::F32(x), Value::F32(y)) => assert_eq!(x.to_bits(), y.to_bits()),
                    (Val::F64(x), Value::F64(y)) => assert_eq!(x.to_bits(), y.to_bits()),
                    (Val::Bool(x), Value::Bool(y)) => assert_eq!(*x, y),
                    (Val::Str(x), Value::String(s)) => {
                        assert_eq!(s.len, x.len() as u64);
                        if s.is_complete() {
                            assert_eq!(s.head, x.as_bytes());
                        }
                    }
                    (Val::U32s(x), Value::Array(a)) => {
                        assert_eq!(a.count, x.len() as u64);
                        arrays.push((seen_kvs, a));
                    }
                    (Val::Strs(x), Value::Array(a)) => {
                        assert_eq!(a.count, x.len() as u64);
                        arrays.push((seen_kvs, a));
                    }
                    (Val::Nested(x), Value::Array(a)) => assert_eq!(a.count, x.len() as u64),
                    (v, value) => panic!("{v:?} read back as {value:?}"),
                }
                seen_kvs += 1;
            }
            Event::Tensor(t) => {
                let (name, ty, ne, off, n_bytes) = &tensors[seen_tensors];
                assert_eq!(t.name.as_str(), name);
                assert_eq!(t.ty, *ty);
                assert_eq!(t.dims(), &ne[..]);
                assert_eq!(t.offset, data_start + off);
                assert_eq!(t.n_bytes, *n_bytes);
                seen_tensors += 1;
            }
            Event::Done(layout) => {
                assert_eq!(layout.alignment, alignment);
                assert_eq!(layout.data_offset, data_start);
                break;
            }
            _ => {}
        }
    }
    assert_eq!((seen_kvs, seen_tensors), (kvs.len(), tensors.len()));
    // Array elements read back one by one.
    let mut buf = [0u8; 64];
    for (i, a) in arrays {
        let mut elems = ArrayReader::new(a, &mut buf);
        match &kvs[i].1 {
            Val::U32s(xs) => {
                for x in xs {
                    assert_eq!(elems.next(&mut io).unwrap(), Some(Value::U32(*x)));
                }
            }
            Val::Strs(xs) => {
                for x in xs {
                    let Some(Value::String(s)) = elems.next(&mut io).unwrap() else { panic!() };
                    assert_eq!(s.len, x.len() as u64);
                    assert!(x.as_bytes().starts_with(s.head));
                }
            }
            _ => unreachable!(),
        }
        assert_eq!(elems.next(&mut io).unwrap(), None);
    }
});
