//! CPU tests: direct-formula forwards, finite-difference gradient checks and
//! the optimizer against scalar formulas.
mod forward;
mod gradcheck;
mod optim;
