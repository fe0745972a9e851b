//! The quantization engine against gguf-py's dequantization of the committed fixtures, on every
//! instruction set this CPU supports, plus the error contract of the public kernels.
//!
//! * `quant-zoo.gguf`: every tensor (one 256×256 matrix per computable type) dequantizes equal to
//!   `quant-zoo.dequant.f32`, bit for bit, whole and in streamed chunks.
//! * every fixture model: each tensor's sum, absolute sum, first 8 values and 8 probes match
//!   `reference/tensors/<model>.json`.

use std::path::PathBuf;

mod common;

use common::tensors;
use serde_json::Value as Json;
use stepembed_core::gguf::{self, GgmlType, TensorInfo};
use stepembed_core::io::SliceSource;
use stepembed_core::quant::{find_non_finite, is_computable, matmul_scratch_len, Isa, Kernels};
use stepembed_core::{Error, Malformed, Name, Unsupported};

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(rel)
}

fn read(rel: &str) -> Vec<u8> {
    let p = fixture(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// Every kernel table this CPU and target can run, scalar first.
fn all_kernels() -> Vec<Kernels> {
    Isa::ALL.into_iter().filter_map(Kernels::with_isa).collect()
}

/// The cross-compiled runs (.ci/cross) test the target's SIMD table, not just the scalar one.
#[test]
fn the_targets_simd_table_is_chosen() {
    if let Some(isa) = common::target_simd() {
        assert_eq!(Kernels::detect().isa(), isa);
        assert!(all_kernels().iter().any(|k| k.isa() == isa));
    }
}

/// Dequantizes a whole tensor by streaming it in chunks of at most `chunk` bytes (whole blocks).
fn dequantize_streamed(k: &Kernels, bytes: &[u8], t: &TensorInfo, chunk: usize) -> Vec<f32> {
    let mut io = SliceSource::new(bytes);
    let mut buf = vec![0u8; chunk];
    let mut out = vec![f32::NAN; t.n_elements() as usize];
    let bb = t.ty.block_bytes() as u64;
    let be = t.ty.block_elems() as u64;
    gguf::stream_tensor(&mut io, t, &mut buf, |at, data| {
        assert_eq!(at % bb, 0);
        let first = (at / bb * be) as usize;
        let n = k.dequantize(t.ty, data, &mut out[first..])?;
        assert_eq!(n as u64, data.len() as u64 / bb * be);
        Ok(())
    })
    .unwrap();
    out
}

fn same_bits(a: &[f32], b: &[f32]) -> Option<usize> {
    a.iter().zip(b).position(|(x, y)| x.to_bits() != y.to_bits() && !(x.is_nan() && y.is_nan()))
}

#[test]
fn quant_zoo_is_bit_exact_with_gguf_py() {
    let bytes = read("models/quant-zoo.gguf");
    let reference: Vec<f32> = read("models/quant-zoo.dequant.f32")
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
        .collect();
    let table = tensors(&bytes);
    let mut types: Vec<GgmlType> = table.iter().map(|t| t.ty).collect();
    types.sort_by_key(|t| t.id());
    types.dedup();
    // The zoo holds every computable type.
    let computable: Vec<GgmlType> = GgmlType::ALL.iter().copied().filter(|&t| is_computable(t)).collect();
    assert_eq!(types, computable);
    assert_eq!(computable.len(), 15);

    for k in all_kernels() {
        let mut at = 0usize;
        for t in &table {
            let n = t.n_elements() as usize;
            let want = &reference[at..at + n];
            at += n;
            // Whole tensor in one call.
            let data = &bytes[t.offset as usize..t.end() as usize];
            let mut got = vec![f32::NAN; n];
            assert_eq!(k.dequantize(t.ty, data, &mut got).unwrap(), n);
            let max_abs = want.iter().fold(0f32, |m, v| m.max(v.abs()));
            if let Some(i) = same_bits(&got, want) {
                let worst = got.iter().zip(want).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
                panic!(
                    "{:?} {} ({:?}): element {i}: {} vs gguf-py {} (max |diff| {worst}, max |w| {max_abs})",
                    k.isa(),
                    t.name,
                    t.ty,
                    got[i],
                    want[i]
                );
            }
            // Streamed in odd-sized chunks (whole blocks each), as the engine reads weights.
            let chunk = t.ty.block_bytes() as usize * 7;
            assert!(same_bits(&dequantize_streamed(&k, &bytes, t, chunk), want).is_none());
        }
        assert_eq!(at, reference.len());
    }
}

/// Relative agreement of f64 statistics.
fn close(got: f64, want: f64, scale: f64) -> bool {
    (got - want).abs() <= 1e-6 * scale.abs() + 1e-12
}

#[test]
fn every_fixture_tensor_matches_its_reference_statistics() {
    let dir = fixture("reference/tensors");
    let mut checked_models = 0;
    let mut entries: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    entries.sort();
    for path in entries {
        let model = path.file_stem().unwrap().to_str().unwrap().to_owned();
        let model_path = fixture(&format!("models/{model}.gguf"));
        if !model_path.exists() {
            continue;
        }
        let reference: Json = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        let bytes = std::fs::read(&model_path).unwrap();
        let table = tensors(&bytes);
        let refs = reference["tensors"].as_array().unwrap();
        assert_eq!(table.len(), refs.len(), "{model}");
        for (t, r) in table.iter().zip(refs) {
            assert_eq!(t.name.as_str(), r["name"].as_str().unwrap(), "{model}");
            assert!(is_computable(t.ty), "{model}: {} has type {:?}", t.name, t.ty);
            let mut values: Option<Vec<f32>> = None;
            for k in all_kernels() {
                let v = dequantize_streamed(&k, &bytes, t, 64 * 1024);
                match &values {
                    None => values = Some(v),
                    Some(s) => assert!(
                        same_bits(&v, s).is_none(),
                        "{model}: {} {:?} differs from scalar",
                        t.name,
                        k.isa()
                    ),
                }
            }
            let v = values.unwrap();
            let what = format!("{model}: {} ({:?})", t.name, t.ty);
            let sum: f64 = v.iter().map(|&x| f64::from(x)).sum();
            let abs_sum: f64 = v.iter().map(|&x| f64::from(x).abs()).sum();
            let want_abs = r["abs_sum"].as_f64().unwrap();
            let want_sum = r["sum"].as_f64().unwrap();
            assert!(close(abs_sum, want_abs, want_abs), "{what}: abs_sum {abs_sum} vs {want_abs}");
            // The sum can cancel to near zero; its error scale is the absolute sum.
            assert!(close(sum, want_sum, want_abs), "{what}: sum {sum} vs {want_sum}");
            for (i, f) in r["first"].as_array().unwrap().iter().enumerate() {
                assert_eq!(v[i], f.as_f64().unwrap() as f32, "{what}: first[{i}]");
            }
            for (i, p) in r["probes"].as_object().unwrap() {
                let i: usize = i.parse().unwrap();
                assert_eq!(v[i], p.as_f64().unwrap() as f32, "{what}: probe {i}");
            }
        }
        checked_models += 1;
    }
    // quant-zoo, vocab-bert-uncased (no tensors) and the five small models.
    assert!(checked_models >= 7, "only {checked_models} models checked");
}

#[test]
fn uncomputable_types_are_refused() {
    let k = Kernels::detect();
    for &ty in GgmlType::ALL.iter().filter(|&&t| !is_computable(t)) {
        let want = Error::Unsupported(Unsupported::TensorType { tensor: Name::new(""), ty });
        let src = vec![0u8; ty.block_bytes() as usize];
        let mut dst = vec![0f32; ty.block_elems() as usize];
        assert_eq!(k.dequantize(ty, &src, &mut dst), Err(want));
        let n = ty.block_elems() as usize;
        let mut out = [0f32; 1];
        let mut scratch = vec![0f32; n];
        assert_eq!(k.matmul_acc(ty, &src, 1, n, &dst, n, 1, &mut out, 1, &mut scratch), Err(want));
    }
}

#[test]
fn sizes_are_checked_before_any_work() {
    for k in all_kernels() {
        let ty = GgmlType::Q4_K;
        let (kk, rows, toks) = (256usize, 3usize, 2usize);
        let w = vec![0x11u8; 144 * rows];
        let x = vec![1f32; kk * toks];
        let mut out = vec![7f32; rows * toks];
        let mut scratch = vec![0f32; kk];
        fn small<T>(needed: usize, given: usize) -> Result<T, Error> {
            Err(Error::BufferTooSmall { needed, given })
        }
        // Weights one byte short.
        assert_eq!(
            k.matmul_acc(ty, &w[1..], rows, kk, &x, kk, toks, &mut out, rows, &mut scratch),
            small(144 * rows, 144 * rows - 1)
        );
        // Tokens short, stride too small, output short, scratch short.
        assert_eq!(
            k.matmul_acc(ty, &w, rows, kk, &x[1..], kk, toks, &mut out, rows, &mut scratch),
            small(2 * kk, 2 * kk - 1)
        );
        assert_eq!(
            k.matmul_acc(ty, &w, rows, kk, &x, kk - 1, toks, &mut out, rows, &mut scratch),
            small(kk, kk - 1)
        );
        assert_eq!(
            k.matmul_acc(ty, &w, rows, kk, &x, kk, toks, &mut out[1..], rows, &mut scratch),
            small(2 * rows, 2 * rows - 1)
        );
        assert_eq!(
            k.matmul_acc(ty, &w, rows, kk, &x, kk, toks, &mut out, rows - 1, &mut scratch),
            small(rows, rows - 1)
        );
        assert_eq!(
            k.matmul_acc(ty, &w, rows, kk, &x, kk, toks, &mut out, rows, &mut scratch[1..]),
            small(kk, kk - 1)
        );
        // k not a whole number of blocks.
        assert_eq!(
            k.matmul_acc(ty, &w, 1, 128, &x, 128, 1, &mut out, 1, &mut scratch),
            Err(Error::malformed(Malformed::RowNotBlockMultiple { ty, ne0: 128 }, 0))
        );
        // Overflowing shapes fail as too small, never wrap.
        assert!(matches!(
            k.matmul_acc(ty, &w, usize::MAX, kk, &x, kk, toks, &mut out, usize::MAX, &mut scratch),
            Err(Error::BufferTooSmall { .. })
        ));
        assert!(matches!(
            k.gemm_f32_acc(&x, kk, 2, kk, &x, usize::MAX, 3, &mut out, 2),
            Err(Error::BufferTooSmall { .. })
        ));
        assert!(out.iter().all(|&v| v == 7.0), "nothing written on error");
        // Partial blocks and short outputs for dequantize.
        let mut dst = vec![0f32; 512];
        assert_eq!(k.dequantize(ty, &w[..200], &mut dst), small(288, 200));
        assert_eq!(k.dequantize(ty, &w[..288], &mut dst[..511]), small(512, 511));
        // dot and axpy want equal lengths.
        assert_eq!(k.dot(&x[..3], &x[..4]), small(4, 3));
        assert_eq!(k.axpy(1.0, &x[..4], &mut dst[..3]), small(4, 3));
        // Empty shapes are fine and do nothing.
        k.matmul_acc(ty, &[], 0, kk, &x, kk, toks, &mut out, 0, &mut scratch).unwrap();
        k.matmul_acc(ty, &w, rows, kk, &[], kk, 0, &mut [], rows, &mut scratch).unwrap();
        assert_eq!(k.dot(&[], &[]).unwrap(), 0.0);
        assert!(out.iter().all(|&v| v == 7.0));
    }
}

#[test]
fn scratch_len_is_sane() {
    for k in [1usize, 32, 64, 256, 384, 768, 1024, 3072, 4096, 100_000] {
        let (min, pref) = matmul_scratch_len(k);
        assert_eq!(min, k);
        assert!(pref >= 4 * k + 16 && pref <= 64 * k + 16 && (pref - 16) % k == 0, "{k}: {pref}");
    }
    assert_eq!(matmul_scratch_len(0), (0, 16));
}

#[test]
fn non_finite_scales_and_values_are_found() {
    let zoo = read("models/quant-zoo.gguf");
    for t in tensors(&zoo) {
        let data = &zoo[t.offset as usize..t.end() as usize];
        assert_eq!(find_non_finite(t.ty, data), Ok(None), "{}", t.name);
        let bb = t.ty.block_bytes() as usize;
        // Poison the first f16 scale of the 5th block (for the float types: the 5th value).
        let mut bad = data.to_vec();
        let block = 4 * bb;
        let (off, bits): (usize, &[u8]) = match t.ty {
            GgmlType::F32 => (0, &f32::NAN.to_le_bytes()),
            GgmlType::F16 | GgmlType::BF16 => (0, &[0x80, 0xff]),
            GgmlType::Q2_K => (80, &[0x00, 0x7c]),
            GgmlType::Q3_K => (108, &[0x00, 0xfc]),
            GgmlType::Q6_K => (208, &[0x01, 0x7e]),
            _ => (0, &[0x00, 0x7c]),
        };
        bad[block + off..block + off + bits.len()].copy_from_slice(bits);
        assert_eq!(find_non_finite(t.ty, &bad), Ok(Some(block)), "{}", t.name);
        // And it really decodes to something non-finite there.
        let mut v = vec![0f32; t.n_elements() as usize];
        Kernels::detect().dequantize(t.ty, &bad, &mut v).unwrap();
        let be = t.ty.block_elems() as usize;
        assert!(v[4 * be..5 * be].iter().any(|x| !x.is_finite()), "{}", t.name);
        assert!(v[..4 * be].iter().chain(&v[5 * be..]).all(|x| x.is_finite()), "{}", t.name);
    }
    assert_eq!(
        find_non_finite(GgmlType::Q4_K, &[0; 100]),
        Err(Error::BufferTooSmall { needed: 144, given: 100 })
    );
    assert!(matches!(find_non_finite(GgmlType::Q8_K, &[]), Err(Error::Unsupported(_))));
}
