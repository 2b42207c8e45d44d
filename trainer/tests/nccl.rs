//! NCCL tests (`#[ignore]`: they need 2 GPUs). World 2, one thread per GPU in
//! this process. Each collective of [`NcclGroup`] against [`LocalGroup`] (the
//! host-memory reference, tested on the CPU) on the same inputs and the same
//! backend: all-to-all and all-gather of bf16 activations and f32 statistics,
//! all-reduce sums, the data-parallel gradient average; the all-to-all captured
//! in a CUDA graph and replayed on fresh inputs; and timings of the DAP-sized
//! all-to-all and a gradient-sized all-reduce.
//!
//! Build: `cargo test -p scalefold-trainer --release --test nccl --no-run`
//! Run:   `NCCL_NVLS_ENABLE=0 <test binary> --ignored --nocapture --test-threads=1`

use rand::{Rng, SeedableRng};
use scalefold_trainer::backend::cuda::CudaBackend;
use scalefold_trainer::backend::{Backend, Class, TensorId};
use scalefold_trainer::dist::{Communicator, LocalGroup, NcclGroup, all_reduce_gradients};
use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

const WORLD: usize = 2;
/// A rank that has not finished by then is stuck in a collective its peer never joined.
const HANG: Duration = Duration::from_secs(120);

/// What one rank hands to a test body.
struct Rank {
    be: CudaBackend,
    nccl: NcclGroup,
    local: LocalGroup,
    barrier: Arc<Barrier>,
    rank: usize,
}

/// Runs `body` on `WORLD` threads, one per GPU, and returns each rank's result
/// in rank order. Assertions belong in the caller: a rank that panicked mid-way
/// would leave its peer waiting inside NCCL.
fn on_ranks<T: Send + 'static>(body: fn(&mut Rank) -> T) -> Vec<T> {
    let id = NcclGroup::unique_id().expect("NCCL (libnccl.so on LD_LIBRARY_PATH)");
    let barrier = Arc::new(Barrier::new(WORLD));
    let (tx, rx) = mpsc::channel();
    for (rank, local) in LocalGroup::new(WORLD).into_iter().enumerate() {
        let (id, barrier, tx) = (id.clone(), barrier.clone(), tx.clone());
        std::thread::spawn(move || {
            let be = CudaBackend::new(rank).unwrap_or_else(|e| {
                panic!("rank {rank} needs GPU {rank} (these tests need {WORLD} GPUs): {e}")
            });
            let nccl = NcclGroup::from_id(&id, rank, WORLD, &be).expect("joining NCCL");
            let mut r = Rank {
                be,
                nccl,
                local,
                barrier,
                rank,
            };
            let out = body(&mut r);
            let _ = tx.send((rank, out));
        });
    }
    drop(tx);
    let mut out: Vec<Option<T>> = (0..WORLD).map(|_| None).collect();
    for _ in 0..WORLD {
        let (rank, v) = rx
            .recv_timeout(HANG)
            .expect("a rank panicked or hung (see its message above)");
        out[rank] = Some(v);
    }
    out.into_iter().map(Option::unwrap).collect()
}

fn random(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

/// Small integers: sums of a few are exact in f32 and in bf16.
fn integers(rng: &mut impl Rng, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| rng.random_range(-64i32..64) as f32)
        .collect()
}

/// One comparison: its name, NCCL's result, the reference's, and the bf16
/// rounding allowance (0 = bit-exact).
struct Check {
    name: String,
    nccl: Vec<f32>,
    reference: Vec<f32>,
    rel_tol: f32,
}

fn assert_checks(per_rank: Vec<Vec<Check>>) {
    for (rank, checks) in per_rank.into_iter().enumerate() {
        for c in checks {
            assert_eq!(c.nccl.len(), c.reference.len(), "{}", c.name);
            let bad = c
                .nccl
                .iter()
                .zip(&c.reference)
                .enumerate()
                .find(|(_, (a, b))| !(*a - *b).abs().le(&(c.rel_tol * b.abs().max(a.abs()))));
            if let Some((i, (a, b))) = bad {
                panic!(
                    "rank {rank}, {}: element {i} is {a} with NCCL, {b} with the reference",
                    c.name
                );
            }
            println!(
                "rank {rank}: {} matches ({} elements{})",
                c.name,
                c.nccl.len(),
                if c.rel_tol == 0.0 {
                    ", bit-exact".to_string()
                } else {
                    format!(", within {:.1e} relative", c.rel_tol)
                }
            );
        }
    }
}

/// bf16 has 8 significant bits: one rounding of an exact sum moves it by at most 2^-8.
const BF16_ROUNDING: f32 = 1.0 / 256.0;

