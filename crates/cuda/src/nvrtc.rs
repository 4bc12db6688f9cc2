//! Run-time compilation of the kernel modules with NVRTC: to a CUBIN for the device's exact
//! compute capability when training (no PTX JIT at load), or to PTX for a virtual architecture
//! (the CI check). Results are cached on disk, keyed by the module source, the target, the NVRTC
//! version and the options; files are written to a temporary name and renamed, so concurrent
//! processes never see a partial file.

use crate::discover;
use crate::kernels::{self, Module};
use anyhow::{bail, Result};
use cudarc::nvrtc::sys as nv;
use std::ffi::{c_char, CString};
use std::path::{Path, PathBuf};

/// What to produce.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// PTX for `compute_XY`.
    Ptx(u32),
    /// Machine code for `sm_XY`.
    Cubin(u32),
}

impl Target {
    pub fn arch_flag(&self) -> String {
        match self {
            Target::Ptx(cc) => format!("--gpu-architecture=compute_{cc}"),
            Target::Cubin(cc) => format!("--gpu-architecture=sm_{cc}"),
        }
    }
    pub fn extension(&self) -> &'static str {
        match self {
            Target::Ptx(_) => "ptx",
            Target::Cubin(_) => "cubin",
        }
    }
    pub fn label(&self) -> String {
        match self {
            Target::Ptx(cc) => format!("compute_{cc}"),
            Target::Cubin(cc) => format!("sm_{cc}"),
        }
    }
}

/// Parses `sm_80`, `sm80`, `80`, `8.0`, `compute_90`, `sm_90a`-less spellings into 80, 90, ...
pub fn parse_arch(s: &str) -> Result<u32> {
    let t = s.trim().to_ascii_lowercase();
    let t = t
        .strip_prefix("sm_")
        .or_else(|| t.strip_prefix("compute_"))
        .or_else(|| t.strip_prefix("sm"))
        .unwrap_or(&t);
    let digits: String = t.chars().filter(|c| *c != '.').collect();
    match digits.parse::<u32>() {
        Ok(v) if (50..=200).contains(&v) => Ok(v),
        _ => bail!("`{s}` is not a compute capability (e.g. sm_80, sm_90)"),
    }
}

/// The options every compilation uses, besides the architecture and include directories.
pub const BASE_OPTIONS: &[&str] = &["-std=c++17", "--fmad=true", "-default-device"];

/// A compile failure with NVRTC's log.
#[derive(Debug)]
pub struct CompileError {
    pub module: String,
    pub target: String,
    pub log: String,
}

impl std::fmt::Display for CompileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "NVRTC could not compile {}.cu for {}:\n{}",
            self.module, self.target, self.log
        )
    }
}
impl std::error::Error for CompileError {}

/// NVRTC, loaded.
pub struct Nvrtc {
    pub version: (i32, i32),
    pub include: PathBuf,
}

impl Nvrtc {
    /// Loads NVRTC (see [`discover`]) and finds the headers it needs.
    pub fn load() -> Result<Self> {
        let libs = discover::libraries();
        // SAFETY: only checks whether the library can be opened.
        if libs.nvrtc.is_none() || !unsafe { nv::is_culib_present() } {
            bail!(
                "NVRTC (libnvrtc.so) was not found; searched {}. Install the CUDA toolkit or `pip install nvidia-cuda-nvrtc`, or put its lib directory on LD_LIBRARY_PATH",
                libs.searched()
            );
        }
        let Some(include) = libs.include.clone() else {
            bail!(
                "NVRTC needs the CUDA headers (cuda_bf16.h); none found next to NVRTC, in $CUDA_HOME, /usr/local/cuda or Python's nvidia/*/include. `pip install nvidia-cuda-runtime` or set TINYLLAMA_CUDA_INCLUDE"
            );
        };
        let (mut major, mut minor) = (0, 0);
        // SAFETY: plain query.
        unsafe { nv::nvrtcVersion(&mut major, &mut minor) }
            .result()
            .map_err(|e| anyhow::anyhow!("nvrtcVersion: {e:?}"))?;
        Ok(Nvrtc {
            version: (major, minor),
            include,
        })
    }

