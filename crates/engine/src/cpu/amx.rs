//! Intel AMX (Advanced Matrix Extensions) for bf16 products: detection, the one-time request
//! for tile state, and the 32×32 micro-kernel.
//!
//! AMX has eight tile registers of up to 16 rows × 64 bytes and one instruction that matters
//! here, `tdpbf16ps C, A, B`: `C[i][j] += Σ_p A[i][2p]·B[p][2j] + A[i][2p+1]·B[p][2j+1]` with
//! A a 16×32 bf16 tile, B a 16×32 bf16 tile holding 32 k-values × 16 columns in pairs
//! ("VNNI" layout), and C a 16×16 f32 tile. The products of two bf16 values are exact in f32,
//! so the only rounding is the f32 accumulation — the numerics PyTorch's bf16 autocast gives.
//!
//! Rust's AMX intrinsics are not stable, so the instructions are written as inline assembly
//! (LLVM's assembler knows them whatever the target features). Tile registers are invisible to
//! the compiler, which never uses them, so they keep their contents between `asm!` blocks on
//! one thread.
//!
//! Linux gives a process the 8 KiB of AMX state only after it asks (`arch_prctl`
//! `ARCH_REQ_XCOMP_PERM`); until then the first tile instruction kills it with SIGILL. The
//! request is made once, in [`available`], before any kernel runs.

/// Rows × k-values of one A tile, and k-values × columns of one B tile.
pub const TILE_ROWS: usize = 16;
pub const TILE_K: usize = 32;
/// bf16 elements in one packed tile (1 KiB).
pub const TILE_ELEMS: usize = TILE_ROWS * TILE_K;

/// Whether this CPU and kernel run AMX bf16 tiles (checked, and permission requested, once).
/// `TINYLLAMA_NO_AMX=1` turns it off, to compare with the emulated path.
pub fn available() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| std::env::var_os("TINYLLAMA_NO_AMX").is_none() && detect())
}

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
fn detect() -> bool {
    use std::arch::x86_64::__cpuid_count;
    // CPUID.(EAX=7,ECX=0):EDX bit 22 = AMX-BF16, bit 24 = AMX-TILE.
    let leaf7 = __cpuid_count(7, 0);
    if leaf7.edx & (1 << 22) == 0 || leaf7.edx & (1 << 24) == 0 {
        return false;
    }
    // The OS must save tile state (XCR0 bits 17 and 18), which XGETBV reports once CPUID says
    // OSXSAVE (leaf 1, ECX bit 27).
    let leaf1 = __cpuid_count(1, 0);
    if leaf1.ecx & (1 << 27) == 0 {
        return false;
    }
    const ARCH_REQ_XCOMP_PERM: libc::c_ulong = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_ulong = 18;
    // SAFETY: a plain syscall with integer arguments; it fails cleanly on kernels without AMX.
    let r = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    r == 0
}

#[cfg(not(all(target_arch = "x86_64", target_os = "linux")))]
fn detect() -> bool {
    false
}

