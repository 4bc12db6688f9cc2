//! Finding the CUDA libraries at run time. Nothing is linked at build time; for each library
//! (driver, NVRTC, cuBLASLt, NCCL) the places searched, in order, are:
//!
//! 1. the dynamic loader's own path (`LD_LIBRARY_PATH`, `ld.so.cache`, the system directories);
//! 2. `$CUDA_HOME`, `$CUDA_PATH`, then `/usr/local/cuda` (`lib64`, `lib`,
//!    `targets/x86_64-linux/lib`);
//! 3. Python's NVIDIA wheels: `site-packages/nvidia/*/lib` of `python3` (or `$TINYLLAMA_PYTHON`),
//!    e.g. `nvidia/cu13/lib` or `nvidia/cuda_nvrtc/lib`.
//!
//! A library found outside the loader path is loaded by absolute path with `RTLD_GLOBAL`, after
//! which the loader resolves its soname (what cudarc asks for) to the loaded copy. NVRTC and
//! cuBLASLt must not be newer than the driver (code they produce would not load), so a major
//! version above the driver's is passed over when the driver is known. NVRTC also needs the
//! CUDA headers (`cuda_bf16.h`): `$TINYLLAMA_CUDA_INCLUDE`, the `include` next to the chosen
//! NVRTC, the CUDA roots above, the wheels' `include` directories, `/usr/include`.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LibSpec {
    /// What it is, for people.
    pub what: &'static str,
    /// `lib{stem}.so...`.
    pub stem: &'static str,
    /// Major versions tried through the loader path, newest first.
    pub majors: &'static [u32],
}

