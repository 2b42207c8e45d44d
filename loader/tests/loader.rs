//! The loader's guarantees, each tested on an in-memory table.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Int64Type, Schema};
use futures::future::BoxFuture;
use scalefold_loader::{
    Delivery, FaultAction, FaultKind, FaultPolicy, Loader, LoaderConfig, LoaderError, MemorySource,
    Plan, PlanConfig, PlanEntry, RetryPolicy, RowGroupInfo, RowGroupSource, RowRef, Sampling,
    SourceError, TransformError,
};

/// `groups` row groups of `rows` rows; column `x` holds the global row id.
fn table(groups: usize, rows: usize) -> MemorySource {
    let schema = Arc::new(Schema::new(vec![Field::new("x", DataType::Int64, false)]));
    let batches = (0..groups)
        .map(|g| {
            let values: Vec<i64> = (0..rows).map(|i| (g * rows + i) as i64).collect();
            RecordBatch::try_new(schema.clone(), vec![Arc::new(Int64Array::from(values))]).unwrap()
        })
        .collect();
    MemorySource::new("numbers", batches)
}

fn plan(source: &MemorySource, rank: usize, world: usize, batch: usize) -> Plan {
    let rows: Vec<u64> = source.row_groups().iter().map(|g| g.rows).collect();
    let config = PlanConfig {
        seed: 7,
        rank,
        world_size: world,
        batch_size: batch,
        sampling: Sampling::Shuffle {
            block_row_groups: 2,
        },
    };
    Plan::new(config, &rows).unwrap()
}

/// A sample: (row read from column x, seed). Sleeps a heavy-tailed time picked
/// from the seed so completion order differs from plan order.
fn slow_identity(row: RowRef<'_>, seed: u64) -> Result<(i64, u64), TransformError> {
    let micros = match seed % 10 {
        0 => 3000,
        1 | 2 => 800,
        _ => 50,
    };
    std::thread::sleep(Duration::from_micros(micros));
    Ok((
        row.batch
            .column(0)
            .as_primitive::<Int64Type>()
            .value(row.index),
        seed,
    ))
}

fn config(window: usize, epochs: u64) -> LoaderConfig {
    LoaderConfig {
        window,
        workers: 4,
        epochs: Some(epochs),
        ..LoaderConfig::default()
    }
}

fn start(source: &MemorySource, plan: Plan, config: LoaderConfig) -> Loader<(i64, u64)> {
    Loader::new(Arc::new(source.clone()), plan, slow_identity, config).unwrap()
}

/// The plan's entries, per sequence number.
fn planned(plan: &Plan, epochs: std::ops::Range<u64>) -> BTreeMap<u64, Vec<PlanEntry>> {
    let b = plan.config().batch_size;
    let mut out = BTreeMap::new();
    for epoch in epochs {
        let entries = plan.rank_epoch(epoch);
        for (i, chunk) in entries.chunks(b).enumerate() {
            out.insert(epoch * plan.batches_per_epoch() + i as u64, chunk.to_vec());
        }
    }
    out
}

/// Number of later batches delivered before each one.
fn overtakes(log: &[u64]) -> Vec<usize> {
    log.iter()
        .enumerate()
        .map(|(i, &s)| log[..i].iter().filter(|&&e| e > s).count())
        .collect()
}

#[test]
fn strict_order_gives_the_plan_exactly() {
    let source = table(6, 10);
    let plan = plan(&source, 0, 1, 2);
    let expected = planned(&plan, 0..2);
    let loader = start(&source, plan, config(1, 2));
    let mut got = Vec::new();
    for batch in loader {
        let batch = batch.unwrap();
        for ((x, seed), entry) in batch.samples.iter().zip(&batch.entries) {
            assert_eq!(*x as u64, entry.row, "the transform saw the planned row");
            assert_eq!(*seed, entry.seed);
        }
        got.push((batch.seq, batch.entries));
    }
    assert_eq!(got, expected.into_iter().collect::<Vec<_>>());
}

#[test]
fn ready_first_delivers_the_plans_multiset_within_the_window() {
    let source = table(8, 12);
    for window in [2, 4, 8] {
        let plan = plan(&source, 0, 1, 1);
        let expected = planned(&plan, 0..2);
        let mut loader = start(&source, plan, config(window, 2));
        let mut got = BTreeMap::new();
        while let Some(batch) = loader.next_batch().unwrap() {
            assert!(
                got.insert(batch.seq, batch.entries).is_none(),
                "batch {} twice",
                batch.seq
            );
        }
        assert_eq!(got, expected);
        let log = loader.delivery_log().to_vec();
        assert!(
            overtakes(&log).iter().all(|&d| d < window),
            "W={window}: {log:?}"
        );
        let metrics = loader.metrics();
        assert_eq!(metrics.reorder_histogram.len(), window);
        assert_eq!(
            metrics.reorder_histogram.iter().sum::<u64>(),
            log.len() as u64
        );
        assert_eq!(metrics.samples, 192);
        assert_eq!(metrics.in_flight_batches, 0);
    }
}

