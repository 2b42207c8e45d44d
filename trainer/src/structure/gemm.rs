//! A bounds-checked f64 matrix product over strided views of slices, the
//! one GEMM of the host structure module (dense maps, IPA's pair sums).
//!
//! [`gemm`] runs on the calling thread (`matrixmultiply` without its
//! threading feature): callers parallelise over fixed blocks, so the
//! summation order of every output element, and hence every result, does not
//! depend on the thread count.

use rayon::prelude::*;

/// A strided `rows × cols` matrix view of a slice: element `(r, c)` is
/// `data[r * row_stride + c * col_stride]`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct View<'a> {
    /// The backing values.
    pub data: &'a [f64],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Distance between consecutive rows.
    pub row_stride: usize,
    /// Distance between consecutive columns.
    pub col_stride: usize,
}

impl<'a> View<'a> {
    /// The row-major `rows × cols` matrix held contiguously in `data`.
    pub fn rows(data: &'a [f64], rows: usize, cols: usize) -> View<'a> {
        View {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }

    /// This matrix transposed (no copy).
    pub fn t(self) -> View<'a> {
        View {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }
}

/// A strided mutable matrix view, as [`View`].
#[derive(Debug)]
pub(crate) struct ViewMut<'a> {
    /// The backing values.
    pub data: &'a mut [f64],
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Distance between consecutive rows.
    pub row_stride: usize,
    /// Distance between consecutive columns.
    pub col_stride: usize,
}

impl<'a> ViewMut<'a> {
    /// The row-major `rows × cols` matrix held contiguously in `data`.
    pub fn rows(data: &'a mut [f64], rows: usize, cols: usize) -> ViewMut<'a> {
        ViewMut {
            data,
            rows,
            cols,
            row_stride: cols,
            col_stride: 1,
        }
    }
}

/// Panics unless every element of a `rows × cols` view with these strides
/// lies inside a slice of `len` values.
fn check_extent(what: &str, len: usize, rows: usize, cols: usize, rs: usize, cs: usize) {
    if rows == 0 || cols == 0 {
        return;
    }
    let last = (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        last < len,
        "gemm: {what} view {rows}x{cols} (strides {rs}, {cs}) reaches {last} in a slice of {len}"
    );
}

/// `c ← alpha · a · b + beta · c`. With `beta == 0` the old contents of `c`
/// are ignored (NaN included). Panics when the shapes disagree or a view
/// leaves its slice (a programming error, not a data error).
pub(crate) fn gemm(alpha: f64, a: View, b: View, beta: f64, c: ViewMut) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert!(
        b.rows == k && c.rows == m && c.cols == n,
        "gemm: {m}x{k} times {}x{n} into {}x{}",
        b.rows,
        c.rows,
        c.cols
    );
    check_extent("a", a.data.len(), m, k, a.row_stride, a.col_stride);
    check_extent("b", b.data.len(), k, n, b.row_stride, b.col_stride);
    check_extent("c", c.data.len(), m, n, c.row_stride, c.col_stride);
    if m == 0 || n == 0 {
        return;
    }
    // Distinct (row, col) of `c` must not share an element.
    assert!(
        (m == 1 || c.row_stride > 0) && (n == 1 || c.col_stride > 0),
        "gemm: c must not alias itself"
    );
    if k == 0 {
        for r in 0..m {
            for col in 0..n {
                let x = &mut c.data[r * c.row_stride + col * c.col_stride];
                *x = if beta == 0.0 { 0.0 } else { beta * *x };
            }
        }
        return;
    }
    let s = |x: usize| x as isize;
    // SAFETY: the three views were checked above to stay inside their
    // slices (every index `r·rs + c·cs` below the slice length), `c` is
    // borrowed mutably so it aliases neither `a` nor `b`, and its strides
    // map distinct elements to distinct places. `dgemm` reads `a` and `b`
    // and writes `c` only at those indices.
    unsafe {
        matrixmultiply::dgemm(
            m,
            k,
            n,
            alpha,
            a.data.as_ptr(),
            s(a.row_stride),
            s(a.col_stride),
            b.data.as_ptr(),
            s(b.row_stride),
            s(b.col_stride),
            beta,
            c.data.as_mut_ptr(),
            s(c.row_stride),
            s(c.col_stride),
        );
    }
}

/// Multiply-adds above which [`par_gemm_add`] spreads its tiles over threads.
const PARALLEL_WORK: usize = 1 << 20;
/// Rows per tile of [`par_gemm_add`].
const TILE_ROWS: usize = 32;
/// Columns per tile of [`par_gemm_add`] when the output is wider than this.
const TILE_COLS: usize = 64;

impl<'a> View<'a> {
    /// Rows `start..start + rows` of this matrix.
    pub fn row_range(self, start: usize, rows: usize) -> View<'a> {
        View {
            data: if rows == 0 {
                &[]
            } else {
                &self.data[start * self.row_stride..]
            },
            rows,
            ..self
        }
    }

    /// Columns `start..start + cols` of this matrix.
    pub fn col_range(self, start: usize, cols: usize) -> View<'a> {
        View {
            data: if cols == 0 {
                &[]
            } else {
                &self.data[start * self.col_stride..]
            },
            cols,
            ..self
        }
    }
}

