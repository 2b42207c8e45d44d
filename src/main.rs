//! The `scalefold` command line: parses arguments and calls the crates.
//!
//! Each subcommand lives in its own module under `src/cmd/`; this file only wires them.

use clap::{Parser, Subcommand};

mod cmd;

/// scalefold: AlphaFold2 data preparation, streaming and training.
#[derive(Parser)]
#[command(name = "scalefold", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmarks; each prints its figures (one JSON line with --json).
    #[command(subcommand)]
    Bench(Bench),
}

/// The benchmarks, one per part of the system.
#[derive(Subcommand)]
enum Bench {}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Bench(bench) => match bench {},
    }
}
