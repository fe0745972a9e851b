//! Throughput of fast mode, single thread: `matmul_q8_acc` (GOP/s, 2 ops per multiply-add,
//! panel unpacking included) for every quantized type at 1, 16 and 128 tokens on 768×768 and
//! 3072×768 weights (k = 768), beside the f32 `matmul_acc` of the detected ISA, and the measured
//! int8 peak of one core (independent `vpdpbusd` chains, no memory traffic). Medians of
//! per-thread CPU time; prints markdown tables.
//!
//! ```text
//! cargo bench -p stepembed-core --bench int8                       # the detected integer path
//! cargo bench -p stepembed-core --bench int8 -- --isa all          # every path this CPU runs
//! cargo bench -p stepembed-core --bench int8 -- --types Q4_K,Q6_K --tokens 1,128
//! ```

use std::hint::black_box;
use std::time::Duration;

use stepembed_core::gguf::GgmlType;
use stepembed_core::quant::{
    is_computable, matmul_q8_scratch_len, matmul_scratch_len, q8_blocks, quantize_q8, quantize_q8_refined,
    BlockQ8, Kernels, Q8Isa,
};

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

/// Random weights of `n_rows` rows of `k` elements of a quantized `ty`, small finite scales.
fn weights(rng: &mut Rng, ty: GgmlType, n_rows: usize, k: usize) -> Vec<u8> {
    let bb = ty.block_bytes() as usize;
    let blocks = n_rows * k / ty.block_elems() as usize;
    let mut w: Vec<u8> = (0..blocks * bb).map(|_| rng.next() as u8).collect();
    for block in w.chunks_exact_mut(bb) {
        for &off in f16_fields(ty) {
            let d = half::f16::from_f32(0.001 + rng.unit().abs() * 0.01);
            block[off..off + 2].copy_from_slice(&d.to_bits().to_le_bytes());
        }
    }
    w
}

/// CPU time of this thread, in seconds (time descheduled on a shared machine does not count).
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

/// Peak int8 throughput of one core (GOP/s, 2 ops per multiply-add) from independent
/// `vpdpbusd` chains with no memory traffic: `(zmm, ymm)` where the CPU has them.
fn vnni_peak() -> (Option<f64>, Option<f64>) {
    #[cfg(target_arch = "x86_64")]
    {
        let iters = 20_000_000u64;
        let run = |f: fn(u64) -> i32, macs: f64| {
            let secs = median_secs(Duration::from_millis(600), || {
                black_box(f(black_box(iters)));
            });
            12.0 * macs * 2.0 * iters as f64 / secs / 1e9
        };
        let zmm = is_x86_feature_detected!("avx512vnni").then(|| run(peak_zmm_entry, 64.0));
        let ymm = is_x86_feature_detected!("avxvnni").then(|| run(peak_ymm_entry, 32.0));
        (zmm, ymm)
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        (None, None)
    }
}

#[cfg(target_arch = "x86_64")]
fn peak_zmm_entry(iters: u64) -> i32 {
    // SAFETY: only called after detecting AVX-512 VNNI.
    unsafe { peak_zmm(iters) }
}

#[cfg(target_arch = "x86_64")]
fn peak_ymm_entry(iters: u64) -> i32 {
    // SAFETY: only called after detecting AVX-VNNI.
    unsafe { peak_ymm(iters) }
}

/// 12 independent `vpdpbusd` chains (more than latency × throughput), no loads.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vnni")]
fn peak_zmm(iters: u64) -> i32 {
    use std::arch::x86_64::*;
    let a = _mm512_set1_epi8(3);
    let b = _mm512_set1_epi8(-5);
    let mut acc = [_mm512_setzero_si512(); 12];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm512_dpbusd_epi32(*v, a, b);
        }
    }
    acc.iter().map(|&v| _mm512_reduce_add_epi32(v)).fold(0, i32::wrapping_add)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,avxvnni")]
fn peak_ymm(iters: u64) -> i32 {
    use std::arch::x86_64::*;
    let a = _mm256_set1_epi8(3);
    let b = _mm256_set1_epi8(-5);
    let mut acc = [_mm256_setzero_si256(); 12];
    for _ in 0..iters {
        for v in acc.iter_mut() {
            *v = _mm256_dpbusd_avx_epi32(*v, a, b);
        }
    }
    let s = acc.iter().fold(_mm256_setzero_si256(), |s, &v| _mm256_add_epi32(s, v));
    _mm256_extract_epi32::<0>(s)
}

struct Options {
    isas: Vec<Q8Isa>,
    types: Vec<GgmlType>,
    tokens: Vec<usize>,
    budget: Duration,
}

