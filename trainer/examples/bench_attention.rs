//! The fused attention alone at the Evoformer and extra-MSA shapes, tensor-core
//! and CUDA-core kernels side by side: `cargo run --release -p scalefold-trainer
//! --example bench_attention [-- --iters N]`. `--iters 0` runs each kernel once,
//! untimed, for a kernel profiler (e.g. `ncu --kernel-name regex:attn_tc`).

fn main() -> Result<(), scalefold_trainer::TrainerError> {
    let args: Vec<String> = std::env::args().collect();
    let iters = match args.iter().position(|a| a == "--iters") {
        Some(i) => match args.get(i + 1).map(|v| v.parse::<usize>()) {
            Some(Ok(n)) => n,
            _ => {
                eprintln!("--iters needs a whole number");
                std::process::exit(2);
            }
        },
        None => 20,
    };
    let opts = scalefold_trainer::bench::BenchOptions {
        iters,
        n_seq: 128,
        n_res: 256,
        n_extra: 1024,
        profile: false,
        device: 0,
    };
    let attention = scalefold_trainer::bench::attention_bench(&opts)?;
    print!("{}", scalefold_trainer::bench::attention_table(&attention));
    Ok(())
}
