//! Helpers shared by the core's kernel tests (`quant`, `quant_props`, `int8`).
#![allow(dead_code)]

use std::path::PathBuf;

use quickcheck::{Arbitrary, Gen};
use stepembed_core::gguf::{self, Event, GgmlType, Reader, TensorInfo};
use stepembed_core::io::SliceSource;
use stepembed_core::quant::Isa;

/// The bytes of `tests/fixtures/<rel>` (the repository's fixtures).
pub fn read_fixture(rel: &str) -> Vec<u8> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures").join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// The tensor table of a GGUF file, through the core's streaming reader.
pub fn tensors(bytes: &[u8]) -> Vec<TensorInfo> {
    let mut io = SliceSource::new(bytes);
    let mut scratch = vec![0u8; gguf::DEFAULT_SCRATCH];
    let mut reader = Reader::new(&mut scratch).unwrap();
    let mut out = Vec::new();
    loop {
        match reader.next_event(&mut io).unwrap() {
            Event::Tensor(t) => out.push(t),
            Event::Done(_) => return out,
            _ => {}
        }
    }
}

/// A number below `n`.
pub fn below(g: &mut Gen, n: usize) -> usize {
    usize::arbitrary(g) % n
}

/// A float uniformly in [-1, 1), on a grid fine enough to look continuous.
pub fn unit(g: &mut Gen) -> f32 {
    (u32::arbitrary(g) % (1 << 20)) as f32 / (1 << 19) as f32 - 1.0
}

/// Equal bits, or both NaN.
pub fn bits_equal(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Offsets of the f16 scale fields inside one block.
pub fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        GgmlType::Q4_0 | GgmlType::Q5_0 | GgmlType::Q8_0 | GgmlType::IQ4_NL | GgmlType::IQ4_XS => &[0],
        _ => &[],
    }
}

/// The SIMD table chosen at compile time for this target (NEON on aarch64, simd128 on wasm32
/// built with it), which the kernel tests must find; `None` where it is chosen at run time (x86)
/// or there is none.
pub fn target_simd() -> Option<Isa> {
    if cfg!(all(target_arch = "aarch64", target_feature = "neon")) {
        Some(Isa::Neon)
    } else if cfg!(all(target_arch = "wasm32", target_feature = "simd128")) {
        Some(Isa::Simd128)
    } else {
        None
    }
}
