//! The GGUF reader on hostile input: every malformed file gets a typed error, never a panic.

mod common;

use common::gguf_writer::*;
use quickcheck::{QuickCheck, TestResult};
use stepembed::core::gguf::{self, Event, Reader, TensorInfo, Value};
use stepembed::core::io::SliceSource;
use stepembed::core::{Error, Malformed};

/// Reads a whole file with the streaming reader; the tensors and the outcome.
fn read_all(bytes: &[u8]) -> Result<Vec<TensorInfo>, Error> {
    let mut io = SliceSource::new(bytes);
    let mut scratch = [0u8; gguf::MIN_SCRATCH];
    let mut reader = Reader::new(&mut scratch)?;
    let mut tensors = Vec::new();
    // Generous bound: a step always makes progress, so a valid file ends well before this.
    for _ in 0..10_000_000 {
        match reader.step(&mut io)? {
            Event::Tensor(t) => tensors.push(t),
            Event::Done(_) => {
                gguf::check_table(&mut tensors.clone())?;
                return Ok(tensors);
            }
            _ => {}
        }
    }
    panic!("reader did not finish");
}

fn malformed(bytes: &[u8]) -> Malformed {
    match read_all(bytes) {
        Err(Error::Malformed { what, .. }) => what,
        other => panic!("expected a malformed-file error, got {other:?}"),
    }
}

#[test]
fn small_valid_file_reads() {
    let t = read_all(&small_valid()).unwrap();
    assert_eq!(t.len(), 2);
    assert_eq!(t[1].name.as_str(), "b.bias");
    assert_eq!(t[1].n_bytes, 16);
}

#[test]
fn every_prefix_of_the_zoo_header_is_a_typed_error() {
    let zoo = common::read("models/quant-zoo.gguf");
    assert!(read_all(&zoo).is_ok());
    for n in 0..896 {
        match read_all(&zoo[..n]) {
            Err(Error::Malformed { .. }) => {}
            other => panic!("prefix {n}: {other:?}"),
        }
    }
    // Prefixes cutting the data section: the file ends before the last tensor's data.
    for n in (896..zoo.len()).step_by(4099) {
        assert_eq!(malformed(&zoo[..n]), Malformed::Truncated, "prefix {n}");
    }
}

#[test]
fn sampled_prefixes_of_a_model_are_typed_errors() {
    let model = common::read("models/minilm-l6-Q4_K_M.gguf");
    let listing = read_all(&model).unwrap();
    let data_start = listing.iter().map(|t| t.offset).min().unwrap() as usize;
    // A few hundred cuts in the 630 KB metadata region (deterministic spread) ...
    let mut n = 1usize;
    while n < data_start {
        assert!(matches!(read_all(&model[..n]), Err(Error::Malformed { .. })), "prefix {n}");
        n += 1 + (n * 7919) % 4093;
    }
    // ... and in the data section.
    for k in 0..200 {
        let n = data_start + (model.len() - data_start) / 200 * k;
        assert_eq!(malformed(&model[..n]), Malformed::Truncated, "prefix {n}");
    }
}

