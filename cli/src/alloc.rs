//! The allocator. Training frees and re-allocates activation-sized buffers every step. glibc
//! hands large ones back to the kernel at once and mimalloc (v3) does so a second after they
//! are freed (its `purge_delay`), so either way every step page-faults and zero-fills them again: on
//! e5-small that was a fifth of a BT-LoRA step. The training commands keep freed memory for
//! reuse; the server keeps mimalloc's default and returns what it frees.

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_purge_delay` in mimalloc's `mi_option_e` (v2 and v3 alike; libmimalloc-sys
/// does not name it). The test below pins it by its default in the v3 sources we build.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Never return freed memory to the OS (peak RSS is unchanged: the memory is reused).
#[allow(unsafe_code)]
pub fn keep_freed_memory() {
    // SAFETY: mi_option_set stores one integer in mimalloc's option table; a valid option id
    // (checked by the test) and any value are allowed, from any thread.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[allow(unsafe_code)]
    fn purge_delay() -> std::ffi::c_long {
        // SAFETY: reads one integer from mimalloc's option table.
        unsafe { libmimalloc_sys::mi_option_get(MI_OPTION_PURGE_DELAY) }
    }

    #[test]
    fn option_15_is_the_purge_delay() {
        // v3's options.c: purge_delay defaults to 1000 (ms), a value no other option has.
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
            assert_eq!(purge_delay(), 1000);
        }
        keep_freed_memory();
        assert_eq!(purge_delay(), -1);
    }
}
