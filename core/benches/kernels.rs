//! Throughput of the quantization engine, single thread: dequantization (GB/s of weight bytes)
//! and the fused kernel `matmul_acc` (GFLOP/s) at 1, 16, 128 and 512 tokens for 768×768 and
//! 3072×768 weights (k = 768), next to the measured f32 FMA peak of one core. Medians over
//! repeats of per-thread CPU time (so time spent descheduled on a shared machine does not
//! count); prints markdown tables.
//!
//! ```text
//! cargo bench -p stepembed-core --bench kernels              # the detected ISA
//! cargo bench -p stepembed-core --bench kernels -- --isa all  # scalar, avx2 and avx512
//! cargo bench -p stepembed-core --bench kernels -- --types Q4_K,Q6_K --tokens 128
//! cargo bench -p stepembed-core --bench kernels -- --unaligned  # token rows off 64-byte lines
//! ```

use std::hint::black_box;
use std::time::Duration;

use stepembed_core::gguf::GgmlType;
use stepembed_core::quant::{is_computable, matmul_scratch_len, Isa, Kernels};

/// A small xorshift generator: the bench needs no statistical quality, only arbitrary bytes.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn unit(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }
}

/// Offsets of the f16 scale fields inside one block.
fn f16_fields(ty: GgmlType) -> &'static [usize] {
    match ty {
        GgmlType::Q4_1 | GgmlType::Q5_1 | GgmlType::Q4_K | GgmlType::Q5_K => &[0, 2],
        GgmlType::Q2_K => &[80, 82],
        GgmlType::Q3_K => &[108],
        GgmlType::Q6_K => &[208],
        _ => &[0],
    }
}

/// Random weights of `n_rows` rows of `k` elements of `ty`, with small finite scales.
fn weights(rng: &mut Rng, ty: GgmlType, n_rows: usize, k: usize) -> Vec<u8> {
    let n = n_rows * k;
    match ty {
        GgmlType::F32 => (0..n).flat_map(|_| (rng.unit() * 0.1).to_le_bytes()).collect(),
        GgmlType::F16 => {
            (0..n).flat_map(|_| half::f16::from_f32(rng.unit() * 0.1).to_bits().to_le_bytes()).collect()
        }
        GgmlType::BF16 => {
            (0..n).flat_map(|_| (((rng.unit() * 0.1).to_bits() >> 16) as u16).to_le_bytes()).collect()
        }
        _ => {
            let bb = ty.block_bytes() as usize;
            let blocks = n / ty.block_elems() as usize;
            let mut w: Vec<u8> = (0..blocks * bb).map(|_| rng.next() as u8).collect();
            for block in w.chunks_exact_mut(bb) {
                for &off in f16_fields(ty) {
                    let d = half::f16::from_f32(0.001 + rng.unit().abs() * 0.01);
                    block[off..off + 2].copy_from_slice(&d.to_bits().to_le_bytes());
                }
            }
            w
        }
    }
}

/// CPU time of this thread, in seconds: unlike wall time it does not count the time the thread
/// spends descheduled, which on a shared machine is most of the noise.
fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; the clock id is a constant Linux supports.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Median CPU seconds per call of `f`, over enough repeats to fill about `budget`.
fn median_secs(budget: Duration, mut f: impl FnMut()) -> f64 {
    f();
    let start = thread_cpu_secs();
    f();
    let once = (thread_cpu_secs() - start).max(1e-9);
    let reps = (budget.as_secs_f64() / once).clamp(5.0, 500.0) as usize;
    let mut times: Vec<f64> = (0..reps)
        .map(|_| {
            let t = thread_cpu_secs();
            f();
            thread_cpu_secs() - t
        })
        .collect();
    times.sort_by(|a, b| a.total_cmp(b));
    times[times.len() / 2]
}