#[test]
fn each_malformation_has_its_error() {
    let ok_kvs = || vec![kv_str("general.architecture", "test")];
    let info = |ty| tensor_info("t", &[32, 2], ty, 0);
    let data = vec![0u8; 4096];

    let mut f = small_valid();
    f[0] = b'X';
    assert_eq!(malformed(&f), Malformed::BadMagic);

    assert_eq!(malformed(&file(1, &ok_kvs(), &[], 32, &[])), Malformed::UnsupportedVersion(1));
    assert_eq!(malformed(&file(4, &ok_kvs(), &[], 32, &[])), Malformed::UnsupportedVersion(4));
    assert_eq!(malformed(&file(3u32.swap_bytes(), &ok_kvs(), &[], 32, &[])), Malformed::BigEndian);

    // Counts larger than the file could hold.
    let mut f = file(3, &ok_kvs(), &[], 32, &[]);
    f[16..24].copy_from_slice(&u64::MAX.to_le_bytes());
    assert_eq!(malformed(&f), Malformed::CountTooLarge(u64::MAX));
    let mut f = file(3, &ok_kvs(), &[], 32, &[]);
    f[8..16].copy_from_slice(&1_000_000u64.to_le_bytes());
    assert_eq!(malformed(&f), Malformed::CountTooLarge(1_000_000));

    assert_eq!(malformed(&file(3, &[kv("k", 13, &[0; 8])], &[], 32, &[])), Malformed::UnknownValueType(13));
    assert_eq!(
        malformed(&file(3, &[kv("k", 8, &u64le(1 << 40))], &[], 32, &[])),
        Malformed::LengthTooLarge(1 << 40)
    );
    assert_eq!(
        malformed(&file(3, &[kv("k", 9, &array(4, u64::MAX / 2, &[]))], &[], 32, &[])),
        Malformed::CountTooLarge(u64::MAX / 2)
    );
    let long_key = "k".repeat(gguf::MAX_KEY_LEN + 1);
    assert_eq!(
        malformed(&file(3, &[kv_u32(&long_key, 1)], &[], 32, &[])),
        Malformed::KeyTooLong(gguf::MAX_KEY_LEN as u64 + 1)
    );
    let mut bad_utf8 = kv_u32("ab", 1);
    bad_utf8[8] = 0xff;
    assert_eq!(malformed(&file(3, &[bad_utf8], &[], 32, &[])), Malformed::InvalidUtf8);

    // One level of nesting is fine, two are not.
    let inner = array(4, 2, &[1, 0, 0, 0, 2, 0, 0, 0]);
    let nested = array(9, 1, &inner);
    assert!(read_all(&file(3, &[kv("k", 9, &nested)], &[], 32, &[])).is_ok());
    let deeper = array(9, 1, &array(9, 1, &inner));
    assert_eq!(malformed(&file(3, &[kv("k", 9, &deeper)], &[], 32, &[])), Malformed::NestingTooDeep);

    // general.alignment must be a power-of-two u32.
    assert_eq!(
        malformed(&file(3, &[kv_u32("general.alignment", 24)], &[], 32, &[])),
        Malformed::BadAlignment(24)
    );
    assert_eq!(
        malformed(&file(3, &[kv_u32("general.alignment", 0)], &[], 32, &[])),
        Malformed::BadAlignment(0)
    );
    assert_eq!(
        malformed(&file(3, &[kv("general.alignment", 10, &u64le(32))], &[], 32, &[])),
        Malformed::WrongValueType
    );

    // Tensor infos.
    let name64 = "n".repeat(64);
    assert_eq!(
        malformed(&file(3, &ok_kvs(), &[tensor_info(&name64, &[4], 0, 0)], 32, &data)),
        Malformed::NameTooLong(64)
    );
    assert!(read_all(&file(3, &ok_kvs(), &[tensor_info(&name64[..63], &[4], 0, 0)], 32, &data[..16])).is_ok());
    assert_eq!(
        malformed(&file(3, &ok_kvs(), &[tensor_info("t", &[], 0, 0)], 32, &data)),
        Malformed::BadDimensionCount(0)
    );
    assert_eq!(
        malformed(&file(3, &ok_kvs(), &[tensor_info("t", &[1, 1, 1, 1, 1], 0, 0)], 32, &data)),
        Malformed::BadDimensionCount(5)
    );
    assert_eq!(malformed(&file(3, &ok_kvs(), &[info(4)], 32, &data)), Malformed::UnknownGgmlType(4));
    assert_eq!(malformed(&file(3, &ok_kvs(), &[info(99)], 32, &data)), Malformed::UnknownGgmlType(99));
    assert!(matches!(
        malformed(&file(3, &ok_kvs(), &[tensor_info("t", &[100, 2], 12, 0)], 32, &data)),
        Malformed::RowNotBlockMultiple { ne0: 100, .. }
    ));
    assert_eq!(
        malformed(&file(3, &ok_kvs(), &[tensor_info("t", &[1 << 40, 1 << 40], 0, 0)], 32, &data)),
        Malformed::Overflow
    );
    assert_eq!(
        malformed(&file(3, &ok_kvs(), &[tensor_info("t", &[u64::MAX], 0, 0)], 32, &data)),
        Malformed::BadDimension(u64::MAX)
    );
    assert_eq!(
        malformed(&file(3, &ok_kvs(), &[tensor_info("t", &[4], 0, 16)], 32, &data)),
        Malformed::Misaligned(16)
    );
    assert_eq!(
        malformed(&file(3, &ok_kvs(), &[tensor_info("t", &[4096], 0, 0)], 32, &data)),
        Malformed::Truncated
    );
    // Bytes past the last tensor's padding: the table does not describe the file.
    assert_eq!(
        malformed(&file(3, &ok_kvs(), &[tensor_info("t", &[4], 0, 0)], 32, &data[..33])),
        Malformed::DataSizeMismatch { expected: 32 }
    );
    assert!(read_all(&file(3, &ok_kvs(), &[tensor_info("t", &[4], 0, 0)], 32, &data[..32])).is_ok());
    // Tensors are stored one after another in table order (ggml's rule): a gap, a tensor
    // out of order or one not at the data section's start breaks the chain.
    let chain = |infos: &[Vec<u8>]| malformed(&file(3, &ok_kvs(), infos, 32, &data[..128]));
    assert_eq!(chain(&[tensor_info("a", &[4], 0, 32)]), Malformed::UnexpectedOffset { expected: 0 });
    assert_eq!(
        chain(&[tensor_info("a", &[4], 0, 0), tensor_info("b", &[4], 0, 64)]),
        Malformed::UnexpectedOffset { expected: 32 }
    );
    assert_eq!(
        chain(&[tensor_info("a", &[4], 0, 32), tensor_info("b", &[4], 0, 0)]),
        Malformed::UnexpectedOffset { expected: 0 }
    );
    assert_eq!(
        malformed(&file(
            3,
            &ok_kvs(),
            &[tensor_info("a", &[16], 0, 0), tensor_info("b", &[16], 0, 32)],
            32,
            &data
        )),
        Malformed::UnexpectedOffset { expected: 64 }
    );
    assert_eq!(
        malformed(&file(
            3,
            &ok_kvs(),
            &[tensor_info("a", &[4], 0, 0), tensor_info("a", &[4], 0, 32)],
            32,
            &data[..48]
        )),
        Malformed::DuplicateTensor
    );
    // An empty tensor between two overlapping ones hides nothing.
    let infos = [tensor_info("a", &[16], 0, 0), tensor_info("e", &[0], 0, 32), tensor_info("b", &[4], 0, 32)];
    assert_eq!(
        malformed(&file(3, &ok_kvs(), &infos, 32, &data)),
        Malformed::UnexpectedOffset { expected: 64 }
    );
    // Every ggml type id the reader knows sizes correctly, so a one-block tensor of each fits.
    for &ty in gguf::GgmlType::ALL {
        let bytes = &data[..ty.block_bytes() as usize];
        let f = file(3, &ok_kvs(), &[tensor_info("t", &[ty.block_elems() as u64], ty.id(), 0)], 32, bytes);
        let t = read_all(&f).unwrap();
        assert_eq!(t[0].n_bytes, u64::from(ty.block_bytes()), "{ty}");
    }
}

