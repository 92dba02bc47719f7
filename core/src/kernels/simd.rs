//! Runtime ISA dispatch for the element-wise loops. `pulp::Arch::dispatch` enters a function
//! compiled with the best target features the CPU has (AVX-512, AVX2+FMA, NEON); the loop has
//! to be inlined into it to be vectorised for them, which a closure is not reliably (LLVM
//! inlines its callees first and then finds it too big). A `Kernel` is a struct whose `run` is
//! `#[inline(always)]`, so it always is.
pub(super) trait Kernel {
    fn run(self);
}

struct Dispatch<K>(K);

impl<K: Kernel> pulp::WithSimd for Dispatch<K> {
    type Output = ();
    #[inline(always)]
    fn with_simd<S: pulp::Simd>(self, _simd: S) {
        self.0.run()
    }
}

/// Runs the kernel compiled for the best vector ISA available.
pub(super) fn vectorized<K: Kernel>(k: K) {
    pulp::Arch::new().dispatch(Dispatch(k))
}
