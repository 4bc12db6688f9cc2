// A CPU emulator for the subset of CUDA C++ the kernels in ../kernels use, so that the very same
// kernel sources can be compiled with a host C++ compiler and run in tests on machines without a
// GPU. Not a simulator of performance or of memory ordering: every CUDA thread of a block is a
// cooperative fiber (ucontext); a fiber runs until it reaches a barrier (__syncthreads, a warp
// shuffle, an mma), and barriers release only when every thread of the block (or warp) has
// arrived. Blocks run one after another. What this catches: indexing and layout errors, wrong
// tile bounds and masks, missing barriers between a write and a read by another thread (threads
// run in order 0..n between barriers, so a read of data a later thread writes is stale),
// divergent barriers (reported as errors), reads of uninitialised shared memory (it is filled
// with NaN bytes at every block start), and overruns of device buffers and of dynamic shared
// memory (each ends at a guard page). What it cannot catch: races that need true concurrency,
// hardware limits (registers, shared memory per SM), and performance.
//
// The warp-level mma.sync m16n8k16 is emulated from the PTX ISA's documented fragment layouts
// (see tl_mma_16816 in common.cuh).
#pragma once
#define TL_EMU 1

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <setjmp.h>
#include <ucontext.h>
#include <unistd.h>

#include <cmath>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

using std::isfinite;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static
#define __align__(n) alignas(n)

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
struct alignas(16) uint4 {
    unsigned x, y, z, w;
};
inline uint4 make_uint4(unsigned x, unsigned y, unsigned z, unsigned w) { return uint4{x, y, z, w}; }

inline dim3 threadIdx, blockIdx, blockDim, gridDim;

inline int min(int a, int b) { return a < b ? a : b; }
inline int max(int a, int b) { return a > b ? a : b; }
inline long long min(long long a, long long b) { return a < b ? a : b; }
inline long long max(long long a, long long b) { return a > b ? a : b; }

