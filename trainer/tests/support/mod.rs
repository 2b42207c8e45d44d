//! What the trainer's GPU tests share.

/// Relative L2 error of `got` (GPU values) against `want`, failing the test if
/// any GPU value is not finite (unwritten or overflowed).
pub fn rel_err(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let nan = got.iter().filter(|x| !x.is_finite()).count();
    assert_eq!(
        nan,
        0,
        "{nan} of {} GPU values are not finite (unwritten or overflow)",
        got.len()
    );
    let num: f64 = got
        .iter()
        .zip(want)
        .map(|(a, b)| ((a - b) as f64).powi(2))
        .sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}
