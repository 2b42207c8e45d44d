//! Small 3-D vector and rigid-transform arithmetic (f32) used by the residue tables,
//! the ground-truth geometry and the template features.
//!
//! A [`Rigid`] maps local coordinates to global ones: `x_global = rot * x_local + trans`.
//! Rotations are stored row-major; every constructor here yields a proper rotation
//! (orthonormal, determinant +1) when its inputs are not degenerate.

/// A 3-D vector in Å.
pub type Vec3 = [f32; 3];

/// `a + b`.
pub fn add(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] + b[0], a[1] + b[1], a[2] + b[2]]
}

/// `a - b`.
pub fn sub(a: Vec3, b: Vec3) -> Vec3 {
    [a[0] - b[0], a[1] - b[1], a[2] - b[2]]
}

/// `s * a`.
pub fn scale(a: Vec3, s: f32) -> Vec3 {
    [a[0] * s, a[1] * s, a[2] * s]
}

/// Dot product.
pub fn dot(a: Vec3, b: Vec3) -> f32 {
    a[0] * b[0] + a[1] * b[1] + a[2] * b[2]
}

/// Cross product `a × b`.
pub fn cross(a: Vec3, b: Vec3) -> Vec3 {
    [
        a[1] * b[2] - a[2] * b[1],
        a[2] * b[0] - a[0] * b[2],
        a[0] * b[1] - a[1] * b[0],
    ]
}

/// Euclidean norm.
pub fn norm(a: Vec3) -> f32 {
    dot(a, a).sqrt()
}

/// Distance between two points.
pub fn distance(a: Vec3, b: Vec3) -> f32 {
    norm(sub(a, b))
}

/// `a / |a|`, with a tiny epsilon so a zero vector stays finite (it maps to zero).
pub fn normalize(a: Vec3) -> Vec3 {
    scale(a, 1.0 / (norm(a) + 1e-12).max(1e-12))
}

/// A rigid transform (rotation then translation).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rigid {
    /// Rotation matrix, row-major; its columns are the local axes in global coordinates.
    pub rot: [[f32; 3]; 3],
    /// Translation: the local origin in global coordinates.
    pub trans: Vec3,
}

impl Default for Rigid {
    fn default() -> Self {
        Self::IDENTITY
    }
}