pub const DRIVER: LibSpec = LibSpec {
    what: "CUDA driver",
    stem: "cuda",
    majors: &[1],
};
pub const NVRTC: LibSpec = LibSpec {
    what: "NVRTC",
    stem: "nvrtc",
    majors: &[13, 12, 11],
};
pub const CUBLASLT: LibSpec = LibSpec {
    what: "cuBLASLt",
    stem: "cublasLt",
    majors: &[13, 12, 11],
};
pub const NCCL: LibSpec = LibSpec {
    what: "NCCL",
    stem: "nccl",
    majors: &[2],
};
pub const LIBS: [LibSpec; 4] = [DRIVER, NVRTC, CUBLASLT, NCCL];

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Origin {
    LoaderPath,
    /// A CUDA root: from an environment variable (named) or the default `/usr/local/cuda`.
    CudaRoot(String),
    PythonWheel,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::LoaderPath => write!(f, "loader path"),
            Origin::CudaRoot(v) => write!(f, "{v}"),
            Origin::PythonWheel => write!(f, "python wheel"),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Found {
    pub path: PathBuf,
    pub origin: Origin,
    /// From the file name (`libnvrtc.so.13` → 13), where it says.
    pub major: Option<u32>,
}

/// Where to look, gathered once from the environment.
#[derive(Clone, Debug, Default)]
pub struct SearchPath {
    /// (origin, directory) in precedence order, the loader path excluded.
    pub dirs: Vec<(Origin, PathBuf)>,
    /// Candidate include directories in precedence order.
    pub include_dirs: Vec<PathBuf>,
    /// `nvidia` package directories of the Python installation, if any.
    pub python_nvidia: Vec<PathBuf>,
}

const LIB_SUBDIRS: [&str; 3] = ["lib64", "lib", "targets/x86_64-linux/lib"];

impl SearchPath {
    /// Built from explicit inputs (tests) or [`SearchPath::from_env`].
    pub fn new(
        cuda_roots: &[(String, PathBuf)],
        python_nvidia: Vec<PathBuf>,
        extra_include: Vec<PathBuf>,
    ) -> Self {
        let mut dirs = Vec::new();
        let mut include_dirs = extra_include;
        for (var, root) in cuda_roots {
            for sub in LIB_SUBDIRS {
                dirs.push((Origin::CudaRoot(var.clone()), root.join(sub)));
            }
            include_dirs.push(root.join("include"));
            include_dirs.push(root.join("targets/x86_64-linux/include"));
        }
        for pkg in &python_nvidia {
            let mut subs: Vec<PathBuf> = std::fs::read_dir(pkg)
                .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
                .unwrap_or_default();
            subs.sort();
            for s in &subs {
                if s.join("lib").is_dir() {
                    dirs.push((Origin::PythonWheel, s.join("lib")));
                }
            }
            for s in &subs {
                if s.join("include").is_dir() {
                    include_dirs.push(s.join("include"));
                }
            }
        }
        include_dirs.push(PathBuf::from("/usr/include"));
        SearchPath {
            dirs,
            include_dirs,
            python_nvidia,
        }
    }

    pub fn from_env() -> Self {
        let mut roots = Vec::new();
        for var in ["CUDA_HOME", "CUDA_PATH"] {
            if let Some(v) = std::env::var_os(var).filter(|v| !v.is_empty()) {
                roots.push((format!("${var}"), PathBuf::from(v)));
            }
        }
        roots.push(("/usr/local/cuda".into(), PathBuf::from("/usr/local/cuda")));
        let extra: Vec<PathBuf> = std::env::var_os("TINYLLAMA_CUDA_INCLUDE")
            .map(|v| std::env::split_paths(&v).collect())
            .unwrap_or_default();
        SearchPath::new(&roots, python_nvidia_dirs(), extra)
    }
}

/// `nvidia.__path__` of the Python interpreter, empty when there is none or no NVIDIA wheel.
pub fn python_nvidia_dirs() -> Vec<PathBuf> {
    let py = std::env::var("TINYLLAMA_PYTHON").unwrap_or_else(|_| "python3".into());
    let out = std::process::Command::new(py)
        .args(["-c", "import nvidia\nfor p in nvidia.__path__: print(p)"])
        .stderr(std::process::Stdio::null())
        .output();
    match out {
        Ok(o) if o.status.success() => String::from_utf8_lossy(&o.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| PathBuf::from(l.trim()))
            .collect(),
        _ => Vec::new(),
    }
}

/// The major version in a shared-library file name (`libx.so.12.4.1` → 12).
pub fn major_of(path: &Path) -> Option<u32> {
    let name = path.file_name()?.to_str()?;
    let rest = &name[name.find(".so.")? + 4..];
    rest.split('.').next()?.parse().ok()
}

/// `lib{stem}.so` and `lib{stem}.so.N...` in `dir`, highest version first (`lib{stem}-x.so` and
/// other stems sharing the prefix are not matches).
pub fn candidates_in(dir: &Path, stem: &str) -> Vec<PathBuf> {
    let prefix = format!("lib{stem}.so");
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n == prefix || n.starts_with(&format!("{prefix}.")))
                })
                .collect()
        })
        .unwrap_or_default();
    let key = |p: &PathBuf| -> Vec<u32> {
        let n = p.file_name().unwrap().to_string_lossy().to_string();
        n[prefix.len()..]
            .split('.')
            .filter_map(|x| x.parse().ok())
            .collect()
    };
    v.sort_by_key(|p| std::cmp::Reverse(key(p)));
    v
}

/// The first candidate for `spec` in the directories, skipping majors above `max_major`.
pub fn search_dirs(spec: &LibSpec, sp: &SearchPath, max_major: Option<u32>) -> Option<Found> {
    for (origin, dir) in &sp.dirs {
        for p in candidates_in(dir, spec.stem) {
            let major = major_of(&p);
            if let (Some(m), Some(max)) = (major, max_major) {
                if m > max {
                    continue;
                }
            }
            return Some(Found {
                path: p,
                origin: origin.clone(),
                major,
            });
        }
    }
    None
}

/// The first include directory holding `cuda_bf16.h`, preferring the one next to NVRTC.
pub fn find_include(sp: &SearchPath, nvrtc: Option<&Path>) -> Option<PathBuf> {
    let sibling = nvrtc
        .and_then(|p| p.parent())
        .and_then(|d| d.parent())
        .map(|r| r.join("include"));
    let mut dirs: Vec<PathBuf> = Vec::new();
    // An explicit TINYLLAMA_CUDA_INCLUDE comes first (it is at the front of include_dirs when
    // set), then the sibling of NVRTC.
    let explicit = std::env::var_os("TINYLLAMA_CUDA_INCLUDE").is_some();
    if explicit {
        dirs.extend(sp.include_dirs.iter().cloned());
        dirs.extend(sibling);
    } else {
        dirs.extend(sibling);
        dirs.extend(sp.include_dirs.iter().cloned());
    }
    dirs.into_iter().find(|d| d.join("cuda_bf16.h").is_file())
}