// ---- bf16 -------------------------------------------------------------------------------------
struct __nv_bfloat16 {
    uint16_t bits;
};
inline float __bfloat162float(__nv_bfloat16 b) {
    uint32_t u = (uint32_t)b.bits << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
// Round to nearest, ties to even; NaN stays NaN (as cvt.rn.bf16.f32 does).
inline __nv_bfloat16 __float2bfloat16(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return __nv_bfloat16{(uint16_t)((u >> 16) | 0x40u)};
    u += 0x7fffu + ((u >> 16) & 1u);
    return __nv_bfloat16{(uint16_t)(u >> 16)};
}
inline float __int_as_float(int i) {
    float f;
    memcpy(&f, &i, 4);
    return f;
}
inline unsigned short __bfloat16_as_ushort(__nv_bfloat16 b) { return b.bits; }
inline __nv_bfloat16 __ushort_as_bfloat16(unsigned short s) { return __nv_bfloat16{s}; }

// ---- the fiber scheduler ----------------------------------------------------------------------
namespace emu {

enum State { RUNNABLE, AT_BLOCK_BARRIER, AT_WARP_BARRIER, DONE };

// A fiber's stack is set up once with makecontext and entered with setcontext; every later
// switch is _setjmp/_longjmp, which (unlike swapcontext) makes no signal-mask system call.
struct Fiber {
    ucontext_t ctx;
    jmp_buf jb;
    bool started;
    State state;
};

inline std::vector<Fiber> fibers;
inline std::vector<char*> stacks;
inline const size_t STACK_BYTES = 256 * 1024;
inline int cur = -1;
inline jmp_buf main_jb;
inline void (*entry)(void**) = nullptr;
inline void** entry_args = nullptr;
inline bool failed = false;
// Run the threads of each phase (between barriers) in descending instead of ascending order:
// a read of data another thread writes without a barrier in between is stale in one of the two
// orders, so running a test both ways exposes the missing barrier.
inline bool reverse_order = false;
inline std::string error;
inline unsigned char* dyn_ptr = nullptr;  // dynamic shared memory of the current block

// Per-warp exchange slots for shuffles and mma.
struct WarpSlots {
    uint64_t v[32];
    uint32_t a[32][4], b[32][2];
};
inline std::vector<WarpSlots> warps;

inline void fail(const std::string& msg) {
    if (!failed) {
        failed = true;
        error = msg;
    }
    if (cur >= 0) _longjmp(main_jb, 1);  // never resumed
}

inline int flat_tid() { return (int)(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z)); }

inline void yield_to_scheduler() {
    if (!_setjmp(fibers[cur].jb)) _longjmp(main_jb, 1);
}
inline void block_barrier() {
    fibers[cur].state = AT_BLOCK_BARRIER;
    yield_to_scheduler();
}
inline void warp_barrier() {
    fibers[cur].state = AT_WARP_BARRIER;
    yield_to_scheduler();
}

inline void trampoline() {
    entry(entry_args);
    fibers[cur].state = DONE;
    _longjmp(main_jb, 1);  // never returns
}

// Memory whose end abuts a PROT_NONE guard page, so an overrun faults at once (up to `align` − 1
// bytes of slack). `map` receives what to unmap.
struct Mapping {
    unsigned char* base = nullptr;
    size_t total = 0;
};
inline void* guarded_alloc(size_t bytes, size_t align, Mapping* map) {
    const size_t page = (size_t)sysconf(_SC_PAGESIZE);
    const size_t rounded = (bytes + align - 1) / align * align;
    const size_t body = (rounded + page - 1) / page * page;
    const size_t total = body + page;
    void* m = mmap(nullptr, total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) return nullptr;
    unsigned char* base = (unsigned char*)m;
    mprotect(base + body, page, PROT_NONE);
    map->base = base;
    map->total = total;
    return base + body - rounded;
}

inline unsigned char* dyn_smem() { return dyn_ptr; }

// Runs one kernel over the whole grid. Returns false (with `error`) on a detected fault.
inline bool run(void (*fn)(void**), void** args, dim3 grid, dim3 block, size_t smem) {
    failed = false;
    error.clear();
    const int nthreads = (int)(block.x * block.y * block.z);
    if (nthreads <= 0 || nthreads > 1024) {
        error = "block size out of range";
        return false;
    }
    while ((int)stacks.size() < nthreads) stacks.push_back((char*)malloc(STACK_BYTES));
    fibers.assign(nthreads, Fiber{});
    warps.assign((nthreads + 31) / 32, WarpSlots{});
    // Dynamic shared memory, ending at a guard page, refilled with NaN bytes per block.
    Mapping dyn_map;
    unsigned char* dyn = nullptr;
    if (smem > 0) {
        dyn = (unsigned char*)guarded_alloc(smem, 16, &dyn_map);
        if (!dyn) {
            error = "cannot map shared memory";
            return false;
        }
    }
    entry = fn;
    entry_args = args;
    gridDim = grid;
    blockDim = block;
    bool ok = true;
    for (unsigned bz = 0; bz < grid.z && ok; ++bz)
        for (unsigned by = 0; by < grid.y && ok; ++by)
            for (unsigned bx = 0; bx < grid.x && ok; ++bx) {
                blockIdx = dim3{bx, by, bz};
                if (dyn) memset(dyn, 0xff, smem);
                dyn_ptr = dyn;
                for (int t = 0; t < nthreads; ++t) {
                    Fiber& f = fibers[t];
                    getcontext(&f.ctx);
                    f.ctx.uc_stack.ss_sp = stacks[t];
                    f.ctx.uc_stack.ss_size = STACK_BYTES;
                    f.ctx.uc_link = nullptr;
                    makecontext(&f.ctx, trampoline, 0);
                    f.started = false;
                    f.state = RUNNABLE;
                }
                for (;;) {
                    for (int i = 0; i < nthreads; ++i) {
                        const int t = reverse_order ? nthreads - 1 - i : i;
                        if (fibers[t].state != RUNNABLE) continue;
                        cur = t;
                        threadIdx = dim3{(unsigned)(t % block.x), (unsigned)((t / block.x) % block.y),
                                         (unsigned)(t / (block.x * block.y))};
                        if (!_setjmp(main_jb)) {
                            if (!fibers[t].started) {
                                fibers[t].started = true;
                                setcontext(&fibers[t].ctx);
                            } else {
                                _longjmp(fibers[t].jb, 1);
                            }
                        }
                        cur = -1;
                        if (failed) break;
                    }
                    if (failed) {
                        ok = false;
                        break;
                    }
                    // Release warps whose lanes have all reached the warp barrier.
                    bool released = false;
                    for (int w = 0; w * 32 < nthreads; ++w) {
                        const int l0 = w * 32, l1 = min(nthreads, l0 + 32);
                        int at = 0, other = 0;
                        for (int t = l0; t < l1; ++t) {
                            if (fibers[t].state == AT_WARP_BARRIER) ++at;
                            else other++;
                        }
                        if (at == l1 - l0) {
                            for (int t = l0; t < l1; ++t) fibers[t].state = RUNNABLE;
                            released = true;
                        } else if (at > 0) {
                            char buf[200];
                            snprintf(buf, sizeof buf,
                                     "warp %d of block (%u,%u,%u): %d lanes wait in a warp collective while %d "
                                     "do not (divergent shuffle/mma)",
                                     w, bx, by, bz, at, other);
                            error = buf;
                            ok = false;
                        }
                    }
                    if (!ok) break;
                    if (released) continue;
                    int at_block = 0, done = 0;
                    for (int t = 0; t < nthreads; ++t) {
                        if (fibers[t].state == AT_BLOCK_BARRIER) ++at_block;
                        if (fibers[t].state == DONE) ++done;
                    }
                    if (done == nthreads) break;
                    if (at_block + done == nthreads && done == 0) {
                        for (int t = 0; t < nthreads; ++t) fibers[t].state = RUNNABLE;
                        continue;
                    }
                    char buf[200];
                    snprintf(buf, sizeof buf,
                             "block (%u,%u,%u): %d threads wait at __syncthreads while %d have exited", bx, by, bz,
                             at_block, done);
                    error = buf;
                    ok = false;
                    break;
                }
            }
    if (dyn) munmap(dyn_map.base, dyn_map.total);
    dyn_ptr = nullptr;
    if (failed) ok = false;
    return ok;
}

// Calls a kernel with arguments unpacked from cuLaunchKernel-style pointers.
template <class... A, size_t... I>
inline void call_impl(void (*f)(A...), void** args, std::index_sequence<I...>) {
    f(*static_cast<std::remove_cv_t<std::remove_reference_t<A>>*>(args[I])...);
}
template <class... A>
inline void call(void (*f)(A...), void** args) {
    call_impl(f, args, std::index_sequence_for<A...>{});
}

}  // namespace emu

