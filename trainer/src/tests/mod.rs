//! CPU tests: direct-formula forwards and finite-difference gradient checks.
mod forward;
mod gradcheck;