#[test]
fn ready_first_actually_reorders() {
    let source = table(4, 16);
    let plan = plan(&source, 0, 1, 1);
    let mut loader = start(&source, plan, config(8, 1));
    while loader.next_batch().unwrap().is_some() {}
    let log = loader.delivery_log();
    assert!(
        log.windows(2).any(|w| w[1] < w[0]),
        "slow samples were overtaken: {log:?}"
    );
}

#[test]
fn stop_state_resume_ready_first_keeps_the_multiset() {
    let source = table(6, 8);
    let expected = planned(&plan(&source, 0, 1, 1), 0..2);
    for stop in [0usize, 1, 13, 50, 95] {
        let mut first = start(&source, plan(&source, 0, 1, 1), config(4, 2));
        let mut got = BTreeMap::new();
        for _ in 0..stop {
            let batch = first.next_batch().unwrap().unwrap();
            got.insert(batch.seq, batch.entries);
        }
        let state = first.state();
        assert!(state.delivered_ahead.len() < 4);
        let json = serde_json::to_string(&state).unwrap();
        drop(first);
        let resume = LoaderConfig {
            resume: Some(serde_json::from_str(&json).unwrap()),
            ..config(4, 2)
        };
        let second = start(&source, plan(&source, 0, 1, 1), resume);
        for batch in second {
            let batch = batch.unwrap();
            assert!(
                got.insert(batch.seq, batch.entries).is_none(),
                "stop {stop}: batch {} twice",
                batch.seq
            );
        }
        assert_eq!(got, expected, "stop {stop}");
    }
}

#[test]
fn stop_state_resume_replay_gives_the_same_sequence() {
    let source = table(6, 8);
    let mut recorder = start(&source, plan(&source, 0, 1, 1), config(4, 1));
    while recorder.next_batch().unwrap().is_some() {}
    let log: Arc<[u64]> = recorder.delivery_log().into();
    drop(recorder);
    let replay = |resume| LoaderConfig {
        delivery: Delivery::Replay(log.clone()),
        resume,
        ..config(4, 1)
    };
    let full: Vec<u64> = start(&source, plan(&source, 0, 1, 1), replay(None))
        .map(|b| b.unwrap().seq)
        .collect();
    assert_eq!(full[..], log[..], "replay reproduces the recorded order");
    for stop in [0usize, 5, 30, 47] {
        let mut first = start(&source, plan(&source, 0, 1, 1), replay(None));
        let mut seqs: Vec<u64> = (0..stop)
            .map(|_| first.next_batch().unwrap().unwrap().seq)
            .collect();
        let state = first.state();
        assert_eq!(state.log_position, stop as u64);
        drop(first);
        let second = start(&source, plan(&source, 0, 1, 1), replay(Some(state)));
        seqs.extend(second.map(|b| b.unwrap().seq));
        assert_eq!(seqs[..], log[..], "stop {stop}");
    }
}

#[test]
fn a_state_from_another_plan_is_refused() {
    let source = table(2, 8);
    let mut loader = start(&source, plan(&source, 0, 1, 1), config(2, 1));
    loader.next_batch().unwrap();
    let state = loader.state();
    let other = plan(&source, 0, 1, 2);
    let err = Loader::new(
        Arc::new(source.clone()),
        other,
        slow_identity,
        LoaderConfig {
            resume: Some(state),
            ..config(2, 1)
        },
    );
    assert!(matches!(err, Err(LoaderError::StateMismatch(_))));
}

#[test]
fn two_ranks_never_share_a_sample_within_an_epoch() {
    let source = table(5, 9);
    let mut seen: HashSet<(u64, i64)> = HashSet::new();
    let mut counts = Vec::new();
    for rank in 0..2 {
        let loader = start(&source, plan(&source, rank, 2, 2), config(4, 2));
        let mut n = 0;
        for batch in loader {
            let batch = batch.unwrap();
            n += 1;
            for (x, _) in batch.samples {
                assert!(
                    seen.insert((batch.epoch, x)),
                    "row {x} twice in epoch {}",
                    batch.epoch
                );
            }
        }
        counts.push(n);
    }
    assert_eq!(
        counts,
        [22, 22],
        "45 rows = 11 global steps of 4 per epoch, 2 epochs"
    );
}

