//! The CUDA C++ kernel sources (`kernels/*.cu`, embedded at build time), one module per op
//! family, each compiled as `common.cuh` followed by the module's file.

/// Helpers every module starts with.
pub const COMMON: &str = include_str!("../kernels/common.cuh");

/// One compilation unit and the `extern "C"` kernels it defines.
#[derive(Clone, Copy, Debug)]
pub struct Module {
    pub name: &'static str,
    pub source: &'static str,
    pub kernels: &'static [&'static str],
}

pub const MODULES: &[Module] = &[
    Module {
        name: "elementwise",
        source: include_str!("../kernels/elementwise.cu"),
        kernels: &[
            "fill_f32",
            "fill_bf16",
            "scale_f32",
            "scale_bf16",
            "add_f32",
            "add_bf16",
            "cast_f32_bf16",
            "cast_bf16_f32",
            "sumsq_f32",
            "sumsq_bf16",
            "reduce_f64",
            "nonfinite_f32",
            "nonfinite_bf16",
        ],
    },
    Module {
        name: "embedding",
        source: include_str!("../kernels/embedding.cu"),
        kernels: &["embedding_fwd", "embedding_bwd"],
    },
    Module {
        name: "rmsnorm",
        source: include_str!("../kernels/rmsnorm.cu"),
        kernels: &["rmsnorm_fwd", "rmsnorm_bwd", "colsum_add"],
    },
    Module {
        name: "rope",
        source: include_str!("../kernels/rope.cu"),
        kernels: &["rope"],
    },
    Module {
        name: "swiglu",
        source: include_str!("../kernels/swiglu.cu"),
        kernels: &["swiglu_fwd", "swiglu_bwd"],
    },
    Module {
        name: "head_loss",
        source: include_str!("../kernels/head_loss.cu"),
        kernels: &["xent_rows"],
    },
    Module {
        name: "adamw",
        source: include_str!("../kernels/adamw.cu"),
        kernels: &["adamw"],
    },
    Module {
        name: "attention",
        source: include_str!("../kernels/attention.cu"),
        kernels: &[
            "attn_fwd_hd32",
            "attn_fwd_hd64",
            "attn_fwd_hd128",
            "attn_bwd_dot",
            "attn_bwd_hd32",
            "attn_bwd_hd64",
            "attn_bwd_hd128",
            "attn_dq_finish",
        ],
    },
];

/// Head dimensions the flash-attention kernels are instantiated for.
pub const ATTN_HEAD_DIMS: &[usize] = &[32, 64, 128];

impl Module {
    /// The text handed to the compiler.
    pub fn full_source(&self) -> String {
        format!(
            "#line 1 \"common.cuh\"\n{COMMON}\n#line 1 \"{}.cu\"\n{}",
            self.name, self.source
        )
    }
}

/// Every kernel name, in module order.
pub fn all_kernels() -> impl Iterator<Item = &'static str> {
    MODULES.iter().flat_map(|m| m.kernels.iter().copied())
}

/// A stable 64-bit FNV-1a hash (cache keys must not change between Rust releases, which rules
/// out `std::hash`).
pub fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for p in parts {
        for &b in *p {
            h ^= b as u64;
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
        // Separate the parts so ("ab","c") and ("a","bc") differ.
        h ^= 0xff;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Names of the `extern "C" __global__` functions a source defines, in order (used to check the
/// tables above against the files).
pub fn defined_kernels(source: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = source;
    const TAG: &str = "extern \"C\" __global__";
    while let Some(i) = rest.find(TAG) {
        rest = &rest[i + TAG.len()..];
        let mut s = rest.trim_start();
        s = s.strip_prefix("void").unwrap_or(s).trim_start();
        if let Some(lb) = s.strip_prefix("__launch_bounds__") {
            // Skip the balanced parenthesis group.
            let mut depth = 0;
            let mut end = 0;
            for (j, ch) in lb.char_indices() {
                match ch {
                    '(' => depth += 1,
                    ')' => {
                        depth -= 1;
                        if depth == 0 {
                            end = j + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            s = lb[end..].trim_start();
        }
        let name: String = s
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect();
        if !name.is_empty() {
            out.push(name);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn tables_list_exactly_the_kernels_each_file_defines() {
        for m in MODULES {
            let found = defined_kernels(m.source);
            assert_eq!(
                found,
                m.kernels.iter().map(|s| s.to_string()).collect::<Vec<_>>(),
                "kernels of {}.cu",
                m.name
            );
        }
        let all: Vec<_> = all_kernels().collect();
        let unique: HashSet<_> = all.iter().collect();
        assert_eq!(all.len(), unique.len(), "kernel names must be unique");
    }

    #[test]
    fn every_op_family_has_a_kernel_file() {
        let names: Vec<_> = MODULES.iter().map(|m| m.name).collect();
        for want in [
            "elementwise",
            "embedding",
            "rmsnorm",
            "rope",
            "swiglu",
            "head_loss",
            "adamw",
            "attention",
        ] {
            assert!(names.contains(&want), "missing module {want}");
        }
        for hd in ATTN_HEAD_DIMS {
            for dir in ["fwd", "bwd"] {
                let k = format!("attn_{dir}_hd{hd}");
                assert!(all_kernels().any(|n| n == k), "missing {k}");
            }
        }
    }

    #[test]
    fn sources_are_self_contained_and_use_no_toolkit_only_headers() {
        for m in MODULES {
            let src = m.full_source();
            assert!(src.contains("typedef __nv_bfloat16 bf16;"));
            // NVRTC in CI has only the runtime wheel's headers: no mma.h (it lives in crt/).
            for line in src
                .lines()
                .filter(|l| l.trim_start().starts_with("#include"))
            {
                assert!(
                    line.contains("<cuda_bf16.h>"),
                    "{}: unexpected include `{line}`",
                    m.name
                );
            }
        }
    }

    #[test]
    fn kernel_name_parser_handles_launch_bounds_and_plain_definitions() {
        let src = "extern \"C\" __global__ void a(int x) {}\nextern \"C\" __global__ void __launch_bounds__(f(1), 2)\nb_c(int) {}";
        assert_eq!(defined_kernels(src), vec!["a", "b_c"]);
    }

    #[test]
    fn fnv_hash_is_stable_and_separates_parts() {
        assert_eq!(fnv1a(&[b""]), fnv1a(&[b""]));
        assert_ne!(fnv1a(&[b"ab", b"c"]), fnv1a(&[b"a", b"bc"]));
        // A fixed value: cache keys must not drift between builds.
        assert_eq!(fnv1a(&[b"tinyllama"]), 0x9318_64d7_dcdf_2725);
    }
}