#[test]
fn errors_carry_the_offset_and_poison_the_reader() {
    let mut f = small_valid();
    let at = 24 + 8 + "general.architecture".len() + 4;
    f[at..at + 8].copy_from_slice(&u64::MAX.to_le_bytes());
    let mut io = SliceSource::new(&f);
    let mut scratch = [0u8; gguf::DEFAULT_SCRATCH];
    let mut reader = Reader::new(&mut scratch).unwrap();
    assert!(matches!(reader.step(&mut io), Ok(Event::Header(_))));
    let err = reader.step(&mut io).unwrap_err();
    assert_eq!(err, Error::malformed(Malformed::LengthTooLarge(u64::MAX), at as u64));
    assert_eq!(reader.step(&mut io).unwrap_err(), err);
    assert!(Reader::new(&mut [0u8; 16]).is_err());
}

#[test]
fn random_corruptions_never_panic() {
    fn prop(edits: Vec<(u16, u8)>, which: bool) -> TestResult {
        let mut f =
            if which { small_valid() } else { common::read("models/quant-zoo.gguf")[..1200].to_vec() };
        for (at, byte) in edits {
            let at = at as usize % f.len().min(900);
            f[at] = byte;
        }
        let _ = read_all(&f);
        let _ = stepembed::inspect::list(&mut SliceSource::new(&f));
        TestResult::passed()
    }
    QuickCheck::new().tests(3000).quickcheck(prop as fn(Vec<(u16, u8)>, bool) -> TestResult);
}