fn failing_on(
    bad: i64,
    panic: bool,
) -> impl Fn(RowRef<'_>, u64) -> Result<i64, TransformError> + Send + Sync {
    move |row, _seed| {
        let x = row
            .batch
            .column(0)
            .as_primitive::<Int64Type>()
            .value(row.index);
        if x == bad {
            if panic {
                panic!("row {x} is cursed");
            }
            return Err(format!("row {x} is malformed").into());
        }
        Ok(x)
    }
}

#[test]
fn a_panicking_transform_is_reported_and_skipped() {
    let source = table(3, 10);
    let plan = plan(&source, 0, 1, 2);
    let mut loader =
        Loader::new(Arc::new(source), plan, failing_on(17, true), config(4, 1)).unwrap();
    let mut delivered = Vec::new();
    let mut short = None;
    while let Some(batch) = loader.next_batch().unwrap() {
        if batch.samples.len() == 1 {
            short = Some(batch.faults.clone());
        }
        delivered.extend(batch.samples);
    }
    delivered.sort();
    assert_eq!(delivered, (0..30).filter(|&x| x != 17).collect::<Vec<_>>());
    let faults = short.expect("the batch holding row 17 is one sample short");
    assert_eq!(faults.len(), 1);
    assert_eq!(faults[0].row, 17);
    assert_eq!(faults[0].action, FaultAction::Skipped);
    assert!(matches!(&faults[0].kind, FaultKind::Panic(m) if m.contains("cursed")));
    assert_eq!(loader.take_faults().len(), 1);
    assert_eq!(loader.metrics().faults, 1);
}

#[test]
fn an_erroring_row_is_replaced_deterministically() {
    let run = || {
        let source = table(3, 10);
        let plan = plan(&source, 0, 1, 1);
        let config = LoaderConfig {
            fault_policy: FaultPolicy::Replace { attempts: 3 },
            ..config(4, 1)
        };
        let loader = Loader::new(Arc::new(source), plan, failing_on(4, false), config).unwrap();
        let mut out = BTreeMap::new();
        let mut replaced = None;
        for batch in loader {
            let batch = batch.unwrap();
            if let Some(f) = batch.faults.first() {
                assert!(matches!(&f.kind, FaultKind::Error(m) if m.contains("malformed")));
                replaced = Some(f.action);
            }
            out.insert(batch.seq, batch.samples);
        }
        (out, replaced)
    };
    let (a, action) = run();
    let (b, _) = run();
    assert_eq!(a, b, "the same replacement every run");
    assert_eq!(
        a.values().map(Vec::len).sum::<usize>(),
        30,
        "nothing skipped"
    );
    match action {
        Some(FaultAction::Replaced { row }) => assert!(
            row < 10 && row != 4,
            "replacement from the same row group: {row}"
        ),
        other => panic!("expected a replacement, got {other:?}"),
    }
}

#[test]
fn slow_rows_are_reported_and_stalls_end_in_an_error() {
    let source = table(1, 4);
    let plan = plan(&source, 0, 1, 1);
    let transform = |row: RowRef<'_>, _seed: u64| -> Result<i64, TransformError> {
        let x = row
            .batch
            .column(0)
            .as_primitive::<Int64Type>()
            .value(row.index);
        if x == 2 {
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(x)
    };
    let slow = LoaderConfig {
        slow_row: Some(Duration::from_millis(50)),
        ..config(1, 1)
    };
    let mut loader = Loader::new(Arc::new(source.clone()), plan.clone(), transform, slow).unwrap();
    while loader.next_batch().unwrap().is_some() {}
    let faults = loader.take_faults();
    assert_eq!(faults.len(), 1, "{faults:?}");
    assert_eq!(faults[0].row, 2);
    assert!(matches!(faults[0].kind, FaultKind::Slow { seconds } if seconds >= 0.05));

    let hang = |_: RowRef<'_>, _: u64| -> Result<i64, TransformError> {
        std::thread::sleep(Duration::from_millis(600));
        Ok(0)
    };
    let stall = LoaderConfig {
        stall_timeout: Some(Duration::from_millis(100)),
        workers: 1,
        ..config(1, 1)
    };
    let mut loader = Loader::new(Arc::new(source), plan, hang, stall).unwrap();
    assert!(matches!(
        loader.next_batch(),
        Err(LoaderError::Stalled { .. })
    ));
}