inline void __syncthreads() { emu::block_barrier(); }
inline void __syncwarp(unsigned = 0xffffffffu) { emu::warp_barrier(); }

template <class T>
inline T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    (void)width;
    if (mask != 0xffffffffu) emu::fail("partial-mask shuffles are not emulated");
    static_assert(sizeof(T) <= 8, "shuffle of a type wider than 8 bytes");
    const int t = emu::flat_tid(), w = t / 32, lane = t % 32;
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof(T));
    emu::warps[w].v[lane] = bits;
    emu::warp_barrier();
    const uint64_t got = emu::warps[w].v[lane ^ (lane_mask & 31)];
    emu::warp_barrier();  // nobody overwrites the slots before everyone has read
    T r;
    memcpy(&r, &got, sizeof(T));
    return r;
}

inline float atomicAdd(float* p, float v) {
    const float old = *p;
    *p = old + v;
    return old;
}
inline double atomicAdd(double* p, double v) {
    const double old = *p;
    *p = old + v;
    return old;
}

#define TL_DYN_SMEM(name) unsigned char* name = emu::dyn_smem()

// mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32, from the PTX ISA fragment layouts.
inline void tl_mma_16816(float c[4], const uint32_t a[4], const uint32_t b[2]) {
    const int t = emu::flat_tid(), w = t / 32, lane = t % 32;
    emu::WarpSlots& s = emu::warps[w];
    for (int i = 0; i < 4; ++i) s.a[lane][i] = a[i];
    for (int i = 0; i < 2; ++i) s.b[lane][i] = b[i];
    emu::warp_barrier();
    float A[16][16], B[16][8];
    auto lo = [](uint32_t v) { return __bfloat162float(__ushort_as_bfloat16((unsigned short)(v & 0xffffu))); };
    auto hi = [](uint32_t v) { return __bfloat162float(__ushort_as_bfloat16((unsigned short)(v >> 16))); };
    for (int L = 0; L < 32; ++L) {
        const int g = L >> 2, q = L & 3;
        const uint32_t* ra = s.a[L];
        A[g][2 * q] = lo(ra[0]);
        A[g][2 * q + 1] = hi(ra[0]);
        A[g + 8][2 * q] = lo(ra[1]);
        A[g + 8][2 * q + 1] = hi(ra[1]);
        A[g][2 * q + 8] = lo(ra[2]);
        A[g][2 * q + 9] = hi(ra[2]);
        A[g + 8][2 * q + 8] = lo(ra[3]);
        A[g + 8][2 * q + 9] = hi(ra[3]);
        const uint32_t* rb = s.b[L];
        B[2 * q][g] = lo(rb[0]);
        B[2 * q + 1][g] = hi(rb[0]);
        B[2 * q + 8][g] = lo(rb[1]);
        B[2 * q + 9][g] = hi(rb[1]);
    }
    emu::warp_barrier();
    const int g = lane >> 2, q = lane & 3;
    const int rows[4] = {g, g, g + 8, g + 8}, cols[4] = {2 * q, 2 * q + 1, 2 * q, 2 * q + 1};
    for (int e = 0; e < 4; ++e) {
        float acc = c[e];
        for (int kk = 0; kk < 16; ++kk) acc += A[rows[e]][kk] * B[kk][cols[e]];
        c[e] = acc;
    }
}

