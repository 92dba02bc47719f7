//! Reading and writing the control register that holds the flush bits (the only unsafe code).
#![allow(unsafe_code)]

/// A thread's floating-point control word, as the register holds it: the flush bits and
/// everything else (rounding mode, exception masks), so restoring it restores all of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Mode(pub u64);

impl Mode {
    /// This mode with flush-to-zero and denormals-are-zero set, other bits unchanged.
    pub fn flushing(self) -> Mode {
        Mode(self.0 | flush_bits())
    }
    /// This mode with both flush bits cleared (IEEE gradual underflow), other bits unchanged.
    pub fn gradual(self) -> Mode {
        Mode(self.0 & !flush_bits())
    }
    /// The control bits only: x86's MXCSR also holds sticky status flags (bits 0–5), which
    /// any arithmetic may raise; aarch64 keeps them in FPSR, so FPCR is returned as is.
    pub fn without_flags(self) -> Mode {
        Mode(self.0 & !imp::STATUS)
    }
    /// Whether subnormals are flushed in both directions (false where unsupported).
    pub fn is_flushing(self) -> bool {
        let bits = flush_bits();
        bits != 0 && self.0 & bits == bits
    }
}

/// Whether this target can flush subnormals (x86_64, aarch64).
pub fn supported() -> bool {
    flush_bits() != 0
}

/// The calling thread's current mode.
pub fn current() -> Mode {
    Mode(imp::read())
}

/// Sets the calling thread's mode. Bits the CPU does not implement are dropped, never written.
///
/// LLVM assumes the default environment and does not order floating-point arithmetic against
/// this call: a value computed in registers may be computed on either side of it. Work whose
/// results reach memory or pass through an opaque call (every tensor operation) is ordered.
pub fn set(mode: Mode) {
    imp::write(mode.0 & imp::writable())
}

fn flush_bits() -> u64 {
    imp::FLUSH & imp::writable()
}

#[cfg(target_arch = "x86_64")]
mod imp {
    use std::arch::asm;
    use std::sync::OnceLock;

    const FTZ: u64 = 1 << 15;
    const DAZ: u64 = 1 << 6;
    pub const FLUSH: u64 = FTZ | DAZ;
    pub const STATUS: u64 = 0x3f;

    pub fn read() -> u64 {
        let mut v: u32 = 0;
        // SAFETY: stmxcsr stores the 32-bit MXCSR into the u32 it is given; SSE2 is part of
        // the x86_64 baseline.
        unsafe { asm!("stmxcsr [{}]", in(reg) &mut v, options(nostack, preserves_flags)) };
        u64::from(v)
    }

    pub fn write(v: u64) {
        let v = v as u32;
        // SAFETY: ldmxcsr loads a u32; `set` masks it with MXCSR_MASK, so no reserved bit is
        // set (which would fault).
        unsafe { asm!("ldmxcsr [{}]", in(reg) &v, options(nostack, readonly, preserves_flags)) };
    }

    /// MXCSR_MASK from FXSAVE: DAZ is missing on a few early x86_64 CPUs. 0 means the
    /// architectural default 0xFFBF (no DAZ).
    pub fn writable() -> u64 {
        static MASK: OnceLock<u64> = OnceLock::new();
        *MASK.get_or_init(|| {
            #[repr(C, align(16))]
            struct Area([u8; 512]);
            let mut area = Area([0; 512]);
            // SAFETY: fxsave writes exactly 512 bytes to a 16-byte aligned address.
            unsafe { asm!("fxsave [{}]", in(reg) area.0.as_mut_ptr(), options(nostack)) };
            let mask = u32::from_le_bytes([area.0[28], area.0[29], area.0[30], area.0[31]]);
            u64::from(if mask == 0 { 0xFFBF } else { mask })
        })
    }
}

#[cfg(target_arch = "aarch64")]
mod imp {
    use std::arch::asm;

    const FZ: u64 = 1 << 24;
    const FZ16: u64 = 1 << 19;
    pub const FLUSH: u64 = FZ | FZ16;
    pub const STATUS: u64 = 0;

    pub fn read() -> u64 {
        let v: u64;
        // SAFETY: reading FPCR has no side effects and is allowed at EL0.
        unsafe { asm!("mrs {}, fpcr", out(reg) v, options(nomem, nostack, preserves_flags)) };
        v
    }

    pub fn write(v: u64) {
        // SAFETY: FPCR is writable at EL0; `set` keeps FZ16 (RES0 without FEAT_FP16) clear
        // where the CPU lacks half-precision arithmetic.
        unsafe { asm!("msr fpcr, {}", in(reg) v, options(nomem, nostack, preserves_flags)) };
    }

    /// Every bit but FZ16 on CPUs without half-precision arithmetic.
    pub fn writable() -> u64 {
        if std::arch::is_aarch64_feature_detected!("fp16") {
            u64::MAX
        } else {
            !FZ16
        }
    }
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
mod imp {
    pub const FLUSH: u64 = 0;
    pub const STATUS: u64 = 0;
    pub fn read() -> u64 {
        0
    }
    pub fn write(_: u64) {}
    pub fn writable() -> u64 {
        0
    }
}
