//! Our own `f64` GEMM for products whose right operand fits the budget: B is packed **once** into
//! column panels that every worker shares, and each worker streams row bands of A through it.
//!
//! `matrixmultiply` (through `ndarray`) re-packs both operands on every call: called per output
//! tile, as the tiled path must, it packs B once per tile row and A once per tile column, which
//! perf measured at a tenth of an 8192² product. Here B is packed while it is read, A once per
//! band, and the micro-kernel is a plain loop the compiler turns into the register-blocked
//! `6 x 8` AVX2/FMA kernel (12 accumulators, two loads and six broadcasts per step of `k`). On
//! AVX-512 CPUs [`micro_wide`] computes two A panels by two B panels at once (`12 x 16`, 24 `zmm`
//! accumulators, as OpenBLAS does there): a 4096² product from `.npy` to `.npy` took 2.9-3.0 s of
//! CPU time instead of 4.0.
//!
//! **One order of summation.** Each element of C is summed over `k` in blocks of [`KC`] (our
//! `KB`): within a block a chain of fused multiply-adds in `k` order starting from `+0.0`, then
//! `C = acc + 0.0` for the first block and `C = acc + C` for the others (the order of
//! `matrixmultiply`'s FMA kernel, with blocks twice as long as its `kc`). Every path that runs
//! here (resident B, spans, the tiled path's blocks of `k`, which are multiples of [`KC`]) makes
//! these sums, so any budget, tiling or thread count gives identical bytes (tested against the
//! sums written out plainly, [`blocked_sums`]). It is used on x86-64 with AVX2 and FMA
//! ([`available`]); elsewhere every product goes through `matrixmultiply`.
//!
//! `KC` is 512, not `matrixmultiply`'s 256: each micro-kernel call then amortises its tiles'
//! loads and stores and its call over twice the steps, and C's tiles are read and written half
//! as often. 8192² from `.npy` to `.npy` on the AVX-512 Xeon of `benches/RESULTS.md`: user CPU
//! 11.1-11.4 s against 11.6-12.1 s with 256, in alternating runs (the figures RESULTS.md
//! quotes; an earlier series gave 11.7-12.8 s against 12.5-13.0, 128 slower still at
//! 13.4-13.6 s, and 768 and 1024 no better than 512).

use rayon::prelude::*;

use crate::error::Result;
use crate::storage::Buffer;

/// Rows of the micro-tile: the height of a packed A panel.
pub(super) const MR: usize = 6;
/// Columns of the micro-tile: the width of a packed B panel.
pub(super) const NR: usize = 8;
/// Inner-dimension block, which the sums follow: the tiled path's `KB`.
pub(super) const KC: usize = super::KB;
/// Rows of A packed at once: `MC x KC` doubles (960 KiB) stay in L2 (1–2 MiB per core on the
/// machines we measure) while every B panel of the block streams past them; in a band of at
/// least this many rows each B panel pair is then used by 20 wide micro-kernel calls before the
/// next is fetched (10 with 120 rows, which took 5-8 % more CPU time on 4096² products, whose
/// bands are 240 rows; alternating runs). Shorter bands are one block of their own height.
pub(super) const MC: usize = 240;

/// Whether this path may run: the CPU has AVX2 and FMA.
pub(super) fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// `MR x NR` micro-kernel: `C = acc + (first ? 0 : C)` with `acc = sum over p of A[r, p] B[p, j]`
/// (fused, in `p` order). `ap` holds `kc` steps of `MR` values of A, `bp` `kc` steps of `NR` values
/// of B; `c` is the tile, row by row.
#[multiversion::multiversion(targets("x86_64+avx2+fma"))]
fn micro(ap: &[f64], bp: &[f64], c: &mut [f64], first: bool) {
    let mut acc = [[0.0f64; NR]; MR];
    for (a, b) in ap.chunks_exact(MR).zip(bp.chunks_exact(NR)) {
        for r in 0..MR {
            for j in 0..NR {
                acc[r][j] = a[r].mul_add(b[j], acc[r][j]);
            }
        }
    }
    for (row, acc) in c.chunks_exact_mut(NR).zip(&acc) {
        for (x, &s) in row.iter_mut().zip(acc) {
            *x = s + if first { 0.0 } else { *x };
        }
    }
}