/// Where a loaded shared object lives, from `/proc/self/maps`.
pub fn loaded_path(stem: &str) -> Option<PathBuf> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let prefix = format!("lib{stem}.so");
    maps.lines()
        .filter_map(|l| l.split_whitespace().nth(5))
        .find(|p| {
            Path::new(p)
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n == prefix || n.starts_with(&format!("{prefix}.")))
        })
        .map(PathBuf::from)
}

/// What was found and loaded for this process.
#[derive(Clone, Debug, Default)]
pub struct Libraries {
    pub driver: Option<Found>,
    pub driver_version: Option<(u32, u32)>,
    pub nvrtc: Option<Found>,
    pub cublaslt: Option<Found>,
    pub nccl: Option<Found>,
    pub include: Option<PathBuf>,
    pub search: SearchPath,
}

impl Libraries {
    pub fn get(&self, spec: &LibSpec) -> Option<&Found> {
        match spec.stem {
            "cuda" => self.driver.as_ref(),
            "nvrtc" => self.nvrtc.as_ref(),
            "cublasLt" => self.cublaslt.as_ref(),
            _ => self.nccl.as_ref(),
        }
    }

    /// Human-readable list of the places searched.
    pub fn searched(&self) -> String {
        let mut v = vec!["the loader path".to_string()];
        let mut seen = std::collections::BTreeSet::new();
        for (o, d) in &self.search.dirs {
            if let Origin::PythonWheel = o {
                continue;
            }
            if seen.insert(d.clone()) {
                v.push(d.display().to_string());
            }
        }
        if self.search.python_nvidia.is_empty() {
            v.push("python3 site-packages/nvidia/*/lib (no NVIDIA wheels found)".into());
        } else {
            for p in &self.search.python_nvidia {
                v.push(format!("{}/*/lib", p.display()));
            }
        }
        v.join(", ")
    }
}

/// Handles of libraries we loaded, kept for the life of the process.
static HANDLES: Mutex<Vec<libloading::os::unix::Library>> = Mutex::new(Vec::new());
static LIBS_FOUND: OnceLock<Libraries> = OnceLock::new();

fn open_global(path: &Path) -> bool {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: loading a vendor shared library; its initialisers are the vendor's.
    match unsafe { Library::open(Some(path), RTLD_NOW | RTLD_GLOBAL) } {
        Ok(l) => {
            HANDLES.lock().unwrap_or_else(|e| e.into_inner()).push(l);
            true
        }
        Err(_) => false,
    }
}

fn open_by_name(name: &str) -> bool {
    use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_NOW};
    // SAFETY: as above.
    match unsafe { Library::open(Some(name), RTLD_NOW | RTLD_GLOBAL) } {
        Ok(l) => {
            HANDLES.lock().unwrap_or_else(|e| e.into_inner()).push(l);
            true
        }
        Err(_) => false,
    }
}

/// Finds and loads one library: the loader path first, then the search directories.
fn locate(spec: &LibSpec, sp: &SearchPath, max_major: Option<u32>) -> Option<Found> {
    for &m in spec.majors {
        if max_major.is_some_and(|max| m > max) && spec.stem != "cuda" {
            continue;
        }
        let name = format!("lib{}.so.{m}", spec.stem);
        if open_by_name(&name) {
            return Some(Found {
                path: loaded_path(spec.stem).unwrap_or_else(|| PathBuf::from(&name)),
                origin: Origin::LoaderPath,
                major: Some(m),
            });
        }
    }
    let found = search_dirs(spec, sp, if spec.stem == "cuda" { None } else { max_major })?;
    if spec.stem == "nvrtc" {
        // NVRTC loads its builtins by soname at compile time: load them from the same place.
        if let Some(dir) = found.path.parent() {
            for b in candidates_in(dir, "nvrtc-builtins") {
                open_global(&b);
            }
        }
    }
    open_global(&found.path).then_some(found)
}