    pub fn options(&self, target: Target) -> Vec<String> {
        let mut o: Vec<String> = BASE_OPTIONS.iter().map(|s| s.to_string()).collect();
        o.push(target.arch_flag());
        o.push(format!("-I{}", self.include.display()));
        o
    }

    /// Compiles one module (no cache).
    pub fn compile(&self, m: &Module, target: Target) -> Result<Vec<u8>, CompileError> {
        self.compile_with(m, target, &[]).map(|(img, _)| img)
    }

    /// Compiles with extra options; returns the image and NVRTC's log.
    pub fn compile_with(
        &self,
        m: &Module,
        target: Target,
        extra: &[String],
    ) -> Result<(Vec<u8>, String), CompileError> {
        let err = |log: String| CompileError {
            module: m.name.into(),
            target: target.label(),
            log,
        };
        let src = CString::new(m.full_source()).map_err(|e| err(e.to_string()))?;
        let name = CString::new(format!("{}.cu", m.name)).unwrap();
        let mut opts = self.options(target);
        opts.extend(extra.iter().cloned());
        // SAFETY: NVRTC's C API used as documented; the program is destroyed on every path.
        unsafe {
            let prog = cudarc::nvrtc::result::create_program(&src, Some(&name))
                .map_err(|e| err(format!("nvrtcCreateProgram: {e:?}")))?;
            let compiled = cudarc::nvrtc::result::compile_program(prog, &opts);
            let log = cudarc::nvrtc::result::get_program_log(prog)
                .map(|l| c_chars_to_string(&l))
                .unwrap_or_default();
            let out = match compiled {
                Err(e) => Err(err(format!("{e:?}\n{log}"))),
                Ok(()) => match target {
                    Target::Ptx(_) => cudarc::nvrtc::result::get_ptx(prog)
                        .map(|p| p.iter().map(|&c| c as u8).collect())
                        .map_err(|e| err(format!("nvrtcGetPTX: {e:?}"))),
                    Target::Cubin(_) => {
                        let mut size = 0usize;
                        let r = nv::nvrtcGetCUBINSize(prog, &mut size);
                        if r != nv::nvrtcResult::NVRTC_SUCCESS {
                            Err(err(format!("nvrtcGetCUBINSize: {r:?}")))
                        } else {
                            let mut buf = vec![0 as c_char; size];
                            let r = nv::nvrtcGetCUBIN(prog, buf.as_mut_ptr());
                            if r != nv::nvrtcResult::NVRTC_SUCCESS {
                                Err(err(format!("nvrtcGetCUBIN: {r:?}")))
                            } else {
                                Ok(buf.iter().map(|&c| c as u8).collect::<Vec<u8>>())
                            }
                        }
                    }
                },
            };
            let _ = cudarc::nvrtc::result::destroy_program(prog);
            out.map(|img| (img, log))
        }
    }

    /// The cache key of a module for a target under this NVRTC.
    pub fn cache_key(&self, m: &Module, target: Target) -> u64 {
        cache_key(
            &m.full_source(),
            target,
            self.version,
            &self.options(target),
        )
    }

    /// Compiles through the on-disk cache; returns the image and whether it was cached.
    pub fn compile_cached(
        &self,
        m: &Module,
        target: Target,
        dir: &Path,
    ) -> Result<(Vec<u8>, bool)> {
        let path = dir.join(format!(
            "{}-{}-{:016x}.{}",
            m.name,
            target.label(),
            self.cache_key(m, target),
            target.extension()
        ));
        if let Ok(bytes) = std::fs::read(&path) {
            if !bytes.is_empty() {
                return Ok((bytes, true));
            }
        }
        let bytes = self.compile(m, target)?;
        if std::fs::create_dir_all(dir).is_ok() {
            let tmp = path.with_extension(format!("tmp{}", std::process::id()));
            if std::fs::write(&tmp, &bytes).is_ok() {
                let _ = std::fs::rename(&tmp, &path);
            }
        }
        Ok((bytes, false))
    }
}