/// Whether the CPU has AVX-512: then [`micro_wide`] computes four tiles at once, its 24
/// accumulators held in the 32 `zmm` registers (twice the work per instruction of the AVX2
/// kernel, which is what OpenBLAS does on such CPUs).
fn wide_available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f") && available()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Four tiles at once, `2 MR x 2 NR`: A panels `a0` (rows `0..MR`) and `a1` (rows `MR..2 MR`)
/// by B panels `b0` and `b1`; `tij` is the tile of A panel `i` and B panel `j`. Every element is
/// the same chain of fused multiply-adds in `p` order as in [`micro`], so the results are the
/// same bits.
#[multiversion::multiversion(targets("x86_64+avx512f+avx512vl+avx2+fma"))]
#[allow(clippy::too_many_arguments)]
fn micro_wide(
    (a0, a1): (&[f64], &[f64]),
    (b0, b1): (&[f64], &[f64]),
    (t00, t10): (&mut [f64], &mut [f64]),
    (t01, t11): (&mut [f64], &mut [f64]),
    first: bool,
) {
    // The tiles are read (or written) only after all `kc` steps: fetch them now (an 8192²
    // product took 3 % less CPU time).
    for t in [&*t00, &*t10, &*t01, &*t11] {
        crate::kernels::prefetch::lines(t);
    }
    // One array per B panel, indexed only by constants once unrolled, so every accumulator
    // lives in a register (a runtime index into one array kept them all in memory).
    let mut c0 = [[0.0f64; NR]; 2 * MR];
    let mut c1 = [[0.0f64; NR]; 2 * MR];
    let steps = a0
        .chunks_exact(MR)
        .zip(a1.chunks_exact(MR))
        .zip(b0.chunks_exact(NR).zip(b1.chunks_exact(NR)));
    for ((a0, a1), (b0, b1)) in steps {
        // The four panels are four streams (A from L2, B from L2 or L3 on its first use) that
        // the hardware prefetchers leave short. Fetching a line 2 KiB ahead in B's two, every
        // step, took 5-8 % off the CPU time of 4096² products (alternating runs, A's fetched in
        // both). Fetching A's too measured no faster on 4096², and on 8192² it cost 3 % more
        // CPU time (user 13.48-13.81 s against 13.04-13.32 s, wall 7.00-7.52 s against
        // 6.84-6.92 s, 4 alternating runs of `examples/matmul`): two more load-port uops per step.
        crate::kernels::prefetch::ahead(&b0[..1]);
        crate::kernels::prefetch::ahead(&b1[..1]);
        for r in 0..2 * MR {
            let a = if r < MR { a0[r] } else { a1[r - MR] };
            for j in 0..NR {
                c0[r][j] = a.mul_add(b0[j], c0[r][j]);
            }
            for j in 0..NR {
                c1[r][j] = a.mul_add(b1[j], c1[r][j]);
            }
        }
    }
    store(t00, &c0[..MR], first);
    store(t10, &c0[MR..], first);
    store(t01, &c1[..MR], first);
    store(t11, &c1[MR..], first);
}

/// Writes accumulator rows into tile `t` as [`micro`] does.
#[inline(always)]
fn store(t: &mut [f64], rows: &[[f64; NR]], first: bool) {
    for (row, acc) in t.chunks_exact_mut(NR).zip(rows) {
        for (x, &s) in row.iter_mut().zip(acc) {
            *x = s + if first { 0.0 } else { *x };
        }
    }
}

/// The right operand `B` (`k x n`), packed: for every block of [`KC`] rows, `n / NR` panels of
/// `kc x NR` values (row by row), the last panel padded with zeros.
pub(super) struct PackedB {
    k: usize,
    n: usize,
    panels: usize,
    data: Buffer,
}