/// A scalar KV of any type written then read gives the same value back.
#[test]
fn values_round_trip() {
    fn prop(ty: u8, raw: u64, s: String) -> bool {
        let ty = u32::from(ty % 13);
        let enc: Vec<u8> = match ty {
            0 | 1 | 7 => vec![raw as u8],
            2 | 3 => (raw as u16).to_le_bytes().to_vec(),
            4..=6 => (raw as u32).to_le_bytes().to_vec(),
            8 => gstr(s.as_bytes()),
            9 => string_array(&[s.as_str(), "x"]),
            _ => raw.to_le_bytes().to_vec(),
        };
        let f = file(3, &[kv("key", ty, &enc)], &[], 32, &[]);
        let mut io = SliceSource::new(&f);
        let mut scratch = [0u8; gguf::DEFAULT_SCRATCH];
        let mut reader = Reader::new(&mut scratch).unwrap();
        loop {
            match reader.next_event(&mut io).unwrap() {
                Event::Kv { key, value } => {
                    assert_eq!(key, "key");
                    let expected_ok = match value {
                        Value::U8(v) => v == raw as u8,
                        Value::I8(v) => v == raw as i8,
                        Value::Bool(v) => v == (raw as u8 != 0),
                        Value::U16(v) => v == raw as u16,
                        Value::I16(v) => v == raw as i16,
                        Value::U32(v) => v == raw as u32,
                        Value::I32(v) => v == raw as i32,
                        Value::F32(v) => v.to_bits() == raw as u32,
                        Value::U64(v) => v == raw,
                        Value::I64(v) => v == raw as i64,
                        Value::F64(v) => v.to_bits() == raw,
                        Value::String(st) => st.as_str() == Some(s.as_str()),
                        Value::Array(a) => a.count == 2 && a.byte_len == 16 + s.len() as u64 + 1,
                    };
                    return expected_ok && value.value_type() as u32 == ty;
                }
                Event::Done(_) => return false,
                _ => {}
            }
        }
    }
    QuickCheck::new().tests(2000).quickcheck(prop as fn(u8, u64, String) -> bool);
}

#[test]
fn non_finite_floats_are_found_by_streaming() {
    let scan = |ty: u32, data: Vec<u8>| {
        let n = data.len() as u64 / if ty == 0 { 4 } else { 2 };
        let f = file(3, &[kv_str("general.architecture", "t")], &[tensor_info("w", &[n], ty, 0)], 32, &data);
        let t = read_all(&f).unwrap()[0];
        gguf::scan_non_finite(&mut SliceSource::new(&f), &t, &mut [0u8; 8])
    };
    let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    assert!(scan(0, f32s(&[1.0, -2.0, 0.0, f32::MAX])).is_ok());
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let err = scan(0, f32s(&[1.0, 2.0, 3.0, bad])).unwrap_err();
        assert!(
            matches!(err, Error::Malformed { what: Malformed::NonFinite(n), .. } if n.as_str() == "w"),
            "{err:?}"
        );
    }
    // F16 (type 1) infinity 0x7c00 and BF16 (type 30) NaN 0x7fc0, after finite values.
    let halves = |v: &[u16]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    assert!(scan(1, halves(&[0x3c00, 0x7bff, 0x0001, 0x8000])).is_ok());
    assert!(scan(1, halves(&[0x3c00, 0x3c00, 0x3c00, 0x7c00])).is_err());
    assert!(scan(30, halves(&[0x3f80, 0x3f80, 0x3f80, 0x7fc0])).is_err());
}
