//! `scalefold synth`, `ingest` and `commit` through the CLI: an ingest killed with
//! SIGKILL mid-way and re-run gives the same dataset as an uninterrupted run; failures
//! set the exit status; workers plus `commit` give the same dataset.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures::TryStreamExt;
use scalefold_ingest::schema::batch_to_rows;
use scalefold_storage::Dataset;

mod support;
use support::{run_ok, scalefold};

fn synth(out: &Path, chains: usize, seed: u64) {
    run_ok(support::synth_command(out, chains, seed).args([
        "--max-length",
        "150",
        "--max-msa-depth",
        "600",
    ]));
}

fn ingest_command(corpus: &Path, out: &Path) -> Command {
    let mut cmd = support::ingest_command(corpus, out);
    cmd.args(["--shard-bytes", "20000"]);
    cmd
}

/// Per source key, the (chain id, features checksum) of its rows.
fn content(url: &Path) -> BTreeMap<String, Vec<(String, u64)>> {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let batches: Vec<_> = rt.block_on(async {
        let dataset = Dataset::open(url.to_str().unwrap()).await.unwrap();
        dataset.stream(None).try_collect().await.unwrap()
    });
    let mut out: BTreeMap<String, Vec<(String, u64)>> = BTreeMap::new();
    for batch in &batches {
        for row in batch_to_rows(batch).unwrap() {
            out.entry(row.source_key.clone())
                .or_default()
                .push((row.record.chain_id.clone(), row.features_checksum()));
        }
    }
    out.values_mut().for_each(|v| v.sort());
    out
}

/// Number of finished shards in all partial manifests (0 while there is none).
fn finished_shards(ds: &Path) -> usize {
    let Ok(parts) = std::fs::read_dir(ds.join("_parts")) else {
        return 0;
    };
    parts
        .filter_map(|p| std::fs::read(p.ok()?.path()).ok())
        .filter_map(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter_map(|v| v["manifest"]["shards"].as_array().map(Vec::len))
        .sum()
}

#[test]
fn killed_ingest_resumes_to_the_same_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    synth(&corpus, 80, 3);
    let reference = dir.path().join("reference");
    assert!(
        ingest_command(&corpus, &reference)
            .status()
            .unwrap()
            .success()
    );
    let expected = content(&reference);
    assert_eq!(expected.values().map(Vec::len).sum::<usize>(), 80);

    let ds = dir.path().join("resumed");
    // Kill it twice at different points, then let it finish.
    for shards_before_kill in [2, 12] {
        let mut child = ingest_command(&corpus, &ds).spawn().unwrap();
        let started = Instant::now();
        while finished_shards(&ds) < shards_before_kill {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the job finished before it could be killed"
            );
            assert!(
                started.elapsed() < Duration::from_secs(120),
                "no shard written"
            );
            std::thread::sleep(Duration::from_millis(2));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        assert!(
            !ds.join("manifest.json").exists(),
            "the job was killed before its end"
        );
    }
    let output = ingest_command(&corpus, &ds).output().unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(content(&ds), expected);
    let verify = scalefold().arg("verify").arg(&ds).output().unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
}

#[test]
fn failures_set_the_exit_status_and_workers_commit_to_the_same_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = dir.path().join("corpus");
    synth(&corpus, 12, 8);
    let single = dir.path().join("single");
    assert!(ingest_command(&corpus, &single).status().unwrap().success());
    let split = dir.path().join("split");
    for worker in ["0", "1"] {
        let status = ingest_command(&corpus, &split)
            .args(["--worker", worker, "--workers", "2"])
            .status()
            .unwrap();
        assert!(status.success());
    }
    assert!(
        !split.join("manifest.json").exists(),
        "workers do not commit"
    );
    let status = scalefold()
        .arg("commit")
        .arg(&split)
        .stdout(Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    assert_eq!(content(&split), content(&single));

    // A malformed structure file: the job finishes the rest and exits non-zero.
    let first = std::fs::read_dir(corpus.join("mmcif"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "cif"))
        .unwrap();
    std::fs::write(&first, b"data_broken\nloop_\n_atom_site.id\n").unwrap();
    let report = dir.path().join("report.json");
    let output = ingest_command(&corpus, &dir.path().join("broken"))
        .arg("--report")
        .arg(&report)
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("1 input(s) failed"), "{stderr}");
    let json: serde_json::Value = serde_json::from_slice(&std::fs::read(&report).unwrap()).unwrap();
    let lines = json["lines"].as_array().unwrap();
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["kind"], "failed");
    assert!(
        lines[0]["input"]
            .as_str()
            .unwrap()
            .ends_with(first.file_name().unwrap().to_str().unwrap())
    );
}
