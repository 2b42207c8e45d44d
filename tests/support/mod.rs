//! What the CLI integration tests share: the `scalefold` binary under test, a
//! run that must succeed, and the `synth` and `ingest` commands on a synthetic
//! corpus (each test adds its own sizes and flags).

// Each test target includes this module and uses only part of it.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Command, Output, Stdio};

/// The `scalefold` binary Cargo built for these tests.
pub fn scalefold() -> Command {
    Command::new(env!("CARGO_BIN_EXE_scalefold"))
}

/// Runs `cmd`, failing the test with its stdout and stderr if it fails.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// `scalefold synth` of `chains` chains from `seed` into `out` (stdout
/// silenced); the caller adds length and depth flags.
pub fn synth_command(out: &Path, chains: usize, seed: u64) -> Command {
    let mut cmd = scalefold();
    cmd.args(["synth", "--chains", &chains.to_string()])
        .args(["--seed", &seed.to_string(), "--out"])
        .arg(out)
        .stdout(Stdio::null());
    cmd
}

/// `scalefold ingest` of the synthetic corpus at `corpus` into `out` on one
/// thread, quietly; the caller adds any further flags.
pub fn ingest_command(corpus: &Path, out: &Path) -> Command {
    let mut cmd = scalefold();
    cmd.arg("ingest")
        .arg("--structures")
        .arg(corpus.join("mmcif"))
        .arg("--alignments")
        .arg(corpus.join("alignments"))
        .arg("--clusters")
        .arg(corpus.join("clusters.txt"))
        .arg("--out")
        .arg(out)
        .args(["--threads", "1", "--quiet"]);
    cmd
}
