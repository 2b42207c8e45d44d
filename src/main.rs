//! The `scalefold` command line: parses arguments and calls the crates.

use clap::{Parser, Subcommand};

/// scalefold: AlphaFold2 data preparation, streaming and training.
#[derive(Parser)]
#[command(name = "scalefold", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {}
}