/// Whether AMX-INT8 (`tdpbssd`, signed × signed bytes into int32) is usable as well; the
/// quantised decode kernels use it. Off with `TINYLLAMA_NO_AMX=1` like the rest.
pub fn int8_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        // CPUID.(EAX=7,ECX=0):EDX bit 25 = AMX-INT8.
        available() && std::arch::x86_64::__cpuid_count(7, 0).edx & (1 << 25) != 0
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The 64-byte tile configuration `ldtilecfg` reads (palette 1: rows and bytes per row of each
/// tile).
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    _reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

/// Where a kernel's two 16-row A tiles are (see [`Tiles::kernel`]).
#[derive(Clone, Copy)]
pub struct ATiles {
    pub rows0: *const u16,
    pub rows16: *const u16,
    /// Bytes between rows.
    pub stride: usize,
    /// Elements between consecutive k-tiles.
    pub step: usize,
}

impl ATiles {
    /// Packed tiles (as `bf16_gemm` lays them out): 64-byte rows, k-tiles one tile apart.
    pub fn packed(rows0: *const u16, rows16: *const u16) -> Self {
        ATiles {
            rows0,
            rows16,
            stride: 64,
            step: TILE_ELEMS,
        }
    }

    /// 32 rows of a row-major bf16 matrix read in place, rows `ld` elements apart.
    pub fn in_place(rows: *const u16, ld: usize) -> Self {
        ATiles {
            rows0: rows,
            // wrapping: computing the address is safe; only tile loads read through it.
            rows16: rows.wrapping_add(16 * ld),
            stride: 2 * ld,
            step: TILE_K,
        }
    }
}

/// Holds this thread's tile configuration for its lifetime and releases the tile state when
/// dropped (so an idle thread does not carry 8 KiB of live state through context switches).
pub struct Tiles(());

impl Tiles {
    /// Every tile 16 rows × 64 bytes (the bf16 kernel's shapes).
    ///
    /// # Safety
    /// [`available`] must have returned true.
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn configure() -> Tiles {
        Self::configure_shapes([(16, 64); 8])
    }

    /// Configures tile `t` as `shapes[t] = (rows, bytes per row)` (palette 1), for kernels
    /// whose tiles are not all 16 × 64 bytes.
    ///
    /// # Safety
    /// [`available`] must have returned true; every shape must be at most 16 rows × 64 bytes.
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn configure_shapes(shapes: [(u8, u16); 8]) -> Tiles {
        let mut cfg = TileConfig {
            palette: 1,
            start_row: 0,
            _reserved: [0; 14],
            colsb: [0; 16],
            rows: [0; 16],
        };
        for (t, &(r, c)) in shapes.iter().enumerate() {
            debug_assert!(r <= 16 && c <= 64);
            cfg.rows[t] = r;
            cfg.colsb[t] = c;
        }
        std::arch::asm!("ldtilecfg [{}]", in(reg) &cfg as *const TileConfig, options(nostack, readonly));
        Tiles(())
    }

    /// `out[32 × 16·NB] (+)= A·B` over `kt` k-tiles. The two 16-row A tiles start at `a.rows0`
    /// and `a.rows16`, rows `a.stride` bytes apart, k-tile `t` at `t·a.step` elements on —
    /// packed tiles (`stride` 64, `step` [`TILE_ELEMS`]) or a row-major bf16 matrix read in
    /// place (`stride` = its row bytes, `step` [`TILE_K`]). The NB (1 or 2) B tiles are packed,
    /// consecutive k-tiles [`TILE_ELEMS`] apart. `out` is row-major with rows `ld` floats apart;
    /// with `accumulate` the products are added to what it holds.
    ///
    /// # Safety
    /// Every tile read must lie inside its allocation; `out` must hold 32 rows of 16·NB floats.
    #[cfg(target_arch = "x86_64")]
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub unsafe fn kernel<const NB: usize>(
        &self,
        a: ATiles,
        b0: *const u16,
        b1: *const u16,
        kt: usize,
        out: *mut f32,
        ld: usize,
        accumulate: bool,
    ) {
        use std::arch::asm;
        let (o0, o1, o2, o3) = (out, out.add(16), out.add(16 * ld), out.add(16 * ld + 16));
        let stride = ld * 4;
        if accumulate {
            asm!(
                "tileloadd tmm0, [{o0} + {s}*1]",
                "tileloadd tmm2, [{o2} + {s}*1]",
                o0 = in(reg) o0,
                o2 = in(reg) o2,
                s = in(reg) stride,
                options(nostack, readonly)
            );
            if NB == 2 {
                asm!(
                    "tileloadd tmm1, [{o1} + {s}*1]",
                    "tileloadd tmm3, [{o3} + {s}*1]",
                    o1 = in(reg) o1,
                    o3 = in(reg) o3,
                    s = in(reg) stride,
                    options(nostack, readonly)
                );
            }
        } else {
            asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                options(nostack, nomem)
            );
        }
        for t in 0..kt {
            let (oa, ob) = (t * a.step, t * TILE_ELEMS);
            if NB == 2 {
                asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {s}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tileloadd tmm7, [{b1} + {s}*1]",
                    "tdpbf16ps tmm1, tmm4, tmm7",
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    "tdpbf16ps tmm3, tmm5, tmm7",
                    a0 = in(reg) a.rows0.add(oa),
                    a1 = in(reg) a.rows16.add(oa),
                    b0 = in(reg) b0.add(ob),
                    b1 = in(reg) b1.add(ob),
                    sa = in(reg) a.stride,
                    s = in(reg) 64usize,
                    options(nostack, readonly)
                );
            } else {
                asm!(
                    "tileloadd tmm4, [{a0} + {sa}*1]",
                    "tileloadd tmm6, [{b0} + {s}*1]",
                    "tdpbf16ps tmm0, tmm4, tmm6",
                    "tileloadd tmm5, [{a1} + {sa}*1]",
                    "tdpbf16ps tmm2, tmm5, tmm6",
                    a0 = in(reg) a.rows0.add(oa),
                    a1 = in(reg) a.rows16.add(oa),
                    b0 = in(reg) b0.add(ob),
                    sa = in(reg) a.stride,
                    s = in(reg) 64usize,
                    options(nostack, readonly)
                );
            }
        }
        asm!(
            "tilestored [{o0} + {s}*1], tmm0",
            "tilestored [{o2} + {s}*1], tmm2",
            o0 = in(reg) o0,
            o2 = in(reg) o2,
            s = in(reg) stride,
            options(nostack)
        );
        if NB == 2 {
            asm!(
                "tilestored [{o1} + {s}*1], tmm1",
                "tilestored [{o3} + {s}*1], tmm3",
                o1 = in(reg) o1,
                o3 = in(reg) o3,
                s = in(reg) stride,
                options(nostack)
            );
        }
    }
}

impl Drop for Tiles {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: releasing configured tile state; no tile is used after this.
        unsafe {
            std::arch::asm!("tilerelease", options(nostack, nomem))
        }
    }
}