/// Peak f32 FMA throughput of one core (GFLOP/s), from a loop of independent FMAs with no
/// memory traffic: `(AVX-512, AVX2)` where available.
fn fma_peak() -> (Option<f64>, Option<f64>) {
    #[cfg(target_arch = "x86_64")]
    {
        let iters = 20_000_000u64;
        let run = |f: fn(u64) -> f32, lanes: f64| {
            let secs = median_secs(Duration::from_millis(600), || {
                black_box(f(black_box(iters)));
            });
            // 12 FMAs of `lanes` lanes, 2 flops each, per iteration.
            12.0 * lanes * 2.0 * iters as f64 / secs / 1e9
        };
        let avx512 = is_x86_feature_detected!("avx512f").then(|| run(fma_loop_avx512_entry, 16.0));
        let avx2 = (is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma"))
            .then(|| run(fma_loop_avx2_entry, 8.0));
        (avx512, avx2)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        (None, None)
    }
}

#[cfg(target_arch = "x86_64")]
fn fma_loop_avx512_entry(iters: u64) -> f32 {
    // SAFETY: only called after `is_x86_feature_detected!("avx512f")`.
    unsafe { fma_loop_avx512(iters) }
}

#[cfg(target_arch = "x86_64")]
fn fma_loop_avx2_entry(iters: u64) -> f32 {
    // SAFETY: only called after detecting AVX2 and FMA.
    unsafe { fma_loop_avx2(iters) }
}

/// 12 independent FMA chains (more than latency × throughput = 4 × 2), no loads.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn fma_loop_avx512(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_ps(0.999_999);
    let b = _mm512_set1_ps(1e-7);
    let mut acc = [_mm512_set1_ps(1.0); 12];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_fmadd_ps(*v, a, b);
        }
    }
    acc.iter().map(|&v| _mm512_reduce_add_ps(v)).sum()
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
fn fma_loop_avx2(iters: u64) -> f32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_ps(0.999_999);
    let b = _mm256_set1_ps(1e-7);
    let mut acc = [_mm256_set1_ps(1.0); 12];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_fmadd_ps(*v, a, b);
        }
    }
    let mut out = [0f32; 8];
    let s = acc.iter().fold(_mm256_setzero_ps(), |s, &v| _mm256_add_ps(s, v));
    // SAFETY: `out` holds 8 floats.
    unsafe { _mm256_storeu_ps(out.as_mut_ptr(), s) };
    out.iter().sum()
}

/// 16 floats on a 64-byte boundary.
#[derive(Clone, Copy)]
#[repr(C, align(64))]
struct Align64([f32; 16]);

// SAFETY: a 64-byte, padding-free array of f32, valid for any bit pattern.
unsafe impl bytemuck::Zeroable for Align64 {}
// SAFETY: as above; `Copy` and `'static`.
unsafe impl bytemuck::Pod for Align64 {}

struct Options {
    x_offset: usize,
    isas: Vec<Isa>,
    types: Vec<GgmlType>,
    tokens: Vec<usize>,
    budget: Duration,
}

fn options() -> Options {
    let mut o = Options {
        x_offset: 0,
        isas: vec![Kernels::detect().isa()],
        types: GgmlType::ALL.iter().copied().filter(|&t| is_computable(t)).collect(),
        tokens: vec![1, 16, 128, 512],
        budget: Duration::from_millis(250),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--isa" => {
                let v = it.next().expect("--isa needs a value");
                o.isas = if v == "all" {
                    vec![Isa::Scalar, Isa::Avx2, Isa::Avx512]
                } else {
                    v.split(',')
                        .map(|s| match s {
                            "scalar" => Isa::Scalar,
                            "avx2" => Isa::Avx2,
                            "avx512" => Isa::Avx512,
                            _ => panic!("unknown ISA {s}"),
                        })
                        .collect()
                };
            }
            "--types" => {
                let v = it.next().expect("--types needs a value");
                o.types = v
                    .split(',')
                    .map(|s| *GgmlType::ALL.iter().find(|t| t.name() == s).expect("unknown type"))
                    .collect();
            }
            "--tokens" => {
                let v = it.next().expect("--tokens needs a value");
                o.tokens = v.split(',').map(|s| s.parse().expect("token count")).collect();
            }
            "--budget-ms" => {
                let v = it.next().expect("--budget-ms needs a value");
                o.budget = Duration::from_millis(v.parse().expect("milliseconds"));
            }
            "--unaligned" => o.x_offset = 1,
            // `cargo bench` passes --bench to every bench target.
            "--bench" => {}
            other => panic!("unknown argument {other}"),
        }
    }
    o
}