fn collectives(r: &mut Rank) -> Vec<Check> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1000 + r.rank as u64);
    let be = &mut r.be;
    let mut checks = Vec::new();
    // An odd chunk: chunk offsets are not 16-byte aligned.
    let chunk = 12_345;
    for (class, tag) in [(Class::Activation, "bf16"), (Class::Stat, "f32")] {
        let send = be.declare("send", WORLD * chunk, class);
        let recv = be.declare("recv", WORLD * chunk, class);
        let recv_ref = be.declare("recv_ref", WORLD * chunk, class);
        let shard = be.declare("shard", chunk, class);
        let full = be.declare("full", WORLD * chunk, class);
        let full_ref = be.declare("full_ref", WORLD * chunk, class);
        let sum = be.declare("sum", 3 * chunk, class);
        let sum_ref = be.declare("sum_ref", 3 * chunk, class);
        let exact_sum = be.declare("exact_sum", 3 * chunk, class);
        let exact_sum_ref = be.declare("exact_sum_ref", 3 * chunk, class);
        be.materialize().unwrap();
        be.write(send, &random(&mut rng, WORLD * chunk)).unwrap();
        be.write(shard, &random(&mut rng, chunk)).unwrap();
        let v = random(&mut rng, 3 * chunk);
        be.write(sum, &v).unwrap();
        be.write(sum_ref, &v).unwrap();
        let v = integers(&mut rng, 3 * chunk);
        be.write(exact_sum, &v).unwrap();
        be.write(exact_sum_ref, &v).unwrap();
        for t in [recv, recv_ref, full, full_ref] {
            be.fill(t, f32::NAN).unwrap();
        }

        r.nccl.all_to_all(be, send, recv).unwrap();
        r.local.all_to_all(be, send, recv_ref).unwrap();
        r.nccl.all_gather(be, shard, full).unwrap();
        r.local.all_gather(be, shard, full_ref).unwrap();
        r.nccl.all_reduce_sum(be, sum).unwrap();
        r.local.all_reduce_sum(be, sum_ref).unwrap();
        r.nccl.all_reduce_sum(be, exact_sum).unwrap();
        r.local.all_reduce_sum(be, exact_sum_ref).unwrap();
        for (name, got, want, tol) in [
            ("all_to_all", recv, recv_ref, 0.0),
            ("all_gather", full, full_ref, 0.0),
            (
                "all_reduce_sum of random values",
                sum,
                sum_ref,
                BF16_ROUNDING,
            ),
            (
                "all_reduce_sum of small integers",
                exact_sum,
                exact_sum_ref,
                0.0,
            ),
        ] {
            checks.push(Check {
                name: format!("{name} ({tag})"),
                nccl: be.read(got).unwrap(),
                reference: be.read(want).unwrap(),
                rel_tol: if class == Class::Stat { 0.0 } else { tol },
            });
        }

        // In place: the shard is this rank's chunk of `full`.
        let own = be.view(full, r.rank * chunk, chunk).unwrap();
        let v = random(&mut rng, chunk);
        be.write(own, &v).unwrap();
        be.write(shard, &v).unwrap();
        r.nccl.all_gather(be, own, full).unwrap();
        r.local.all_gather(be, shard, full_ref).unwrap();
        checks.push(Check {
            name: format!("in-place all_gather ({tag})"),
            nccl: be.read(full).unwrap(),
            reference: be.read(full_ref).unwrap(),
            rel_tol: 0.0,
        });
    }
    checks
}

#[test]
#[ignore]
fn nccl_collectives_match_local_group() {
    assert_checks(on_ranks(collectives));
}

fn gradients(r: &mut Rank) -> Vec<Check> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(2000 + r.rank as u64);
    let be = &mut r.be;
    // Lengths that are not multiples of the 128-element parameter padding.
    let lens = [5, 300, 4097];
    let grads: Vec<TensorId> = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| be.declare(&format!("p{i}.grad"), n, Class::WeightGrad))
        .collect();
    let refs: Vec<TensorId> = lens
        .iter()
        .enumerate()
        .map(|(i, &n)| be.declare(&format!("p{i}.ref"), n, Class::Stat))
        .collect();
    be.materialize().unwrap();
    be.fill_class(Class::WeightGrad, 0.0).unwrap();
    for (&g, &rf) in grads.iter().zip(&refs) {
        let v = integers(&mut rng, be.len(g));
        be.write(g, &v).unwrap();
        be.write(rf, &v).unwrap();
    }
    all_reduce_gradients(&r.nccl, be).unwrap();
    grads
        .iter()
        .zip(&refs)
        .enumerate()
        .map(|(i, (&g, &rf))| {
            r.local.all_reduce_sum(be, rf).unwrap();
            let mean: Vec<f32> = be
                .read(rf)
                .unwrap()
                .iter()
                .map(|x| x / WORLD as f32)
                .collect();
            Check {
                name: format!("all_reduce_gradients, parameter {i} (f32 mean)"),
                nccl: be.read(g).unwrap(),
                reference: mean,
                rel_tol: 0.0,
            }
        })
        .collect()
}

