//! Structure-module geometry and losses on the CPU, in f64, each op with an
//! explicit backward.
//!
//! The structure module and its losses are small in compute and intricate in
//! math, so this module is plain Rust over small fixed-size arrays rather than
//! backend tensors: every op is a pair of functions, a forward and a backward
//! that takes the forward's inputs and the gradient of its outputs and returns
//! the gradients of its inputs (nothing is cached between the two, so a
//! backward can be called any number of times). A rigid transform's gradient
//! is itself a [`rigid::Rigid`] holding dL/dR (all nine entries, treated as
//! free) and dL/dt. Every backward is checked against central finite
//! differences in the tests of its file.
//!
//! Contents: [`rigid`] (frames: compose, invert, apply, the backbone update
//! from a 6-vector, frames from three atoms), [`fape`] (frame-aligned point
//! error, the shared core of the backbone and side-chain variants),
//! [`torsion`] (torsion-angle loss with pi-periodic alternatives and the
//! angle-norm penalty), [`ipa`] (invariant point attention at small sizes:
//! the CPU reference and gradient oracle for a backend implementation),
//! [`nn`] (layer norm, ReLU, the transition and the angle resnet),
//! [`allatom`] (group frames and atom14 positions from backbone frames and
//! torsions), [`module`] (the eight weight-sharing layers of the structure
//! module) and [`heads`] (distogram, masked-MSA, pLDDT and experimentally-
//! resolved heads with their losses).

pub mod allatom;
pub mod fape;
mod gemm;
pub mod heads;
pub mod ipa;
pub mod module;
pub mod nn;
pub mod objective;
pub mod renaming;
pub mod rigid;
pub mod torsion;
pub mod violation;

pub use objective::{
    HostDims, HostGrads, HostInputs, HostOutputs, LossTerms, LossWeights, host_atom14,
    host_forward, host_forward_backward, host_param_init, host_param_layout,
};

#[cfg(test)]
pub(crate) mod fd {
    //! The finite-difference check shared by the tests of this module.

    /// Asserts that `analytic` matches the central differences of `f` at `x`
    /// in every coordinate (relative error below `1e-6` beyond an absolute
    /// floor of `1e-7`); returns the worst relative error.
    pub fn check_gradient(f: &dyn Fn(&[f64]) -> f64, x: &[f64], analytic: &[f64]) -> f64 {
        check_gradient_with_step(f, x, analytic, 1e-6)
    }

    /// [`check_gradient`] with central differences of step `h`: a larger
    /// step suits deep compositions, whose rounding noise swamps a step of
    /// `1e-6`.
    pub fn check_gradient_with_step(
        f: &dyn Fn(&[f64]) -> f64,
        x: &[f64],
        analytic: &[f64],
        h: f64,
    ) -> f64 {
        assert_eq!(x.len(), analytic.len(), "gradient length");
        let mut worst: f64 = 0.0;
        let mut probe = x.to_vec();
        for i in 0..x.len() {
            probe[i] = x[i] + h;
            let plus = f(&probe);
            probe[i] = x[i] - h;
            let minus = f(&probe);
            probe[i] = x[i];
            let numeric = (plus - minus) / (2.0 * h);
            let a = analytic[i];
            let err = (a - numeric).abs() / (1e-7 + a.abs().max(numeric.abs()));
            assert!(
                err < 1e-6 || (a - numeric).abs() < 1e-9,
                "coordinate {i}: analytic {a:.10e}, numeric {numeric:.10e}"
            );
            worst = worst.max(err);
        }
        worst
    }

    /// Deterministic pseudo-random values in [-1, 1).
    pub fn random(seed: u64, n: usize) -> Vec<f64> {
        use rand::{Rng, SeedableRng};
        let mut r = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| r.random_range(-1.0..1.0)).collect()
    }
}

#[cfg(test)]
pub(crate) mod real_backbone;
#[cfg(test)]
mod real_training;