// ---- the C interface the Rust side loads ------------------------------------------------------
struct EmuKernel {
    const char* name;
    void (*fn)(void**);
};
// Defined by the generated translation unit, after the kernels.
const EmuKernel* emu_kernel_table(int* n);

extern "C" void emu_set_reverse(int reverse) { emu::reverse_order = reverse != 0; }

extern "C" int emu_launch(const char* name, unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by,
                          unsigned bz, unsigned smem, void** args, char* err, int err_len) {
    int n = 0;
    const EmuKernel* table = emu_kernel_table(&n);
    for (int i = 0; i < n; ++i) {
        if (strcmp(table[i].name, name) != 0) continue;
        if (emu::run(table[i].fn, args, dim3{gx, gy, gz}, dim3{bx, by, bz}, smem)) return 0;
        snprintf(err, (size_t)err_len, "%s: %s", name, emu::error.c_str());
        return 1;
    }
    snprintf(err, (size_t)err_len, "no kernel named %s", name);
    return 2;
}

struct EmuAlloc {
    void* ptr;
    emu::Mapping map;
};
inline std::vector<EmuAlloc> emu_allocs;

extern "C" void* emu_alloc(size_t bytes) {
    emu::Mapping m;
    void* p = emu::guarded_alloc(bytes, 256, &m);
    if (p) emu_allocs.push_back(EmuAlloc{p, m});
    return p;
}
extern "C" void emu_free(void* p) {
    for (size_t i = 0; i < emu_allocs.size(); ++i)
        if (emu_allocs[i].ptr == p) {
            munmap(emu_allocs[i].map.base, emu_allocs[i].map.total);
            emu_allocs[i] = emu_allocs.back();
            emu_allocs.pop_back();
            return;
        }
}