impl PackedB {
    /// Bytes [`PackedB::pack`] allocates for a `k x n` operand.
    pub(super) fn bytes(k: usize, n: usize) -> u64 {
        k as u64 * n.div_ceil(NR) as u64 * NR as u64 * 8
    }

    /// Packs B from its row blocks: `rows(k0, kc)` returns rows `k0..k0 + kc` (dense, `kc x n`).
    /// Blocks are read and packed in parallel.
    pub(super) fn pack(
        k: usize,
        n: usize,
        rows: impl Fn(usize, usize) -> Result<Buffer> + Sync,
    ) -> Result<PackedB> {
        let panels = n.div_ceil(NR);
        let mut data = Buffer::for_overwrite(Self::bytes(k, n) as usize)?;
        if k > 0 && n > 0 {
            data.as_mut_slice::<f64>()
                .par_chunks_mut(KC * panels * NR)
                .enumerate()
                .try_for_each(|(blk, dst)| {
                    let (k0, kc) = (blk * KC, dst.len() / (panels * NR));
                    let src = rows(k0, kc)?;
                    pack_block(dst, src.as_slice::<f64>(), n, n, kc);
                    Ok(())
                })?;
        }
        Ok(PackedB { k, n, panels, data })
    }

    /// Packs the `k x n` matrix whose rows start every `ldb` elements of `b` (one thread: the
    /// tiled path calls this from its workers).
    fn strided(k: usize, n: usize, b: &[f64], ldb: usize) -> Result<PackedB> {
        let panels = n.div_ceil(NR);
        let mut data = Buffer::for_overwrite(Self::bytes(k, n) as usize)?;
        let blocks = data.as_mut_slice::<f64>().chunks_mut(KC * panels * NR);
        for (blk, dst) in blocks.enumerate() {
            let (k0, kc) = (blk * KC, dst.len() / (panels * NR));
            pack_block(dst, &b[k0 * ldb..], ldb, n, kc);
        }
        Ok(PackedB { k, n, panels, data })
    }

    /// `C = A @ B[:, c0..c0 + w]` for a band of `h` rows: `a` is `h x k` (dense), `c` has row
    /// stride `ldc` and starts at the band's first element. `c0` must be a multiple of [`NR`].
    ///
    /// The band is computed in `scratch` tile by tile (each `MR x NR` tile contiguous) and copied
    /// out at the end: with C's own row stride, a power of two as often as not, the rows of one
    /// tile all fall into the same cache set and every tile update missed the caches.
    pub(super) fn band(
        &self,
        a: &[f64],
        h: usize,
        (c0, w): (usize, usize),
        (c, ldc): (&mut [f64], usize),
        accumulate: bool,
        scratch: &mut Scratch,
    ) -> Result<()> {
        if h == 0 || w == 0 {
            return Ok(());
        }
        if accumulate {
            let tiles = scratch.tiles_for(h, w)?;
            tiles_from(c, ldc, h, w, tiles, h.div_ceil(MR));
        }
        self.compute(a, h, (c0, w), accumulate, scratch)?;
        scratch.rows_to(0..h, c, ldc);
        Ok(())
    }