/// The cache key: source, target, NVRTC version and options all change it.
pub fn cache_key(source: &str, target: Target, version: (i32, i32), options: &[String]) -> u64 {
    let v = format!("{}.{}|{}", version.0, version.1, target.label());
    let o = options.join(" ");
    kernels::fnv1a(&[source.as_bytes(), v.as_bytes(), o.as_bytes()])
}

fn c_chars_to_string(v: &[c_char]) -> String {
    let bytes: Vec<u8> = v
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Register and spill figures `ptxas -v` printed for one kernel.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KernelResources {
    pub kernel: String,
    pub registers: u32,
    pub spill_bytes: u32,
    pub stack_bytes: u32,
}

/// Parses `ptxas info` lines (`Compiling entry function 'k' for 'sm_90'`, then the stack/spill
/// and `Used N registers` lines that follow it).
pub fn parse_ptxas(log: &str) -> Vec<KernelResources> {
    let mut out: Vec<KernelResources> = Vec::new();
    for line in log.lines() {
        if let Some(i) = line.find("Compiling entry function '") {
            let rest = &line[i + "Compiling entry function '".len()..];
            let name = rest.split('\'').next().unwrap_or("").to_string();
            out.push(KernelResources {
                kernel: name,
                ..Default::default()
            });
            continue;
        }
        let Some(cur) = out.last_mut() else { continue };
        let num_before = |key: &str| -> Option<u32> {
            let j = line.find(key)?;
            line[..j].split_whitespace().last()?.parse().ok()
        };
        if let Some(r) = num_before(" registers") {
            cur.registers = r;
        }
        if let Some(s) = num_before(" bytes spill stores") {
            cur.spill_bytes = s;
        }
        if let Some(s) = num_before(" bytes stack frame") {
            cur.stack_bytes = s;
        }
    }
    out
}

/// One row of the compile-only check.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CompileReport {
    pub module: String,
    pub target: String,
    pub ok: bool,
    pub bytes: usize,
    pub kernels: usize,
    pub log: String,
    /// Per-kernel resources (CUBIN targets only).
    pub resources: Vec<KernelResources>,
}

