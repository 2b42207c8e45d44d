//! The Evoformer benchmark without the CLI: `cargo run --release -p scalefold-trainer
//! --example bench_evoformer [--profile]` (same figures as `scalefold bench evoformer`).

fn main() -> Result<(), scalefold_trainer::TrainerError> {
    let profile = std::env::args().any(|a| a == "--profile");
    let json = std::env::args().any(|a| a == "--json");
    let opts = scalefold_trainer::bench::BenchOptions {
        iters: 20,
        n_seq: 128,
        n_res: 256,
        n_extra: 1024,
        profile,
        device: 0,
    };
    let report = scalefold_trainer::bench::run(&opts)?;
    if json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("the report serializes")
        );
    } else {
        print!("{}", report.table());
    }
    Ok(())
}