    /// Computes `A @ B[:, c0..c0 + w]` for a band of `h` rows (`a` is `h x k`, dense) into
    /// `scratch`'s tiles, from which [`Scratch::rows_to`] copies any rows out. With
    /// `accumulate`, the tiles already hold C (see [`Scratch::tiles_for`]) and the product is
    /// added to it. `c0` must be a multiple of [`NR`].
    pub(super) fn compute(
        &self,
        a: &[f64],
        h: usize,
        (c0, w): (usize, usize),
        accumulate: bool,
        scratch: &mut Scratch,
    ) -> Result<()> {
        let (k, n) = (self.k, self.n);
        debug_assert!(c0 % NR == 0 && c0 + w <= n && a.len() >= h * k);
        let tiles_r = h.div_ceil(MR);
        scratch.tiles_for(h, w)?;
        scratch.band = (h, w);
        let apack_len = MC.min(h.next_multiple_of(MR)) * KC.min(k);
        if scratch
            .apack
            .as_ref()
            .is_none_or(|b| b.len() < apack_len * 8)
        {
            scratch.apack = None; // back to the pool before its successor is reserved
            scratch.apack = Some(Buffer::for_overwrite(apack_len * 8)?);
        }
        let Scratch { apack, tiles, .. } = scratch;
        let apack = apack
            .as_mut()
            .expect("allocated above")
            .as_mut_slice::<f64>();
        let tiles = &mut tiles
            .as_mut()
            .expect("allocated by tiles_for")
            .as_mut_slice::<f64>()[..tiles_r * w.div_ceil(NR) * MR * NR];
        if h == 0 || w == 0 {
            return Ok(());
        }
        if k == 0 {
            if !accumulate {
                tiles.fill(0.0);
            }
            return Ok(());
        }
        let data = self.data.as_slice::<f64>();
        let (jp0, jp1) = (c0 / NR, (c0 + w).div_ceil(NR));
        let wide = wide_available();
        for m0 in (0..h).step_by(MC) {
            let mc = MC.min(h - m0);
            let mp = mc.div_ceil(MR);
            for k0 in (0..k).step_by(KC) {
                let kc = KC.min(k - k0);
                // A block: rows m0..m0 + mc, columns k0..k0 + kc, as `mp` panels of `kc x MR`.
                let apack = &mut apack[..mp * MR * kc];
                if !mc.is_multiple_of(MR) {
                    // The last panel's rows past the band stay zero.
                    apack[(mp - 1) * MR * kc..].fill(0.0);
                }
                for (ip, panel) in apack.chunks_exact_mut(MR * kc).enumerate() {
                    for r in 0..MR.min(mc - ip * MR) {
                        let row = m0 + ip * MR + r;
                        let src = &a[row * k + k0..row * k + k0 + kc];
                        for (p, &v) in src.iter().enumerate() {
                            panel[p * MR + r] = v;
                        }
                    }
                }
                let first = k0 == 0 && !accumulate;
                let block = &data[k0 * self.panels * NR..];
                let bp = |jp: usize| &block[jp * kc * NR..(jp + 1) * kc * NR];
                let ap = |ip: usize| &apack[ip * MR * kc..(ip + 1) * MR * kc];
                const T: usize = MR * NR;
                let mut jp = jp0;
                while jp < jp1 {
                    let at = ((jp - jp0) * tiles_r + m0 / MR) * T;
                    if wide && jp + 1 < jp1 {
                        // Two B panels: their tiles for this A block, `tiles_r` tiles apart.
                        let (lo, hi) = tiles.split_at_mut(at + tiles_r * T);
                        let (col0, col1) = (&mut lo[at..at + mp * T], &mut hi[..mp * T]);
                        let mut ip = 0;
                        while ip + 1 < mp {
                            let (t00, t10) = col0[ip * T..(ip + 2) * T].split_at_mut(T);
                            let (t01, t11) = col1[ip * T..(ip + 2) * T].split_at_mut(T);
                            micro_wide(
                                (ap(ip), ap(ip + 1)),
                                (bp(jp), bp(jp + 1)),
                                (t00, t10),
                                (t01, t11),
                                first,
                            );
                            ip += 2;
                        }
                        if ip < mp {
                            micro(ap(ip), bp(jp), &mut col0[ip * T..(ip + 1) * T], first);
                            micro(ap(ip), bp(jp + 1), &mut col1[ip * T..(ip + 1) * T], first);
                        }
                        jp += 2;
                    } else {
                        let out = tiles[at..at + mp * T].chunks_exact_mut(T);
                        for (ip, tile) in out.enumerate() {
                            micro(ap(ip), bp(jp), tile, first);
                        }
                        jp += 1;
                    }
                }
            }
        }
        Ok(())
    }
}