impl Rigid {
    /// The identity transform.
    pub const IDENTITY: Rigid = Rigid {
        rot: [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
        trans: [0.0; 3],
    };

    /// A frame with origin `origin`, x axis along `x_direction`, and y axis in the plane
    /// of `x_direction` and `xy_direction` (Gram-Schmidt), on the side of `xy_direction`.
    pub fn from_axes(x_direction: Vec3, xy_direction: Vec3, origin: Vec3) -> Rigid {
        let ex = normalize(x_direction);
        let ey = normalize(sub(xy_direction, scale(ex, dot(xy_direction, ex))));
        let ez = cross(ex, ey);
        Rigid {
            rot: [
                [ex[0], ey[0], ez[0]],
                [ex[1], ey[1], ez[1]],
                [ex[2], ey[2], ez[2]],
            ],
            trans: origin,
        }
    }

    /// The frame of three points: origin at `origin`, `point_on_neg_x` on the negative x
    /// axis, `point_on_xy_plane` in the xy plane with positive y.
    pub fn from_3_points(point_on_neg_x: Vec3, origin: Vec3, point_on_xy_plane: Vec3) -> Rigid {
        Rigid::from_axes(
            sub(origin, point_on_neg_x),
            sub(point_on_xy_plane, origin),
            origin,
        )
    }

    /// A rotation of `angle` about the x axis given as (sin, cos), no translation.
    pub fn rot_x(sin: f32, cos: f32) -> Rigid {
        Rigid {
            rot: [[1.0, 0.0, 0.0], [0.0, cos, -sin], [0.0, sin, cos]],
            trans: [0.0; 3],
        }
    }

    /// Applies the rotation only.
    pub fn rotate(&self, v: Vec3) -> Vec3 {
        let r = &self.rot;
        [
            r[0][0] * v[0] + r[0][1] * v[1] + r[0][2] * v[2],
            r[1][0] * v[0] + r[1][1] * v[1] + r[1][2] * v[2],
            r[2][0] * v[0] + r[2][1] * v[1] + r[2][2] * v[2],
        ]
    }

    /// Maps a local point to global coordinates.
    pub fn apply(&self, v: Vec3) -> Vec3 {
        add(self.rotate(v), self.trans)
    }

    /// Maps a global point to local coordinates (the inverse of [`Rigid::apply`]).
    pub fn apply_inverse(&self, v: Vec3) -> Vec3 {
        let d = sub(v, self.trans);
        let r = &self.rot;
        [
            r[0][0] * d[0] + r[1][0] * d[1] + r[2][0] * d[2],
            r[0][1] * d[0] + r[1][1] * d[1] + r[2][1] * d[2],
            r[0][2] * d[0] + r[1][2] * d[1] + r[2][2] * d[2],
        ]
    }

    /// `self ∘ other`: first `other`, then `self`.
    pub fn compose(&self, other: &Rigid) -> Rigid {
        let mut rot = [[0.0f32; 3]; 3];
        for (i, row) in rot.iter_mut().enumerate() {
            for (j, cell) in row.iter_mut().enumerate() {
                *cell = (0..3).map(|k| self.rot[i][k] * other.rot[k][j]).sum();
            }
        }
        Rigid {
            rot,
            trans: self.apply(other.trans),
        }
    }

    /// Determinant of the rotation (≈ +1 for a proper rotation).
    pub fn determinant(&self) -> f32 {
        let r = &self.rot;
        dot(r[0], cross(r[1], r[2]))
    }

    /// The 12 numbers `[r00, r01, r02, r10, .., r22, tx, ty, tz]` (rotation row-major, then translation).
    pub fn to_array12(&self) -> [f32; 12] {
        let r = &self.rot;
        let t = &self.trans;
        [
            r[0][0], r[0][1], r[0][2], r[1][0], r[1][1], r[1][2], r[2][0], r[2][1], r[2][2], t[0],
            t[1], t[2],
        ]
    }
}

/// The dihedral angle of four points as (sin, cos), in the convention of the rigid-group
/// frames: in the frame with origin `c`, `b` on the negative x axis and `a` in the xy plane,
/// the angle is that of `d` about x (zero when `d` lies on the side of `a`, i.e. cis).
/// Returns `None` when the points are degenerate (collinear).
pub fn dihedral_sin_cos(a: Vec3, b: Vec3, c: Vec3, d: Vec3) -> Option<(f32, f32)> {
    let frame = Rigid::from_3_points(b, c, a);
    let local = frame.apply_inverse(d);
    let len = (local[1] * local[1] + local[2] * local[2]).sqrt();
    // NaN coordinates also land here.
    if len.is_nan() || len <= 1e-6 {
        return None;
    }
    Some((local[2] / len, local[1] / len))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_from_points_is_proper_rotation_and_inverts() {
        let f = Rigid::from_3_points([1.0, 2.0, 0.5], [0.3, -1.0, 2.0], [-2.0, 0.0, 1.0]);
        assert!((f.determinant() - 1.0).abs() < 1e-5);
        let p = [0.7, -3.0, 4.0];
        let back = f.apply(f.apply_inverse(p));
        assert!(distance(p, back) < 1e-5);
        let composed = f.compose(&Rigid::rot_x(1.0, 0.0));
        assert!((composed.determinant() - 1.0).abs() < 1e-5);
    }

    #[test]
    fn dihedral_of_trans_and_cis_points() {
        // a and d on opposite sides: trans, angle pi.
        let (s, c) = dihedral_sin_cos(
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, -1.0, 0.0],
        )
        .unwrap();
        assert!(s.abs() < 1e-6 && (c + 1.0).abs() < 1e-6);
        let (s, c) = dihedral_sin_cos(
            [0.0, 1.0, 0.0],
            [0.0, 0.0, 0.0],
            [1.0, 0.0, 0.0],
            [1.0, 0.0, 1.0],
        )
        .unwrap();
        assert!((s - 1.0).abs() < 1e-6 && c.abs() < 1e-6);
        assert!(
            dihedral_sin_cos([0.0; 3], [1.0, 0.0, 0.0], [2.0, 0.0, 0.0], [3.0, 0.0, 0.0]).is_none()
        );
    }
}