/// `out += a · b` for a row-major `a.rows × b.cols` output. A large product
/// runs as fixed tiles of [`TILE_ROWS`] rows (all columns when there are at
/// most [`TILE_COLS`], else [`TILE_COLS`] at a time) in parallel; every
/// output element is the sum of one tile's product (all of `k` in one
/// [`gemm`]), and the tiling depends on the shapes alone, so the result does
/// not depend on the thread count.
pub(crate) fn par_gemm_add(a: View, b: View, out: &mut [f64]) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(out.len(), m * n, "gemm: output of {m}x{n}");
    if m == 0 || n == 0 {
        return;
    }
    if m * n * k < PARALLEL_WORK {
        gemm(1.0, a, b, 1.0, ViewMut::rows(out, m, n));
    } else if n <= TILE_COLS {
        out.par_chunks_mut(TILE_ROWS * n)
            .enumerate()
            .for_each(|(t, block)| {
                let rows = block.len() / n;
                let a_rows = a.row_range(t * TILE_ROWS, rows);
                gemm(1.0, a_rows, b, 1.0, ViewMut::rows(block, rows, n));
            });
    } else {
        let (row_tiles, col_tiles) = (m.div_ceil(TILE_ROWS), n.div_ceil(TILE_COLS));
        let tiles: Vec<Vec<f64>> = (0..row_tiles * col_tiles)
            .into_par_iter()
            .map(|t| {
                let (r0, c0) = ((t / col_tiles) * TILE_ROWS, (t % col_tiles) * TILE_COLS);
                let (rows, cols) = (TILE_ROWS.min(m - r0), TILE_COLS.min(n - c0));
                let mut tile = vec![0.0; rows * cols];
                gemm(
                    1.0,
                    a.row_range(r0, rows),
                    b.col_range(c0, cols),
                    0.0,
                    ViewMut::rows(&mut tile, rows, cols),
                );
                tile
            })
            .collect();
        for (t, tile) in tiles.iter().enumerate() {
            let (r0, c0) = ((t / col_tiles) * TILE_ROWS, (t % col_tiles) * TILE_COLS);
            let cols = TILE_COLS.min(n - c0);
            for (r, row) in tile.chunks_exact(cols).enumerate() {
                let dst = &mut out[(r0 + r) * n + c0..][..cols];
                dst.iter_mut().zip(row).for_each(|(o, v)| *o += v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structure::fd::random;

    /// The plain triple loop.
    fn reference(a: View, b: View) -> Vec<f64> {
        let mut out = vec![0.0; a.rows * b.cols];
        for r in 0..a.rows {
            for c in 0..b.cols {
                out[r * b.cols + c] = (0..a.cols)
                    .map(|k| {
                        a.data[r * a.row_stride + k * a.col_stride]
                            * b.data[k * b.row_stride + c * b.col_stride]
                    })
                    .sum();
            }
        }
        out
    }

    #[test]
    fn strided_products_match_the_triple_loop() {
        // a is 5x7 read transposed from a 7x5 block; b is 7x3 with a row
        // stride of 4 (one value skipped per row).
        let a_data = random(1, 35);
        let b_data = random(2, 28);
        let a = View::rows(&a_data, 7, 5).t();
        let b = View {
            data: &b_data,
            rows: 7,
            cols: 3,
            row_stride: 4,
            col_stride: 1,
        };
        let expected = reference(a, b);
        let mut c = random(3, 15);
        let old = c.clone();
        gemm(2.0, a, b, 0.5, ViewMut::rows(&mut c, 5, 3));
        for ((got, e), o) in c.iter().zip(&expected).zip(&old) {
            assert!((got - (2.0 * e + 0.5 * o)).abs() < 1e-12, "{got} vs {e}");
        }
        // beta = 0 ignores NaN in c; k = 0 gives beta · c.
        let mut c = vec![f64::NAN; 15];
        gemm(1.0, a, b, 0.0, ViewMut::rows(&mut c, 5, 3));
        assert!(c.iter().zip(&expected).all(|(x, e)| (x - e).abs() < 1e-12));
        let mut c = vec![3.0; 4];
        let empty = View::rows(&[], 2, 0);
        gemm(
            1.0,
            empty,
            View::rows(&[], 0, 2),
            2.0,
            ViewMut::rows(&mut c, 2, 2),
        );
        assert_eq!(c, vec![6.0; 4]);
    }

    #[test]
    fn tiled_products_add_the_plain_product() {
        // Big enough for the parallel paths: narrow (row tiles only) and
        // wide (row and column tiles, the last ones partial).
        for (m, k, n) in [(300, 70, 50), (130, 90, 150)] {
            let a_data = random(4, m * k);
            let b_data = random(5, k * n);
            let (a, b) = (View::rows(&a_data, m, k), View::rows(&b_data, k, n));
            let expected = reference(a, b);
            let mut out = vec![1.0; m * n];
            par_gemm_add(a, b, &mut out);
            for (got, e) in out.iter().zip(&expected) {
                assert!((got - (1.0 + e)).abs() < 1e-11, "{got} vs {e}");
            }
        }
    }

    #[test]
    #[should_panic(expected = "reaches")]
    fn a_view_leaving_its_slice_panics() {
        let a = vec![0.0; 5];
        let mut c = vec![0.0; 4];
        gemm(
            1.0,
            View::rows(&a, 2, 3),
            View::rows(&a, 3, 2),
            0.0,
            ViewMut::rows(&mut c, 2, 2),
        );
    }
}
