//! Dot products of embeddings: the sentiment heads' logits and the theme
//! layer's similarities (`themes`), one kernel for both so that a CPU takes
//! one arithmetic path everywhere.

/// The one dot product of the sentiment heads and the theme code: AVX2
/// with FMA where the CPU has them (checked once per call, a cached flag),
/// else eight independent lanes the compiler vectorises. The two sum in different orders, so scores
/// may differ in the last bits between such CPUs; on one machine every call
/// takes the same path (the module stays deterministic).
#[inline]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            // SAFETY: the CPU has AVX2 and FMA (checked just above).
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_lanes(a, b)
}

/// Four 8-lane fused multiply-add accumulators, 32 floats per step (a
/// 384-dim dot is 12 steps); the tail lane by lane.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::{_mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps};
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (all loads): i + 8 * k + 8 <= n, within both slices.
    while i + 32 <= n {
        for (k, slot) in acc.iter_mut().enumerate() {
            let x = unsafe { _mm256_loadu_ps(pa.add(i + 8 * k)) };
            let y = unsafe { _mm256_loadu_ps(pb.add(i + 8 * k)) };
            *slot = _mm256_fmadd_ps(x, y, *slot);
        }
        i += 32;
    }
    while i + 8 <= n {
        let x = unsafe { _mm256_loadu_ps(pa.add(i)) };
        let y = unsafe { _mm256_loadu_ps(pb.add(i)) };
        acc[0] = _mm256_fmadd_ps(x, y, acc[0]);
        i += 8;
    }
    // SAFETY: AVX2 is enabled for this function.
    unsafe { reduce_avx2(acc, &a[i..n], &b[i..n]) }
}

/// The accumulators summed (in one fixed order) plus the tail.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn reduce_avx2(acc: [std::arch::x86_64::__m256; 4], a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::{_mm256_add_ps, _mm256_storeu_ps};
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0f32; 8];
    // SAFETY: `lanes` holds 8 floats.
    unsafe { _mm256_storeu_ps(lanes.as_mut_ptr(), sum) };
    let total: f32 = lanes.iter().sum();
    total + a.iter().zip(b).map(|(x, y)| x * y).sum::<f32>()
}

/// The largest dot product of `b` with any of `rows` (NEG_INFINITY for
/// none), each equal to `dot(row, b)` to the bit. With AVX2 two rows go
/// through `b` at once (one load of `b` for two multiply-adds): the
/// nearest-row similarity of a theme's label and examples is most of a
/// re-tag's arithmetic.
pub fn max_dot(rows: &[Vec<f32>], b: &[f32]) -> f32 {
    let mut best = f32::NEG_INFINITY;
    let mut pairs = rows.chunks_exact(2);
    let rest = pairs.remainder();
    #[cfg(target_arch = "x86_64")]
    {
        if std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
        {
            for pair in pairs.by_ref() {
                // SAFETY: the CPU has AVX2 and FMA (checked just above).
                let [x, y] = unsafe { dot2_avx2(&pair[0], &pair[1], b) };
                best = best.max(x).max(y);
            }
        }
    }
    for row in pairs.flatten().chain(rest) {
        best = best.max(dot(row, b));
    }
    best
}

