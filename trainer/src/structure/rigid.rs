//! Rigid transforms (rotation + translation) and the ops the structure module
//! needs, each with its backward: compose, invert, apply to points, apply the
//! inverse to points, the backbone update from a 6-vector (AF2 supplement
//! Alg. 23) and frames from three backbone atoms by Gram–Schmidt (Alg. 21).
//!
//! A [`Rigid`] maps a point `x` to `R x + t`. Rotations are row-major 3×3
//! arrays. Gradients with respect to a rigid are returned as a [`Rigid`] whose
//! `rot` holds dL/dR entry by entry and whose `trans` holds dL/dt; backward
//! passes treat the nine rotation entries as free variables (the formulas are
//! polynomial in them), so they compose with any parameterisation upstream.

/// A point or vector in 3-D.
pub type Vec3 = [f64; 3];
/// A row-major 3×3 matrix: `m[row][col]`.
pub type Mat3 = [[f64; 3]; 3];

/// Epsilon added under the square root of every vector norm in this module,
/// so that normalising a zero vector is finite (and differentiable).
pub const NORM_EPSILON: f64 = 1e-8;

pub(crate) fn dot<const N: usize>(a: &[f64; N], b: &[f64; N]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

pub(crate) fn add<const N: usize>(a: &[f64; N], b: &[f64; N]) -> [f64; N] {
    std::array::from_fn(|i| a[i] + b[i])
}

pub(crate) fn sub<const N: usize>(a: &[f64; N], b: &[f64; N]) -> [f64; N] {
    std::array::from_fn(|i| a[i] - b[i])
}

pub(crate) fn scale<const N: usize>(a: &[f64; N], s: f64) -> [f64; N] {
    a.map(|x| x * s)
}

pub(crate) fn cross(a: &Vec3, b: &Vec3) -> Vec3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// `m v`.
pub(crate) fn mat_vec(m: &Mat3, v: &Vec3) -> Vec3 {
    [dot(&m[0], v), dot(&m[1], v), dot(&m[2], v)]
}

/// `mᵀ v`.
pub(crate) fn mat_t_vec(m: &Mat3, v: &Vec3) -> Vec3 {
    std::array::from_fn(|j| (0..3).map(|i| m[i][j] * v[i]).sum())
}

fn mat_mul(a: &Mat3, b: &Mat3) -> Mat3 {
    std::array::from_fn(|i| std::array::from_fn(|j| (0..3).map(|k| a[i][k] * b[k][j]).sum()))
}

fn transpose(m: &Mat3) -> Mat3 {
    std::array::from_fn(|i| std::array::from_fn(|j| m[j][i]))
}

/// `a bᵀ`.
fn outer(a: &Vec3, b: &Vec3) -> Mat3 {
    std::array::from_fn(|i| std::array::from_fn(|j| a[i] * b[j]))
}

fn mat_add(a: &Mat3, b: &Mat3) -> Mat3 {
    std::array::from_fn(|i| std::array::from_fn(|j| a[i][j] + b[i][j]))
}

/// Divides `v` by `sqrt(|v|² + eps)`.
pub fn normalize<const N: usize>(v: &[f64; N], eps: f64) -> [f64; N] {
    scale(v, 1.0 / (dot(v, v) + eps).sqrt())
}

/// Backward of [`normalize`]: the gradient with respect to `v`, given the
/// gradient `grad` of the normalised vector.
pub fn normalize_backward<const N: usize>(v: &[f64; N], eps: f64, grad: &[f64; N]) -> [f64; N] {
    let inv = 1.0 / (dot(v, v) + eps).sqrt();
    let along = dot(v, grad) * inv * inv * inv;
    std::array::from_fn(|i| grad[i] * inv - v[i] * along)
}

/// A rigid transform `x ↦ rot · x + trans`; also used to hold the gradient
/// with respect to one (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Rigid {
    /// The rotation (or, as a gradient, dL/dR).
    pub rot: Mat3,
    /// The translation (or, as a gradient, dL/dt).
    pub trans: Vec3,
}

impl Rigid {
    /// The identity transform.
    pub const IDENTITY: Rigid = Rigid {
        rot: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        trans: [0.0; 3],
    };
    /// All zeros: the starting value of a gradient accumulator.
    pub const ZERO: Rigid = Rigid {
        rot: [[0.0; 3]; 3],
        trans: [0.0; 3],
    };