#[test]
fn dropping_the_loader_stops_its_threads_promptly() {
    let source = table(4, 8);
    let marker = Arc::new(());
    let held = marker.clone();
    let transform = move |row: RowRef<'_>, _seed: u64| -> Result<usize, TransformError> {
        let _keep = &held;
        std::thread::sleep(Duration::from_millis(2));
        Ok(row.index)
    };
    let config = LoaderConfig {
        epochs: None,
        workers: 3,
        ..LoaderConfig::default()
    };
    let mut loader = Loader::new(
        Arc::new(source.clone()),
        plan(&source, 0, 1, 1),
        transform,
        config,
    )
    .unwrap();
    for _ in 0..40 {
        loader.next_batch().unwrap().unwrap();
    }
    assert!(
        loader.state().cursor > 31,
        "runs past one epoch (32 batches)"
    );
    let t = Instant::now();
    drop(loader);
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "drop took {:?}",
        t.elapsed()
    );
    assert_eq!(
        Arc::strong_count(&marker),
        1,
        "every transform thread has ended"
    );
}

/// A source whose reads always fail.
struct Broken {
    infos: Vec<RowGroupInfo>,
    calls: AtomicUsize,
}
impl RowGroupSource for Broken {
    fn row_groups(&self) -> &[RowGroupInfo] {
        &self.infos
    }
    fn fetch(&self, _index: usize) -> BoxFuture<'_, Result<RecordBatch, SourceError>> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        Box::pin(async {
            Err(SourceError::transient(
                "bucket/shards/00007.parquet",
                "connection reset",
            ))
        })
    }
    fn identity(&self) -> String {
        "broken".into()
    }
}

#[test]
fn failed_reads_are_retried_then_surface_with_the_object_name() {
    let infos = vec![RowGroupInfo {
        object: "bucket/shards/00007.parquet".into(),
        rows: 4,
        bytes: 10,
    }];
    let source = Arc::new(Broken {
        infos,
        calls: AtomicUsize::new(0),
    });
    let plan = Plan::new(
        PlanConfig {
            seed: 1,
            rank: 0,
            world_size: 1,
            batch_size: 1,
            sampling: Sampling::Shuffle {
                block_row_groups: 0,
            },
        },
        &[4],
    )
    .unwrap();
    let retry = RetryPolicy {
        max_attempts: 3,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(2),
    };
    let config = LoaderConfig {
        retry,
        ..config(2, 1)
    };
    let mut loader =
        Loader::new(source.clone(), plan, |_: RowRef<'_>, _: u64| Ok(()), config).unwrap();
    let err = loader.next_batch().unwrap_err();
    assert!(
        err.to_string().contains("bucket/shards/00007.parquet"),
        "{err}"
    );
    assert_eq!(source.calls.load(Ordering::SeqCst), 3);
    assert!(loader.next_batch().is_err(), "the error sticks");
}

#[test]
fn the_prefetch_budget_bounds_held_bytes() {
    let source = table(10, 20);
    let group_bytes = source.row_groups()[0].bytes;
    let plan = plan(&source, 0, 1, 1);
    let config = LoaderConfig {
        prefetch_bytes: group_bytes * 3,
        ..config(4, 1)
    };
    let mut loader = start(&source, plan, config);
    let mut samples = 0;
    while let Some(batch) = loader.next_batch().unwrap() {
        samples += batch.samples.len();
        assert!(loader.metrics().prefetched_bytes <= group_bytes * 3);
    }
    assert_eq!(samples, 200);
    let metrics = loader.metrics();
    assert!(metrics.bytes_fetched >= group_bytes * 10);
}

#[test]
fn weighted_sampling_draws_only_weighted_rows() {
    let source = table(4, 5);
    let mut weights = vec![0.0; 20];
    weights[3] = 1.0;
    weights[12] = 1.0;
    let rows: Vec<u64> = source.row_groups().iter().map(|g| g.rows).collect();
    let sampling = Sampling::Weighted {
        weights: weights.into(),
        samples_per_epoch: 40,
    };
    let plan = Plan::new(
        PlanConfig {
            seed: 3,
            rank: 0,
            world_size: 1,
            batch_size: 4,
            sampling,
        },
        &rows,
    )
    .unwrap();
    let loader = start(&source, plan, config(2, 1));
    let rows: Vec<i64> = loader
        .flat_map(|b| b.unwrap().samples)
        .map(|(x, _)| x)
        .collect();
    assert_eq!(rows.len(), 40);
    assert!(rows.iter().all(|&x| x == 3 || x == 12));
    assert!(rows.contains(&3) && rows.contains(&12));
}