fn main() {
    let o = options();
    let k = 768;
    let shapes = [768usize, 3072];
    let (peak512, peak2) = fma_peak();
    println!(
        "## stepembed-core quant kernels (single thread, k = {k}, token rows {})\n",
        if o.x_offset == 0 { "64-byte aligned" } else { "misaligned by 4 bytes" }
    );
    if let Some(p) = peak512 {
        println!("f32 FMA peak of one core, AVX-512: {p:.1} GFLOP/s");
    }
    if let Some(p) = peak2 {
        println!("f32 FMA peak of one core, AVX2:    {p:.1} GFLOP/s");
    }
    println!();
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    for &isa in &o.isas {
        let Some(kern) = Kernels::with_isa(isa) else {
            println!("({} not supported on this CPU)\n", isa.name());
            continue;
        };
        let peak = match isa {
            Isa::Avx512 => peak512,
            Isa::Avx2 => peak2,
            _ => None,
        };
        println!("### {}\n", isa.name());
        let mut header = String::from("| type | dequant GB/s |");
        let mut rule = String::from("|---|---:|");
        for &n in &shapes {
            for &t in &o.tokens {
                header.push_str(&format!(" {n}×{k} @{t} |"));
                rule.push_str("---:|");
            }
        }
        println!("{header}\n{rule}");
        let mut best_128 = Vec::new();
        for &ty in &o.types {
            let max_rows = *shapes.iter().max().unwrap();
            let w = weights(&mut rng, ty, max_rows, k);
            // Dequantization of the whole 3072×768 tensor, 64 rows at a time into one
            // cache-resident buffer (as `matmul_acc` decodes its tiles).
            let row_bytes = ty.row_bytes(k as u64).unwrap() as usize;
            let mut dst = vec![0f32; 64 * k];
            let secs = median_secs(o.budget, || {
                for rows in black_box(&w).chunks(64 * row_bytes) {
                    kern.dequantize(ty, rows, &mut dst).unwrap();
                }
            });
            let mut line = format!("| {} | {:.1} |", ty.name(), w.len() as f64 / secs / 1e9);
            let max_tokens = *o.tokens.iter().max().unwrap();
            // Token rows on 64-byte boundaries, as the engine lays out its activations (k = 768
            // is a multiple of 16 floats); `--unaligned` shifts them by one float.
            let mut x_store = vec![Align64([0.0; 16]); max_tokens * k / 16 + 2];
            let x_all: &mut [f32] = bytemuck::cast_slice_mut(&mut x_store);
            let x = &mut x_all[o.x_offset..][..max_tokens * k];
            x.iter_mut().for_each(|v| *v = rng.unit());
            let x = &*x;
            let mut scratch = vec![0f32; matmul_scratch_len(k).1];
            for &n_rows in &shapes {
                let wb = &w[..n_rows * ty.row_bytes(k as u64).unwrap() as usize];
                for &t in &o.tokens {
                    let mut out = vec![0f32; t * n_rows];
                    let secs = median_secs(o.budget, || {
                        kern.matmul_acc(
                            ty,
                            black_box(wb),
                            n_rows,
                            k,
                            x,
                            k,
                            t,
                            &mut out,
                            n_rows,
                            &mut scratch,
                        )
                        .unwrap();
                    });
                    let gflops = 2.0 * (n_rows * k * t) as f64 / secs / 1e9;
                    line.push_str(&format!(" {gflops:.1} |"));
                    if t == 128 && n_rows == 3072 {
                        best_128.push((ty, gflops));
                    }
                }
            }
            println!("{line}");
        }
        println!();
        if let Some(p) = peak {
            for (ty, g) in best_128 {
                if matches!(ty, GgmlType::Q4_K | GgmlType::Q6_K) {
                    println!(
                        "{} fused @128 tokens (3072×768): {g:.1} GFLOP/s = {:.0}% of the {p:.1} GFLOP/s peak",
                        ty.name(),
                        100.0 * g / p
                    );
                }
            }
            println!();
        }
    }
}