    /// The twelve numbers, rotation row-major then translation.
    pub fn to_array(&self) -> [f64; 12] {
        let mut out = [0.0; 12];
        for i in 0..3 {
            out[3 * i..3 * i + 3].copy_from_slice(&self.rot[i]);
        }
        out[9..].copy_from_slice(&self.trans);
        out
    }

    /// Inverse of [`Rigid::to_array`].
    pub fn from_array(a: &[f64; 12]) -> Rigid {
        Rigid {
            rot: std::array::from_fn(|i| std::array::from_fn(|j| a[3 * i + j])),
            trans: [a[9], a[10], a[11]],
        }
    }

    /// Adds `other` entry by entry (gradient accumulation).
    pub fn accumulate(&mut self, other: &Rigid) {
        self.rot = mat_add(&self.rot, &other.rot);
        self.trans = add(&self.trans, &other.trans);
    }

    /// `self ∘ other`: first `other`, then `self`.
    pub fn compose(&self, other: &Rigid) -> Rigid {
        Rigid {
            rot: mat_mul(&self.rot, &other.rot),
            trans: add(&mat_vec(&self.rot, &other.trans), &self.trans),
        }
    }

    /// Backward of [`Rigid::compose`]: the gradients with respect to `self`
    /// and `other`, given the gradient `grad` of the composition.
    pub fn compose_backward(&self, other: &Rigid, grad: &Rigid) -> (Rigid, Rigid) {
        let g_self = Rigid {
            rot: mat_add(
                &mat_mul(&grad.rot, &transpose(&other.rot)),
                &outer(&grad.trans, &other.trans),
            ),
            trans: grad.trans,
        };
        let g_other = Rigid {
            rot: mat_mul(&transpose(&self.rot), &grad.rot),
            trans: mat_t_vec(&self.rot, &grad.trans),
        };
        (g_self, g_other)
    }

    /// The inverse `(Rᵀ, −Rᵀ t)`; exact for a proper rotation.
    pub fn invert(&self) -> Rigid {
        Rigid {
            rot: transpose(&self.rot),
            trans: scale(&mat_t_vec(&self.rot, &self.trans), -1.0),
        }
    }

    /// Backward of [`Rigid::invert`].
    pub fn invert_backward(&self, grad: &Rigid) -> Rigid {
        Rigid {
            rot: mat_add(
                &transpose(&grad.rot),
                &outer(&self.trans, &scale(&grad.trans, -1.0)),
            ),
            trans: scale(&mat_vec(&self.rot, &grad.trans), -1.0),
        }
    }

    /// `R x + t`.
    pub fn apply(&self, x: &Vec3) -> Vec3 {
        add(&mat_vec(&self.rot, x), &self.trans)
    }

    /// Backward of [`Rigid::apply`]: gradients with respect to the transform
    /// and the point.
    pub fn apply_backward(&self, x: &Vec3, grad: &Vec3) -> (Rigid, Vec3) {
        (
            Rigid {
                rot: outer(grad, x),
                trans: *grad,
            },
            mat_t_vec(&self.rot, grad),
        )
    }

    /// `Rᵀ (x − t)`: the point in this frame's local coordinates.
    pub fn invert_apply(&self, x: &Vec3) -> Vec3 {
        mat_t_vec(&self.rot, &sub(x, &self.trans))
    }

    /// Backward of [`Rigid::invert_apply`]: gradients with respect to the
    /// transform and the point.
    pub fn invert_apply_backward(&self, x: &Vec3, grad: &Vec3) -> (Rigid, Vec3) {
        let g_x = mat_vec(&self.rot, grad);
        (
            Rigid {
                rot: outer(&sub(x, &self.trans), grad),
                trans: scale(&g_x, -1.0),
            },
            g_x,
        )
    }

    /// The backbone update (Alg. 23 lines 2–3): `self ∘ rigid_from_update(u)`.
    pub fn update(&self, u: &[f64; 6]) -> Rigid {
        self.compose(&rigid_from_update(u))
    }

    /// Backward of [`Rigid::update`]: gradients with respect to `self` and `u`.
    pub fn update_backward(&self, u: &[f64; 6], grad: &Rigid) -> (Rigid, [f64; 6]) {
        let (g_self, g_step) = self.compose_backward(&rigid_from_update(u), grad);
        (g_self, rigid_from_update_backward(u, &g_step))
    }
}