/// Where element `(r, col)` of a band (columns counted from its first panel) lives among its
/// tiles.
fn tile_at(r: usize, col: usize, tiles_r: usize) -> usize {
    (((col / NR) * tiles_r + r / MR) * MR + r % MR) * NR + col % NR
}

/// Copies the band's `h x w` box of C into its tiles.
fn tiles_from(c: &[f64], ldc: usize, h: usize, w: usize, t: &mut [f64], tr: usize) {
    for col in (0..w).step_by(NR) {
        let tw = NR.min(w - col);
        for (r, row) in c.chunks(ldc).take(h).enumerate() {
            let at = tile_at(r, col, tr);
            t[at..at + tw].copy_from_slice(&row[col..col + tw]);
        }
    }
}

/// Copies rows `rows` of the band's tiles into C (its first row is the first of `rows`; `w`
/// values each), row by row. Whole tile rows are copied as `[f64; NR]`: one vector load and
/// store, where a copy of run-time length called `memcpy` for every 64 bytes.
fn tiles_to(
    t: &[f64],
    tr: usize,
    w: usize,
    rows: std::ops::Range<usize>,
    c: &mut [f64],
    ldc: usize,
) {
    let whole = w - w % NR;
    for (r, row) in rows.zip(c.chunks_mut(ldc)) {
        for (col, out) in row[..whole].chunks_exact_mut(NR).enumerate() {
            let at = tile_at(r, col * NR, tr);
            let src: &[f64; NR] = t[at..at + NR].try_into().expect("NR values");
            let out: &mut [f64; NR] = out.try_into().expect("NR values");
            *out = *src;
        }
        if whole < w {
            let at = tile_at(r, whole, tr);
            row[whole..w].copy_from_slice(&t[at..at + w - whole]);
        }
    }
}

/// Packs `kc` rows of `n` values (row `p` at `src[p * ld..]`) into `dst`: panel `jp` holds columns
/// `jp * NR..` row by row, the last one padded with zeros. Whole panel rows are copied as
/// `[f64; NR]` (one vector load and store), as in [`tiles_to`]: a copy of run-time length was a
/// `memcpy` call per 64 bytes.
fn pack_block(dst: &mut [f64], src: &[f64], ld: usize, n: usize, kc: usize) {
    let whole = n - n % NR;
    for p in 0..kc {
        let row = &src[p * ld..p * ld + n];
        for (jp, vals) in row[..whole].chunks_exact(NR).enumerate() {
            let at = jp * kc * NR + p * NR;
            let out: &mut [f64; NR] = (&mut dst[at..at + NR]).try_into().expect("NR values");
            *out = vals.try_into().expect("NR values");
        }
        if whole < n {
            let at = (whole / NR) * kc * NR + p * NR;
            let out = &mut dst[at..at + NR];
            out[..n - whole].copy_from_slice(&row[whole..]);
            out[n - whole..].fill(0.0);
        }
    }
}

/// `C = A B`, or `C += A B` when `accumulate`, for the tiled path: `a` is `h x k` (dense), B has
/// row stride `ldb`, C row stride `ldc`; B is packed for this call. The sums are the module's
/// blocked sums ([`blocked_sums`]), so a call over a slice of `k` that starts at a multiple of
/// [`KC`] with `accumulate` continues the sums of the calls before it exactly.
pub(super) fn gemm(
    (h, k, w): (usize, usize, usize),
    a: &[f64],
    (b, ldb): (&[f64], usize),
    (c, ldc): (&mut [f64], usize),
    accumulate: bool,
    scratch: &mut Scratch,
) -> Result<()> {
    let b = PackedB::strided(k, w, b, ldb)?;
    b.band(a, h, (0, w), (c, ldc), accumulate, scratch)
}

/// Per-worker scratch of [`PackedB::band`]: the packed A block and the band's tiles (a buffer
/// reserved in the budget). Kept between bands so that its memory is touched once per worker,
/// not once per band.
#[derive(Default)]
pub(super) struct Scratch {
    /// The packed A block (up to `MC x KC`), reserved in the budget, grown when a taller band
    /// needs it.
    apack: Option<Buffer>,
    tiles: Option<Buffer>,
    /// Rows and columns of the band the tiles hold.
    band: (usize, usize),
}

