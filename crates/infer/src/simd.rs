//! Which vector instruction set the decode kernels use. Detected once at run time, so one
//! binary uses AVX-512 (with VNNI for the int8 dot products) where the CPU has it, AVX2+FMA on
//! older x86-64, and portable scalar code elsewhere. `TINYLLAMA_ISA=scalar|avx2|avx512` lowers
//! the choice (for comparisons and for testing every path on one machine).

use std::sync::OnceLock;

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Isa {
    Scalar,
    /// AVX2, FMA and F16C.
    Avx2,
    /// AVX-512 F/BW/VL/DQ with VNNI, plus everything in `Avx2`.
    Avx512,
}

impl Isa {
    pub fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "AVX2+FMA",
            Isa::Avx512 => "AVX-512+VNNI",
        }
    }
}

/// The best instruction set this CPU supports.
pub fn detected() -> Isa {
    static D: OnceLock<Isa> = OnceLock::new();
    *D.get_or_init(|| {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            let avx2 = has!("avx2") && has!("fma") && has!("f16c");
            if avx2
                && has!("avx512f")
                && has!("avx512bw")
                && has!("avx512vl")
                && has!("avx512dq")
                && has!("avx512vnni")
            {
                return Isa::Avx512;
            }
            if avx2 {
                return Isa::Avx2;
            }
        }
        Isa::Scalar
    })
}

/// The kernels in words, AMX included where bf16 or int8 weights use it.
pub fn describe(isa: Isa) -> String {
    #[cfg(target_arch = "x86_64")]
    if isa == Isa::Avx512 && tinyllama_engine::cpu::amx::available() {
        let what = if tinyllama_engine::cpu::amx::int8_available() {
            "bf16 and int8"
        } else {
            "bf16"
        };
        return format!("{} ({what} on AMX tiles)", isa.name());
    }
    isa.name().to_string()
}

/// Every instruction set this CPU can run (for tests that compare them).
pub fn available() -> Vec<Isa> {
    [Isa::Scalar, Isa::Avx2, Isa::Avx512]
        .into_iter()
        .filter(|&i| i <= detected())
        .collect()
}

/// The instruction set the kernels use: the detected one, unless `TINYLLAMA_ISA` asks for a
/// lower one.
pub fn active() -> Isa {
    static A: OnceLock<Isa> = OnceLock::new();
    *A.get_or_init(|| {
        let best = detected();
        match std::env::var("TINYLLAMA_ISA").ok().as_deref() {
            Some("scalar") => Isa::Scalar,
            Some("avx2") => Isa::Avx2.min(best),
            Some("avx512") | None | Some("") => best,
            Some(other) => {
                eprintln!(
                    "warning: TINYLLAMA_ISA={other} is not one of scalar, avx2, avx512; using {}",
                    best.name()
                );
                best
            }
        }
    })
}

/// Defines `pub fn $name` with AVX-512, AVX2 and baseline builds of one body, chosen by
/// [`active`]. For plain loops that LLVM vectorises on its own.
macro_rules! multiversion {
    ($(#[$m:meta])* pub fn $name:ident($($arg:ident : $ty:ty),*) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        pub fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx512vl,avx512bw,avx512dq,avx2,fma,f16c")]
                unsafe fn v4($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                #[target_feature(enable = "avx2,fma,f16c")]
                unsafe fn v3($($arg: $ty),*) $(-> $ret)? { body($($arg),*) }
                match $crate::simd::active() {
                    // SAFETY: `active` only reports instruction sets the CPU has.
                    $crate::simd::Isa::Avx512 => return unsafe { v4($($arg),*) },
                    $crate::simd::Isa::Avx2 => return unsafe { v3($($arg),*) },
                    $crate::simd::Isa::Scalar => {}
                }
            }
            body($($arg),*)
        }
    };
}
pub(crate) use multiversion;