/// The unnormalised rotation matrix of quaternion `q = (a, b, c, d)`; equals
/// `|q|²` times the rotation.
fn quaternion_matrix(q: &[f64; 4]) -> Mat3 {
    let [a, b, c, d] = *q;
    [
        [
            a * a + b * b - c * c - d * d,
            2.0 * (b * c - a * d),
            2.0 * (b * d + a * c),
        ],
        [
            2.0 * (b * c + a * d),
            a * a - b * b + c * c - d * d,
            2.0 * (c * d - a * b),
        ],
        [
            2.0 * (b * d - a * c),
            2.0 * (c * d + a * b),
            a * a - b * b - c * c + d * d,
        ],
    ]
}

/// Gradient of `Σ g ⊙ quaternion_matrix(q)` with respect to `q`.
fn quaternion_matrix_backward(q: &[f64; 4], g: &Mat3) -> [f64; 4] {
    let [a, b, c, d] = *q;
    // Each partial derivative of the matrix, divided by two.
    let partials: [Mat3; 4] = [
        [[a, -d, c], [d, a, -b], [-c, b, a]],
        [[b, c, d], [c, -b, -a], [d, a, -b]],
        [[-c, b, a], [b, c, d], [-a, d, -c]],
        [[-d, -a, b], [a, -d, c], [b, c, d]],
    ];
    partials.map(|p| 2.0 * (0..3).map(|i| dot(&p[i], &g[i])).sum::<f64>())
}

/// The rigid of a backbone update 6-vector `(b, c, d, tx, ty, tz)` (Alg. 23):
/// rotation of the quaternion `(1, b, c, d)` after normalisation, translation
/// `(tx, ty, tz)`. Always a proper rotation.
pub fn rigid_from_update(u: &[f64; 6]) -> Rigid {
    let q = [1.0, u[0], u[1], u[2]];
    let inv_norm2 = 1.0 / dot(&q, &q);
    Rigid {
        rot: quaternion_matrix(&q).map(|row| scale(&row, inv_norm2)),
        trans: [u[3], u[4], u[5]],
    }
}

/// Backward of [`rigid_from_update`]: the gradient with respect to `u`.
pub fn rigid_from_update_backward(u: &[f64; 6], grad: &Rigid) -> [f64; 6] {
    let q = [1.0, u[0], u[1], u[2]];
    let inv_norm2 = 1.0 / dot(&q, &q);
    let m = quaternion_matrix(&q);
    // R = M / n with n = |q|²: dL/dq = (dL/dM)·dM/dq / n − (Σ g ⊙ M) 2q / n².
    let g_m = grad.rot.map(|row| scale(&row, inv_norm2));
    let g_n = -(0..3).map(|i| dot(&grad.rot[i], &m[i])).sum::<f64>() * inv_norm2 * inv_norm2;
    let g_q = quaternion_matrix_backward(&q, &g_m);
    [
        g_q[1] + 2.0 * q[1] * g_n,
        g_q[2] + 2.0 * q[2] * g_n,
        g_q[3] + 2.0 * q[3] * g_n,
        grad.trans[0],
        grad.trans[1],
        grad.trans[2],
    ]
}

/// The frame of three points by Gram–Schmidt (Alg. 21): origin at `x2`, first
/// axis towards `x3`, `x1` in the plane of the first two axes on the positive
/// side of the second. For a backbone frame call it with (N, CA, C). Norms use
/// [`NORM_EPSILON`], so collinear or coincident points give a finite frame.
pub fn rigid_from_three_points(x1: &Vec3, x2: &Vec3, x3: &Vec3) -> Rigid {
    let (e1, e2, e3) = gram_schmidt(&sub(x3, x2), &sub(x1, x2)).axes;
    Rigid {
        rot: std::array::from_fn(|i| [e1[i], e2[i], e3[i]]),
        trans: *x2,
    }
}

/// Intermediate values of Gram–Schmidt, shared by the forward and backward.
struct GramSchmidt {
    u2: Vec3,
    axes: (Vec3, Vec3, Vec3),
}

fn gram_schmidt(v1: &Vec3, v2: &Vec3) -> GramSchmidt {
    let e1 = normalize(v1, NORM_EPSILON);
    let u2 = sub(v2, &scale(&e1, dot(&e1, v2)));
    let e2 = normalize(&u2, NORM_EPSILON);
    GramSchmidt {
        u2,
        axes: (e1, e2, cross(&e1, &e2)),
    }
}