impl Scratch {
    /// The tiles of an `h x w` band (grown if need be), for C to be copied in before an
    /// accumulating [`PackedB::compute`].
    fn tiles_for(&mut self, h: usize, w: usize) -> Result<&mut [f64]> {
        let need = h.div_ceil(MR) * w.div_ceil(NR) * MR * NR;
        if self.tiles.as_ref().is_none_or(|t| t.len() < need * 8) {
            self.tiles = None; // back to the pool before its successor is reserved
            self.tiles = Some(Buffer::for_overwrite(need * 8)?);
        }
        self.band = (h, w);
        let tiles = self.tiles.as_mut().expect("allocated above");
        Ok(&mut tiles.as_mut_slice::<f64>()[..need])
    }

    /// Copies rows `rows` of the band last computed into `c` (row stride `ldc`, starting at the
    /// first of those rows), `w` values each.
    pub(super) fn rows_to(&self, rows: std::ops::Range<usize>, c: &mut [f64], ldc: usize) {
        let (h, w) = self.band;
        debug_assert!(rows.end <= h);
        let Some(tiles) = &self.tiles else {
            return;
        };
        tiles_to(tiles.as_slice::<f64>(), h.div_ceil(MR), w, rows, c, ldc);
    }

    /// Bytes a band of `h` rows and `w` columns needs (at most: for any `k`).
    pub(super) fn bytes(h: usize, w: usize) -> u64 {
        let tiles = h.div_ceil(MR) as u64 * (w.div_ceil(NR) + 1) as u64 * (MR * NR) as u64;
        let apack = MC.min(h.next_multiple_of(MR)) * KC;
        (tiles + apack as u64) * 8
    }
}