/// The driver's version as (major, minor), if the driver is loaded.
fn driver_version() -> Option<(u32, u32)> {
    // SAFETY: only called once libcuda is loaded (checked by the caller).
    unsafe {
        let mut v = 0i32;
        if cudarc::driver::sys::cuDriverGetVersion(&mut v)
            == cudarc::driver::sys::CUresult::CUDA_SUCCESS
        {
            Some(((v / 1000) as u32, ((v % 1000) / 10) as u32))
        } else {
            None
        }
    }
}

/// Searches for and loads every library once per process; later calls return the same answer.
pub fn libraries() -> &'static Libraries {
    LIBS_FOUND.get_or_init(|| {
        let search = SearchPath::from_env();
        let driver = locate(&DRIVER, &search, None);
        let driver_version = if driver.is_some() {
            driver_version()
        } else {
            None
        };
        let max = driver_version.map(|v| v.0);
        let nvrtc = locate(&NVRTC, &search, max);
        let cublaslt = locate(&CUBLASLT, &search, max);
        let nccl = locate(&NCCL, &search, None);
        let include = find_include(&search, nvrtc.as_ref().map(|f| f.path.as_path()));
        Libraries {
            driver,
            driver_version,
            nvrtc,
            cublaslt,
            nccl,
            include,
            search,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn touch(p: &Path) {
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, b"").unwrap();
    }

    #[test]
    fn versions_come_from_file_names() {
        assert_eq!(major_of(Path::new("/x/libnvrtc.so.13")), Some(13));
        assert_eq!(major_of(Path::new("libcublasLt.so.12.4.5.8")), Some(12));
        assert_eq!(major_of(Path::new("libcuda.so")), None);
    }

    #[test]
    fn candidates_match_the_exact_stem_newest_first() {
        let d = tempfile::tempdir().unwrap();
        for n in [
            "libnvrtc.so.12",
            "libnvrtc.so.13",
            "libnvrtc-builtins.so.13.0",
            "libnvrtc.alt.so.13",
            "libnvrtc.so",
            "libnvrtcx.so.13",
        ] {
            touch(&d.path().join(n));
        }
        let names: Vec<String> = candidates_in(d.path(), "nvrtc")
            .iter()
            .map(|p| p.file_name().unwrap().to_string_lossy().into())
            .collect();
        assert_eq!(
            names,
            vec!["libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so"]
        );
        let b = candidates_in(d.path(), "nvrtc-builtins");
        assert_eq!(b.len(), 1);
    }

    #[test]
    fn search_order_is_cuda_roots_then_wheels_and_respects_the_driver() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("cuda");
        let wheel = t.path().join("site/nvidia");
        touch(&root.join("lib64/libcublasLt.so.13"));
        touch(&wheel.join("cu12/lib/libcublasLt.so.12"));
        touch(&wheel.join("cu13/lib/libnvrtc.so.13"));
        touch(&wheel.join("cu13/include/cuda_bf16.h"));
        touch(&wheel.join("cuda_runtime/include/cuda_bf16.h"));
        let sp = SearchPath::new(
            &[("$CUDA_HOME".into(), root.clone())],
            vec![wheel.clone()],
            vec![],
        );
        let f = search_dirs(&CUBLASLT, &sp, None).unwrap();
        assert_eq!(f.origin, Origin::CudaRoot("$CUDA_HOME".into()));
        assert_eq!(f.major, Some(13));
        // A 12.x driver cannot use cuBLAS 13: the wheel's 12 is chosen.
        let f = search_dirs(&CUBLASLT, &sp, Some(12)).unwrap();
        assert_eq!(f.origin, Origin::PythonWheel);
        assert!(f.path.ends_with("cu12/lib/libcublasLt.so.12"));
        let n = search_dirs(&NVRTC, &sp, None).unwrap();
        assert!(search_dirs(&NCCL, &sp, None).is_none());
        // Headers next to the chosen NVRTC win over other wheels'.
        let inc = find_include(&sp, Some(&n.path)).unwrap();
        if std::env::var_os("TINYLLAMA_CUDA_INCLUDE").is_none() {
            assert!(inc.ends_with("cu13/include"), "{}", inc.display());
        }
    }

    #[test]
    fn the_process_maps_name_loaded_libraries() {
        // libc is always mapped.
        assert!(loaded_path("c").is_some());
        assert!(loaded_path("definitely-not-loaded-xyz").is_none());
    }
}