/// `[dot_avx2(a0, b), dot_avx2(a1, b)]` to the bit (the same accumulators
/// and sums per row), reading `b` once.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn dot2_avx2(a0: &[f32], a1: &[f32], b: &[f32]) -> [f32; 2] {
    use std::arch::x86_64::{_mm256_fmadd_ps, _mm256_loadu_ps, _mm256_setzero_ps};
    if a0.len() != a1.len() {
        // SAFETY: AVX2 and FMA are enabled for this function.
        return unsafe { [dot_avx2(a0, b), dot_avx2(a1, b)] };
    }
    let n = a0.len().min(b.len());
    let (p0, p1, pb) = (a0.as_ptr(), a1.as_ptr(), b.as_ptr());
    let mut acc0 = [_mm256_setzero_ps(); 4];
    let mut acc1 = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    // SAFETY (all loads): i + 8 * k + 8 <= n, within all three slices.
    while i + 32 <= n {
        for k in 0..4 {
            let y = unsafe { _mm256_loadu_ps(pb.add(i + 8 * k)) };
            let x0 = unsafe { _mm256_loadu_ps(p0.add(i + 8 * k)) };
            let x1 = unsafe { _mm256_loadu_ps(p1.add(i + 8 * k)) };
            acc0[k] = _mm256_fmadd_ps(x0, y, acc0[k]);
            acc1[k] = _mm256_fmadd_ps(x1, y, acc1[k]);
        }
        i += 32;
    }
    while i + 8 <= n {
        let y = unsafe { _mm256_loadu_ps(pb.add(i)) };
        let x0 = unsafe { _mm256_loadu_ps(p0.add(i)) };
        let x1 = unsafe { _mm256_loadu_ps(p1.add(i)) };
        acc0[0] = _mm256_fmadd_ps(x0, y, acc0[0]);
        acc1[0] = _mm256_fmadd_ps(x1, y, acc1[0]);
        i += 8;
    }
    // SAFETY: AVX2 is enabled for this function.
    unsafe {
        [
            reduce_avx2(acc0, &a0[i..n], &b[i..n]),
            reduce_avx2(acc1, &a1[i..n], &b[i..n]),
        ]
    }
}

/// The portable dot product: eight independent lanes.
#[inline]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (xa, xb) in ca.zip(cb) {
        for ((s, x), y) in acc.iter_mut().zip(xa).zip(xb) {
            *s += x * y;
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// Scales `v` to unit length (a zero vector stays zero).
pub fn normalize(v: &mut [f32]) {
    let n = dot(v, v).sqrt();
    if n > 1e-12 {
        for x in v.iter_mut() {
            *x /= n;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_dot_product_agrees_with_the_portable_one_at_every_length() {
        // Lengths around the 8- and 32-float steps, and the encoder's 384.
        for n in [0, 1, 7, 8, 9, 31, 32, 33, 63, 100, 384, 385] {
            let a: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
                .collect();
            let b: Vec<f32> = (0..n)
                .map(|i| ((i * 53 % 89) as f32 - 44.0) / 44.0)
                .collect();
            let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
            let (fast, lanes) = (dot(&a, &b), dot_lanes(&a, &b));
            assert!(
                (fast as f64 - exact).abs() < 1e-4,
                "n={n}: {fast} vs {exact}"
            );
            assert!(
                (lanes as f64 - exact).abs() < 1e-4,
                "n={n}: {lanes} vs {exact}"
            );
        }
    }

    #[test]
    fn the_nearest_row_equals_the_best_single_dot_to_the_bit() {
        let best_single = |rows: &[Vec<f32>], b: &[f32]| {
            rows.iter()
                .map(|r| dot(r, b))
                .fold(f32::NEG_INFINITY, f32::max)
                .to_bits()
        };
        for n in [0, 7, 8, 33, 384, 385] {
            let row = |seed: usize| -> Vec<f32> {
                (0..n)
                    .map(|i| (((i + 1) * (seed * 7 + 3)) % 97) as f32 / 48.0 - 1.0)
                    .collect()
            };
            let b = row(11);
            for count in 0..6 {
                let rows: Vec<Vec<f32>> = (0..count).map(row).collect();
                let got = max_dot(&rows, &b).to_bits();
                assert_eq!(got, best_single(&rows, &b), "n={n} rows={count}");
            }
            // Rows of other lengths take the single path.
            let ragged = vec![row(1), row(2)[..n / 2].to_vec(), row(3)];
            let got = max_dot(&ragged, &b).to_bits();
            assert_eq!(got, best_single(&ragged, &b), "ragged n={n}");
        }
    }
}