/// The sums this module promises, written the plain way, as the reference of the tests:
/// `C (+)= A B` with A dense `h x k`, B and C of row strides `ldb` and `ldc`, each element summed
/// over `k` in blocks of [`KC`], a chain of fused multiply-adds from `+0.0` in `k` order per
/// block, added to the element (`+0.0`, or C's value when `accumulate`) after each block.
#[cfg(test)]
pub(super) fn blocked_sums(
    (h, k, w): (usize, usize, usize),
    a: &[f64],
    (b, ldb): (&[f64], usize),
    (c, ldc): (&mut [f64], usize),
    accumulate: bool,
) {
    for i in 0..h {
        for j in 0..w {
            let mut sum = if accumulate { c[i * ldc + j] } else { 0.0 };
            for k0 in (0..k).step_by(KC) {
                let mut acc = 0.0f64;
                for p in k0..k.min(k0 + KC) {
                    acc = a[i * k + p].mul_add(b[p * ldb + j], acc);
                }
                sum += acc;
            }
            c[i * ldc + j] = sum;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn reference(a: &[f64], b: &[f64], (m, k, n): (usize, usize, usize)) -> Vec<f64> {
        let mut c = vec![f64::NAN; m * n];
        blocked_sums((m, k, n), a, (b, n), (&mut c, n), false);
        c
    }

    fn values(len: usize, seed: u64, specials: bool) -> Vec<f64> {
        let mut s = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..len)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 7;
                s ^= s << 17;
                match s % 61 {
                    0 if specials => -0.0,
                    1 if specials => f64::NAN,
                    2 if specials => f64::INFINITY,
                    // Wide exponents so that the order of the additions shows in the bits.
                    _ => {
                        (s >> 11) as f64 / (1u64 << 53) as f64 * 2f64.powi((s % 40) as i32 - 20)
                            - 0.3
                    }
                }
            })
            .collect()
    }

    /// Packs a dense `k x n` B through [`PackedB::pack`]'s block reader.
    fn pack_dense(b: &[f64], k: usize, n: usize) -> PackedB {
        PackedB::pack(k, n, |k0, kc| {
            let mut buf = Buffer::for_overwrite(kc * n * 8)?;
            buf.as_mut_slice::<f64>()
                .copy_from_slice(&b[k0 * n..(k0 + kc) * n]);
            Ok(buf)
        })
        .unwrap()
    }

    fn packed(a: &[f64], b: &[f64], (m, k, n): (usize, usize, usize), band: usize) -> Vec<f64> {
        let pb = pack_dense(b, k, n);
        let mut c = vec![f64::NAN; m * n];
        let mut scratch = Scratch::default();
        for (i, rows) in c.chunks_mut(band * n).enumerate() {
            let h = rows.len() / n;
            let a = &a[i * band * k..(i * band + h) * k];
            pb.band(a, h, (0, n), (rows, n), false, &mut scratch)
                .unwrap();
        }
        c
    }

    /// Equal bits, or both NaN: which NaN payload an FMA passes on depends on its operand
    /// order, which the compiler may commute (NumPy's BLAS gives no promise either).
    fn same_bits(x: &[f64], y: &[f64]) -> bool {
        x.len() == y.len()
            && x.iter()
                .zip(y)
                .all(|(a, b)| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan()))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]
        /// Any shape (partial micro-tiles, several `k` blocks, bands across `MC`), with ±0, NaN
        /// and infinities: the same bits as the blocked sums written out plainly.
        #[test]
        fn equals_the_blocked_sums_bit_for_bit(
            m in 1usize..300, k in 0usize..1100, n in 1usize..40,
            band in 1usize..260, seed in any::<u64>(), specials in any::<bool>(),
        ) {
            prop_assume!(available());
            let a = values(m * k, seed, specials);
            let b = values(k * n, seed ^ 0xABCD, specials);
            let want = reference(&a, &b, (m, k, n));
            let got = packed(&a, &b, (m, k, n), band);
            prop_assert!(same_bits(&got, &want));
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        /// The tiled path's call: strided B and C, overwriting or accumulating into C; the same
        /// bits as the blocked sums.
        #[test]
        fn strided_calls_equal_the_blocked_sums(
            h in 1usize..40, k in 0usize..1100, w in 1usize..30, pad_b in 0usize..5,
            pad_c in 0usize..5, accumulate in any::<bool>(), seed in any::<u64>(),
        ) {
            prop_assume!(available());
            let (ldb, ldc) = (w + pad_b, w + pad_c);
            let a = values(h * k, seed, true);
            let b = values(k * ldb, seed ^ 1, true);
            let c0 = values(h * ldc, seed ^ 2, true);
            let mut want = c0.clone();
            blocked_sums((h, k, w), &a, (&b, ldb), (&mut want, ldc), accumulate);
            let mut got = c0.clone();
            let mut scratch = Scratch::default();
            gemm((h, k, w), &a, (&b, ldb), (&mut got, ldc), accumulate, &mut scratch).unwrap();
            prop_assert!(same_bits(&got, &want));
        }
    }

    /// A column range that starts past the first panel and ends inside a panel, in a wider C.
    #[test]
    fn column_ranges_write_only_their_columns() {
        if !available() {
            return;
        }
        let (m, k, n) = (13, 300, 37);
        let a = values(m * k, 1, true);
        let b = values(k * n, 2, true);
        let want = reference(&a, &b, (m, k, n));
        let pb = pack_dense(&b, k, n);
        let mut c = vec![7.0; m * n];
        let mut scratch = Scratch::default();
        let (c0, w) = (16, 13);
        pb.band(&a, m, (c0, w), (&mut c[c0..], n), false, &mut scratch)
            .unwrap();
        for i in 0..m {
            for j in 0..n {
                let got = c[i * n + j];
                if (c0..c0 + w).contains(&j) {
                    assert!(same_bits(&[got], &[want[i * n + j]]), "({i}, {j})");
                } else {
                    assert_eq!(got, 7.0, "({i}, {j}) is outside the range");
                }
            }
        }
    }
}