fn options() -> Options {
    let mut o = Options {
        isas: vec![Kernels::detect().q8_isa()],
        types: GgmlType::ALL.iter().copied().filter(|&t| is_computable(t) && t.block_elems() > 1).collect(),
        tokens: vec![1, 16, 128],
        budget: Duration::from_millis(200),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--isa" => {
                let v = it.next().expect("--isa needs a value");
                o.isas = if v == "all" {
                    Q8Isa::ALL.to_vec()
                } else {
                    v.split(',')
                        .map(|s| *Q8Isa::ALL.iter().find(|i| i.name() == s).expect("unknown integer ISA"))
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
    let f32_kern = Kernels::detect();
    println!(
        "## stepembed-core int8 kernels (single thread, k = {k}, GOP/s; f32 path: {})\n",
        f32_kern.isa().name()
    );
    let (zmm, ymm) = vnni_peak();
    if let Some(p) = zmm {
        println!("int8 peak of one core, vpdpbusd zmm: {p:.0} GOP/s");
    }
    if let Some(p) = ymm {
        println!("int8 peak of one core, vpdpbusd ymm: {p:.0} GOP/s");
    }
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let max_tokens = *o.tokens.iter().max().unwrap();
    let x: Vec<f32> = (0..max_tokens * k).map(|_| rng.unit()).collect();
    let mut xq = vec![BlockQ8::ZERO; q8_blocks(k, max_tokens).unwrap()];
    let secs = median_secs(o.budget, || quantize_q8(black_box(&x), k, k, max_tokens, &mut xq).unwrap());
    println!(
        "quantize_q8: {:.1} ns per token of {k} ({:.2} GB/s of f32 in)\n",
        secs / max_tokens as f64 * 1e9,
        (x.len() * 4) as f64 / secs / 1e9
    );
    // The refined quantizer: on these well-spread values no token gets a residual; with one large
    // channel per block (30× the others) every token does.
    let mut xr = xq.clone();
    let mut spiky = x.clone();
    spiky.iter_mut().step_by(32).for_each(|v| *v *= 30.0);
    for (what, x) in [("well-spread", &x), ("one large channel per block", &spiky)] {
        let secs = median_secs(o.budget, || {
            quantize_q8_refined(black_box(x), k, k, max_tokens, &mut xq, &mut xr).unwrap();
        });
        let refined = quantize_q8_refined(x, k, k, max_tokens, &mut xq, &mut xr).unwrap();
        println!(
            "quantize_q8_refined, {what}: {:.1} ns per token of {k} ({refined} of {max_tokens} tokens refined)",
            secs / max_tokens as f64 * 1e9
        );
    }
    println!();

    let mut header = String::from("| type | path |");
    let mut rule = String::from("|---|---|");
    for &n in &shapes {
        for &t in &o.tokens {
            header.push_str(&format!(" {n}×{k} @{t} |"));
            rule.push_str("---:|");
        }
    }
    println!("{header}\n{rule}");
    for &ty in &o.types {
        let w = weights(&mut rng, ty, *shapes.iter().max().unwrap(), k);
        let row_bytes = ty.row_bytes(k as u64).unwrap() as usize;
        let mut f32_scratch = vec![0f32; matmul_scratch_len(k).1];
        let mut lines = Vec::new();
        // The f32 path.
        let mut line = format!("| {} | f32 {} |", ty.name(), f32_kern.isa().name());
        for &n in &shapes {
            for &t in &o.tokens {
                let mut out = vec![0f32; t * n];
                let wb = &w[..n * row_bytes];
                let secs = median_secs(o.budget, || {
                    f32_kern
                        .matmul_acc(ty, black_box(wb), n, k, &x, k, t, &mut out, n, &mut f32_scratch)
                        .unwrap();
                });
                line.push_str(&format!(" {:.1} |", 2.0 * (n * k * t) as f64 / secs / 1e9));
            }
        }
        lines.push(line);
        let mut scratch = vec![0f32; matmul_q8_scratch_len(k)];
        for &isa in &o.isas {
            let Some(kern) = Kernels::scalar().with_q8_isa(isa) else { continue };
            let mut line = format!("| {} | int8 {} |", ty.name(), isa.name());
            for &n in &shapes {
                for &t in &o.tokens {
                    let mut out = vec![0f32; t * n];
                    let wb = &w[..n * row_bytes];
                    let secs = median_secs(o.budget, || {
                        kern.matmul_q8_acc(
                            ty,
                            black_box(wb),
                            n,
                            k,
                            &xq,
                            k / 32,
                            t,
                            &mut out,
                            n,
                            &mut scratch,
                        )
                        .unwrap();
                    });
                    line.push_str(&format!(" {:.1} |", 2.0 * (n * k * t) as f64 / secs / 1e9));
                }
            }
            lines.push(line);
        }
        for l in lines {
            println!("{l}");
        }
    }
}