/// Backward of [`rigid_from_three_points`]: gradients with respect to
/// `x1`, `x2` and `x3`.
pub fn rigid_from_three_points_backward(
    x1: &Vec3,
    x2: &Vec3,
    x3: &Vec3,
    grad: &Rigid,
) -> [Vec3; 3] {
    let v1 = sub(x3, x2);
    let v2 = sub(x1, x2);
    let GramSchmidt {
        u2,
        axes: (e1, e2, _),
    } = gram_schmidt(&v1, &v2);
    let column = |j: usize| -> Vec3 { std::array::from_fn(|i| grad.rot[i][j]) };
    let g_e3 = column(2);
    // e3 = e1 × e2.
    let mut g_e1 = add(&column(0), &cross(&e2, &g_e3));
    let g_e2 = add(&column(1), &cross(&g_e3, &e1));
    let g_u2 = normalize_backward(&u2, NORM_EPSILON, &g_e2);
    // u2 = v2 − e1 (e1 · v2).
    let e1_v2 = dot(&e1, &v2);
    let e1_gu2 = dot(&e1, &g_u2);
    let g_v2 = sub(&g_u2, &scale(&e1, e1_gu2));
    g_e1 = sub(&g_e1, &add(&scale(&g_u2, e1_v2), &scale(&v2, e1_gu2)));
    let g_v1 = normalize_backward(&v1, NORM_EPSILON, &g_e1);
    let g_x2 = sub(&sub(&grad.trans, &g_v1), &g_v2);
    [g_v2, g_x2, g_v1]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structure::fd::{check_gradient, random};

    fn rigid_at(p: &[f64]) -> Rigid {
        Rigid::from_array(p.try_into().unwrap())
    }

    fn weighted(r: &Rigid, w: &[f64]) -> f64 {
        dot(&r.to_array(), w.try_into().unwrap())
    }

    /// A random proper rigid transform.
    pub(crate) fn random_rigid(seed: u64) -> Rigid {
        let u = random(seed, 6);
        rigid_from_update(&std::array::from_fn(|i| 2.0 * u[i]))
    }

    fn assert_close(a: &[f64], b: &[f64], tol: f64) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < tol, "{a:?} != {b:?}");
        }
    }

    #[test]
    fn update_gives_proper_rotation_and_identity_at_zero() {
        assert_eq!(rigid_from_update(&[0.0; 6]), Rigid::IDENTITY);
        let r = random_rigid(3);
        let rrt = mat_mul(&r.rot, &transpose(&r.rot));
        assert_close(
            &Rigid {
                rot: rrt,
                trans: [0.0; 3],
            }
            .to_array(),
            &Rigid::IDENTITY.to_array(),
            1e-12,
        );
        let det = dot(&r.rot[0], &cross(&r.rot[1], &r.rot[2]));
        assert!((det - 1.0).abs() < 1e-12);
        // (1, 1, 0, 0) normalised is a quarter turn about x.
        let quarter = rigid_from_update(&[1.0, 0.0, 0.0, 0.0, 0.0, 0.0]);
        assert_close(&quarter.apply(&[0.0, 1.0, 0.0]), &[0.0, 0.0, 1.0], 1e-12);
    }

    #[test]
    fn compose_invert_apply_agree() {
        let a = random_rigid(1);
        let b = random_rigid(2);
        let x = [0.3, -1.2, 2.5];
        assert_close(&a.compose(&b).apply(&x), &a.apply(&b.apply(&x)), 1e-12);
        assert_close(&a.invert().apply(&a.apply(&x)), &x, 1e-12);
        assert_close(&a.invert_apply(&x), &a.invert().apply(&x), 1e-12);
        assert_close(
            &a.compose(&a.invert()).to_array(),
            &Rigid::IDENTITY.to_array(),
            1e-12,
        );
    }

    #[test]
    fn three_points_recovers_the_ideal_backbone_frame() {
        // Ideal alanine backbone in its own frame (N, CA, C).
        let n = [-0.525, 1.363, 0.0];
        let ca = [0.0; 3];
        let c = [1.526, 0.0, 0.0];
        let frame = rigid_from_three_points(&n, &ca, &c);
        assert_close(&frame.to_array(), &Rigid::IDENTITY.to_array(), 1e-8);
        let g = random_rigid(7);
        let moved = rigid_from_three_points(&g.apply(&n), &g.apply(&ca), &g.apply(&c));
        assert_close(&moved.to_array(), &g.to_array(), 1e-8);
        // Degenerate points give a finite frame, not NaN.
        let degenerate = rigid_from_three_points(&ca, &ca, &ca);
        assert!(degenerate.to_array().iter().all(|v| v.is_finite()));
    }

    #[test]
    fn gradcheck_compose() {
        let p: Vec<f64> = random(11, 24);
        let w = random(12, 12);
        let f = |p: &[f64]| weighted(&rigid_at(&p[..12]).compose(&rigid_at(&p[12..])), &w);
        let g = rigid_at(&w);
        let (ga, gb) = rigid_at(&p[..12]).compose_backward(&rigid_at(&p[12..]), &g);
        let analytic = [ga.to_array(), gb.to_array()].concat();
        check_gradient(&f, &p, &analytic);
    }

    #[test]
    fn gradcheck_invert() {
        let p = random(13, 12);
        let w = random(14, 12);
        let f = |p: &[f64]| weighted(&rigid_at(p).invert(), &w);
        let analytic = rigid_at(&p).invert_backward(&rigid_at(&w)).to_array();
        check_gradient(&f, &p, &analytic);
    }

    #[test]
    fn gradcheck_apply_and_invert_apply() {
        let p = random(15, 15);
        let w: Vec3 = random(16, 3).try_into().unwrap();
        type Forward = fn(&Rigid, &Vec3) -> Vec3;
        type Backward = fn(&Rigid, &Vec3, &Vec3) -> (Rigid, Vec3);
        let ops: [(Forward, Backward); 2] = [
            (Rigid::apply, Rigid::apply_backward),
            (Rigid::invert_apply, Rigid::invert_apply_backward),
        ];
        for (fwd, bwd) in ops {
            let f = |p: &[f64]| dot(&fwd(&rigid_at(&p[..12]), &p[12..].try_into().unwrap()), &w);
            let (gr, gx) = bwd(&rigid_at(&p[..12]), &p[12..].try_into().unwrap(), &w);
            let analytic = [&gr.to_array()[..], &gx[..]].concat();
            check_gradient(&f, &p, &analytic);
        }
    }

    #[test]
    fn gradcheck_backbone_update() {
        let p = random(17, 18);
        let w = random(18, 12);
        let f = |p: &[f64]| weighted(&rigid_at(&p[..12]).update(&p[12..].try_into().unwrap()), &w);
        let (gr, gu) =
            rigid_at(&p[..12]).update_backward(&p[12..].try_into().unwrap(), &rigid_at(&w));
        let analytic = [&gr.to_array()[..], &gu[..]].concat();
        check_gradient(&f, &p, &analytic);
    }

    #[test]
    fn gradcheck_rigid_from_three_points() {
        let p = random(19, 9);
        let w = random(20, 12);
        let points = |p: &[f64]| -> [Vec3; 3] {
            std::array::from_fn(|k| p[3 * k..3 * k + 3].try_into().unwrap())
        };
        let f = |p: &[f64]| {
            let [a, b, c] = points(p);
            weighted(&rigid_from_three_points(&a, &b, &c), &w)
        };
        let [a, b, c] = points(&p);
        let analytic = rigid_from_three_points_backward(&a, &b, &c, &rigid_at(&w)).concat();
        check_gradient(&f, &p, &analytic);
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn rigid() -> impl Strategy<Value = Rigid> {
            (
                prop::array::uniform3(-4.0..4.0f64),
                prop::array::uniform3(-20.0..20.0f64),
            )
                .prop_map(|(q, t)| rigid_from_update(&[q[0], q[1], q[2], t[0], t[1], t[2]]))
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

            #[test]
            fn group_laws_hold(a in rigid(), b in rigid(), c in rigid(), x in prop::array::uniform3(-30.0..30.0f64)) {
                let left = a.compose(&b).compose(&c).to_array();
                let right = a.compose(&b.compose(&c)).to_array();
                for (l, r) in left.iter().zip(&right) {
                    prop_assert!((l - r).abs() < 1e-9);
                }
                let back = a.invert_apply(&a.apply(&x));
                for (l, r) in back.iter().zip(&x) {
                    prop_assert!((l - r).abs() < 1e-9);
                }
                // A frame built from three transformed points is the transform
                // of the frame built from the originals.
                let pts = [[-0.5, 1.4, 0.1], [0.0, 0.0, 0.0], [1.5, 0.0, -0.2]];
                let base = rigid_from_three_points(&pts[0], &pts[1], &pts[2]);
                let moved = rigid_from_three_points(&a.apply(&pts[0]), &a.apply(&pts[1]), &a.apply(&pts[2]));
                for (l, r) in moved.to_array().iter().zip(&a.compose(&base).to_array()) {
                    prop_assert!((l - r).abs() < 1e-7);
                }
            }
        }
    }
}