/// Compiles every module for every target (no cache), e.g. PTX for sm_80 and sm_90 in CI; for
/// CUBIN targets also asks ptxas for register and spill counts.
pub fn compile_all(nv: &Nvrtc, targets: &[Target]) -> Vec<CompileReport> {
    let mut out = Vec::new();
    for &t in targets {
        let extra: Vec<String> = match t {
            Target::Cubin(_) => vec!["--ptxas-options=-v".into()],
            Target::Ptx(_) => vec![],
        };
        for m in kernels::MODULES {
            match nv.compile_with(m, t, &extra) {
                Ok((img, log)) => {
                    // Every kernel must be in the output under its unmangled name.
                    let text = String::from_utf8_lossy(&img);
                    let missing: Vec<&str> = m
                        .kernels
                        .iter()
                        .copied()
                        .filter(|k| match t {
                            Target::Ptx(_) => !text.contains(&format!(".entry {k}(")),
                            Target::Cubin(_) => !text.contains(k),
                        })
                        .collect();
                    out.push(CompileReport {
                        module: m.name.into(),
                        target: t.label(),
                        ok: missing.is_empty(),
                        bytes: img.len(),
                        kernels: m.kernels.len() - missing.len(),
                        log: if missing.is_empty() {
                            String::new()
                        } else {
                            format!("kernels missing from the output: {missing:?}")
                        },
                        resources: parse_ptxas(&log),
                    })
                }
                Err(e) => out.push(CompileReport {
                    module: m.name.into(),
                    target: t.label(),
                    ok: false,
                    bytes: 0,
                    kernels: 0,
                    log: e.log,
                    resources: vec![],
                }),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architectures_parse_in_the_usual_spellings() {
        for s in ["sm_80", "SM80", "80", "8.0", "compute_80"] {
            assert_eq!(parse_arch(s).unwrap(), 80, "{s}");
        }
        assert_eq!(parse_arch("sm_90").unwrap(), 90);
        assert!(parse_arch("sm_x").is_err());
        assert!(parse_arch("7").is_err());
        assert_eq!(Target::Ptx(80).arch_flag(), "--gpu-architecture=compute_80");
        assert_eq!(Target::Cubin(90).arch_flag(), "--gpu-architecture=sm_90");
    }

    #[test]
    fn ptxas_verbose_output_is_parsed_per_kernel() {
        let log = "ptxas info    : Compiling entry function 'attn_bwd_hd64' for 'sm_90'
ptxas info    : Function properties for attn_bwd_hd64
ptxas         .     8 bytes stack frame, 4 bytes spill stores, 4 bytes spill loads
ptxas info    : Used 221 registers, used 1 barriers
ptxas info    : Compiling entry function 'rope' for 'sm_90'
ptxas info    : Used 20 registers, used 0 barriers";
        let r = parse_ptxas(log);
        assert_eq!(r.len(), 2);
        assert_eq!(
            r[0],
            KernelResources {
                kernel: "attn_bwd_hd64".into(),
                registers: 221,
                spill_bytes: 4,
                stack_bytes: 8
            }
        );
        assert_eq!(
            (r[1].kernel.as_str(), r[1].registers, r[1].spill_bytes),
            ("rope", 20, 0)
        );
    }

    /// Runs where NVRTC and the headers can be found (e.g. under .ci/cuda-ptx.sh); skipped
    /// elsewhere.
    #[test]
    fn compiled_modules_are_cached_on_disk_by_key() {
        let nv = match Nvrtc::load() {
            Ok(nv) => nv,
            Err(e) => {
                eprintln!("skipping: {e:#}");
                return;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let m = kernels::MODULES.iter().find(|m| m.name == "rope").unwrap();
        let (a, hit_a) = nv.compile_cached(m, Target::Ptx(80), dir.path()).unwrap();
        let (b, hit_b) = nv.compile_cached(m, Target::Ptx(80), dir.path()).unwrap();
        assert!(!hit_a && hit_b && a == b);
        assert!(String::from_utf8_lossy(&a).contains(".entry rope("));
        let files: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(files.len(), 1, "one file, no temporaries left");
        let name = files[0].as_ref().unwrap().file_name();
        let key = nv.cache_key(m, Target::Ptx(80));
        assert_eq!(
            name.to_string_lossy(),
            format!("rope-compute_80-{key:016x}.ptx")
        );
        // Another target is another entry.
        let (_, hit_c) = nv.compile_cached(m, Target::Cubin(90), dir.path()).unwrap();
        assert!(!hit_c);
    }

    #[test]
    fn cache_keys_change_with_every_input() {
        let o = vec!["-std=c++17".to_string()];
        let k = cache_key("src", Target::Cubin(90), (13, 0), &o);
        assert_eq!(k, cache_key("src", Target::Cubin(90), (13, 0), &o));
        assert_ne!(k, cache_key("src2", Target::Cubin(90), (13, 0), &o));
        assert_ne!(k, cache_key("src", Target::Cubin(80), (13, 0), &o));
        assert_ne!(k, cache_key("src", Target::Ptx(90), (13, 0), &o));
        assert_ne!(k, cache_key("src", Target::Cubin(90), (12, 8), &o));
        assert_ne!(
            k,
            cache_key("src", Target::Cubin(90), (13, 0), &["-O3".to_string()])
        );
    }
}
