//! The x86-64 instructions this build was compiled to use, checked as the process starts.
//!
//! `.cargo/config.toml` compiles for x86-64-v3 (AVX2, BMI1 and 2, FMA, LZCNT, MOVBE on top of
//! SSE4.2), which every x86 CPU AWS runs Fargate and EC2 on has (Intel since Haswell, 2013, and
//! every AMD EPYC). The compiler may use those instructions anywhere, so on an older CPU the
//! process would die of an illegal instruction (exit 132, which AWS Batch does not retry) at
//! some point nobody can predict. `main` asks this module first and stops with a message
//! instead. A build without the flags (`RUSTFLAGS` set replaces the file's flags) assumes
//! nothing and passes on any x86-64 CPU.
//!
//! Also here: the one cache hint the hash lookups use (`prefetch`).

/// The instructions this build assumes that this CPU lacks (empty on other architectures).
pub fn missing_features() -> Vec<&'static str> {
    #[allow(unused_mut)]
    let mut missing = Vec::new();
    #[cfg(target_arch = "x86_64")]
    {
        macro_rules! check {
            ($($feature:tt),*) => {$(
                if cfg!(target_feature = $feature) && !std::arch::is_x86_feature_detected!($feature) {
                    missing.push($feature);
                }
            )*};
        }
        // The levels x86-64-v2, v3 and v4, as rustc names their features.
        check!("sse3", "ssse3", "sse4.1", "sse4.2", "popcnt", "cmpxchg16b");
        check!(
            "avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "lzcnt", "movbe", "xsave"
        );
        check!("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl");
    }
    missing
}

/// Asks the CPU to bring the cache line holding `value` into its cache, for a read soon. Lookups
/// in tables far larger than the cache ask for the lines of the lookups a few ahead, so their
/// waits for memory overlap (`state::keyset`, `sandbox::member_index`). Does nothing on other
/// architectures.
pub fn prefetch<T>(value: &T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch only hints the cache, and of a valid reference.
    unsafe {
        use std::arch::x86_64::{_MM_HINT_T0, _mm_prefetch};
        _mm_prefetch::<_MM_HINT_T0>((value as *const T).cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = value;
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_machine_that_runs_the_tests_has_what_the_build_assumes() {
        assert_eq!(super::missing_features(), Vec::<&str>::new());
    }
}
