//! Branch-free exp and erf that vectorise (libm's are scalar calls). Both are accurate to a few
//! ulp in f32, far below the 1e-5 the parity tests hold the model to.

/// Below this e^x is under f32's smallest normal (2^-126 ≈ 1.18e-38) and `exp` returns 0.
const EXP_MIN: f32 = -87.3;

/// e^x for f32, Cephes-style: x = k·ln2 + r, e^r by a degree-6 polynomial, 2^k by exponent bits.
/// Exactly 0 below `EXP_MIN`, as with subnormals flushed: a masked attention key (bias −1e9)
/// gets probability 0, not 1e-38 / Σ (a subnormal that every later matmul would be fed), and
/// GELU's erf tail multiplies by 0, not by a subnormal.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let tiny = x < EXP_MIN;
    let x = x.clamp(EXP_MIN, 88.3);
    // Round to nearest by the 1.5·2²³ trick: `f32::round` is a libm call that blocks vectorising.
    const MAGIC: f32 = 12_582_912.0;
    let k = (x * std::f32::consts::LOG2_E + MAGIC) - MAGIC;
    // ln 2 split in a short high part (exact product with k) and the rest.
    let r = x - k * 0.693_359_4 + k * 2.121_944_4e-4;
    let p = 1.987_569_1e-4_f32;
    let p = p * r + 1.398_199_9e-3;
    let p = p * r + 8.333_452e-3;
    let p = p * r + 4.166_579_6e-2;
    let p = p * r + 1.666_666_5e-1;
    let p = p * r + 0.5;
    let e = p * r * r + r + 1.0;
    let y = e * f32::from_bits(((k as i32 + 127) as u32) << 23);
    if tiny {
        0.0
    } else {
        y
    }
}

/// erf(x) by Abramowitz & Stegun 7.1.26: 1.5e-7 in exact arithmetic, below 1e-6 in f32.
#[inline(always)]
pub fn erf(x: f32) -> f32 {
    let a = x.abs();
    let t = 1.0 / (1.0 + 0.327_591_1 * a);
    let poly = t
        * (0.254_829_6
            + t * (-0.284_496_74 + t * (1.421_413_7 + t * (-1.453_152_1 + t * 1.061_405_4))));
    let y = 1.0 - poly * exp(-a * a);
    y.copysign(x)
}

/// Lanes of the vectorisable reductions: f32 sums are only reordered into SIMD lanes when the
/// code says so (no fast-math), so they accumulate into this many partial sums.
const LANES: usize = 16;

/// Σ f(i) for i < n, in `LANES` partial sums.
#[inline(always)]
pub fn sum_by(n: usize, f: impl Fn(usize) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let full = n - n % LANES;
    let mut i = 0;
    while i < full {
        for (l, a) in acc.iter_mut().enumerate() {
            *a += f(i + l);
        }
        i += LANES;
    }
    let mut s = acc.iter().sum::<f32>();
    for j in full..n {
        s += f(j);
    }
    s
}

/// max of x (−∞ for an empty slice), in `LANES` partial maxima.
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for c in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(c) {
            *a = if v > *a { v } else { *a };
        }
    }
    let mut m = f32::NEG_INFINITY;
    for &v in acc.iter().chain(chunks.remainder()) {
        m = if v > m { v } else { m };
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exp_matches_std_to_a_few_ulp() {
        let mut worst = 0f64;
        for i in -8700..=8800 {
            let x = i as f32 * 0.01;
            let want = (x as f64).exp();
            let rel = ((exp(x) as f64 - want) / want).abs();
            worst = worst.max(rel);
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        // Never a subnormal: 0 below EXP_MIN (a masked key), the smallest normals above it.
        assert_eq!(exp(-1e9), 0.0);
        assert_eq!(exp(-87.31), 0.0);
        assert!(exp(-87.3).is_normal() && exp(-87.3) < 1.3e-38);
        for i in 0..=10_000 {
            let x = -87.3 - i as f32 * 1e-3;
            assert!(
                exp(x) == 0.0 || exp(x).is_normal(),
                "exp({x}) = {:e}",
                exp(x)
            );
        }
    }

    #[test]
    fn erf_matches_libm() {
        let mut worst = 0f32;
        for i in -6000..=6000 {
            let x = i as f32 * 0.001;
            worst = worst.max((erf(x) - libm_erf(x)).abs());
        }
        assert!(worst < 1e-6, "worst absolute error {worst}");
    }

    /// Reference erf in f64: Taylor series up to |x| = 3 (terms stay below 1e4, so no
    /// cancellation), the asymptotic erfc series beyond (its error there is below 1e-8).
    fn libm_erf(x: f32) -> f32 {
        let x = x as f64;
        if x.abs() > 3.0 {
            let a = x.abs();
            let z = 1.0 / (2.0 * a * a);
            let series = 1.0 - z + 3.0 * z * z - 15.0 * z.powi(3) + 105.0 * z.powi(4);
            let erfc = (-a * a).exp() / (a * std::f64::consts::PI.sqrt()) * series;
            return ((1.0 - erfc) * x.signum()) as f32;
        }
        let (mut sum, mut term, mut n) = (0f64, x, 0u32);
        while n < 200 {
            let t = term / (2 * n + 1) as f64;
            sum += t;
            if t.abs() < 1e-17 {
                break;
            }
            n += 1;
            term *= -x * x / n as f64;
        }
        (sum * 2.0 / std::f64::consts::PI.sqrt()) as f32
    }
}