#[test]
#[ignore]
fn nccl_gradient_average_matches_local_group() {
    assert_checks(on_ranks(gradients));
}

/// Seconds per call of `f` over `iters` calls, both ranks starting together.
fn time_per_call(r: &mut Rank, iters: usize, mut f: impl FnMut(&mut Rank)) -> f64 {
    r.be.sync().unwrap();
    r.barrier.wait();
    let t0 = Instant::now();
    for _ in 0..iters {
        f(r);
    }
    r.be.sync().unwrap();
    t0.elapsed().as_secs_f64() / iters as f64
}

/// Per rank: the checks of graph replays against the reference, and timing lines.
fn graph_replay(r: &mut Rank) -> (Vec<Check>, Vec<String>) {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3000 + r.rank as u64);
    let mut checks = Vec::new();
    let mut lines = Vec::new();
    // DAP transposes of the pair tensor [N_res, N_res, c_z = 128] in bf16, split
    // by rows over 2 ranks: N_res 256 (8.4 MB per rank) and 512 (33.6 MB).
    for n_res in [256usize, 512] {
        let len = n_res / WORLD * n_res * 128;
        let be = &mut r.be;
        let send = be.declare("pair_rows", len, Class::Activation);
        let recv = be.declare("pair_cols", len, Class::Activation);
        let recv_ref = be.declare("pair_cols_ref", len, Class::Activation);
        be.materialize().unwrap();
        // Eager first: NCCL connects the peers at their first exchange.
        be.write(send, &random(&mut rng, len)).unwrap();
        r.nccl.all_to_all(be, send, recv).unwrap();
        be.begin_capture().unwrap();
        r.nccl.all_to_all(be, send, recv).unwrap();
        let graph = be.end_capture().unwrap();
        for replay in 0..3 {
            let be = &mut r.be;
            be.write(send, &random(&mut rng, len)).unwrap();
            be.fill(recv, f32::NAN).unwrap();
            be.replay(&graph).unwrap();
            r.local.all_to_all(be, send, recv_ref).unwrap();
            checks.push(Check {
                name: format!("graph-replayed all_to_all, N_res {n_res}, replay {replay}"),
                nccl: be.read(recv).unwrap(),
                reference: be.read(recv_ref).unwrap(),
                rel_tol: 0.0,
            });
        }
        let iters = 50;
        let eager = time_per_call(r, iters, |r| {
            r.nccl.all_to_all(&mut r.be, send, recv).unwrap()
        });
        let replayed = time_per_call(r, iters, |r| r.be.replay(&graph).unwrap());
        let mb = (len * 2) as f64 / 1e6;
        lines.push(format!(
            "rank {}: all_to_all bf16 pair N_res {n_res}: {mb:.1} MB per rank, eager {:.3} ms \
             ({:.0} GB/s), graph replay {:.3} ms ({:.0} GB/s)",
            r.rank,
            eager * 1e3,
            mb / 1e3 / eager,
            replayed * 1e3,
            mb / 1e3 / replayed,
        ));
        drop(graph);
    }
    // A gradient-sized all-reduce: 64 Mi f32 elements (256 MiB, about the AF2 model's 93 M
    // parameters at 0.7x), averaged in place.
    let be = &mut r.be;
    let n = 64 << 20;
    let g = be.declare("grad_block", n, Class::WeightGrad);
    be.materialize().unwrap();
    be.fill_class(Class::WeightGrad, 1.0).unwrap();
    all_reduce_gradients(&r.nccl, be).unwrap();
    let iters = 10;
    let t = time_per_call(r, iters, |r| {
        all_reduce_gradients(&r.nccl, &mut r.be).unwrap()
    });
    let mb = (r.be.class_len(Class::WeightGrad) * 4) as f64 / 1e6;
    lines.push(format!(
        "rank {}: all_reduce_gradients f32: {mb:.0} MB per rank, {:.3} ms ({:.0} GB/s algorithm bandwidth)",
        r.rank,
        t * 1e3,
        mb / 1e3 / t,
    ));
    let v = r.be.read(g).unwrap();
    checks.push(Check {
        name: "all_reduce_gradients after timing (ones stay ones)".into(),
        nccl: vec![v[0], v[n / 2], v[n - 1]],
        reference: vec![1.0; 3],
        rel_tol: 0.0,
    });
    (checks, lines)
}

#[test]
#[ignore]
fn nccl_all_to_all_graph_replay_and_bandwidth() {
    let per_rank = on_ranks(graph_replay);
    let mut all_checks = Vec::new();
    for (checks, lines) in per_rank {
        for l in lines {
            println!("{l}");
        }
        all_checks.push(checks);
    }
    assert_checks(all_checks);
}
