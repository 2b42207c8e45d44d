//! Inputs and dataset on an object store (the in-process `memory://` store always, S3
//! when `SCALEFOLD_TEST_S3_BUCKET` and the `AWS_*` variables point at a server): the same
//! rows as from local folders.

mod job_common;

use job_common::{content, corpus_and_config, run, runtime, small_corpus};
use object_store::{ObjectStoreExt, PutPayload};
use scalefold_ingest::job::IngestConfig;
use scalefold_storage::Location;

fn bases() -> Vec<String> {
    let unique = format!(
        "ingest-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let mut out = vec![format!("memory://ingest-test/{unique}")];
    match std::env::var("SCALEFOLD_TEST_S3_BUCKET") {
        Ok(bucket) => out.push(format!("s3://{bucket}/{unique}")),
        Err(_) if std::env::var("CI").is_ok() => {
            panic!(
                "CI is set but SCALEFOLD_TEST_S3_BUCKET is not: .ci/run must start the S3 server"
            )
        }
        Err(_) => eprintln!("note: SCALEFOLD_TEST_S3_BUCKET unset, skipping S3"),
    }
    out
}

/// Uploads every file under `dir` to `url/<relative path>`.
fn upload(dir: &std::path::Path, url: &str) {
    let location = Location::parse(url).unwrap();
    let mut stack = vec![dir.to_path_buf()];
    runtime().block_on(async {
        while let Some(path) = stack.pop() {
            if path.is_dir() {
                stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
                continue;
            }
            let relative = path
                .strip_prefix(dir)
                .unwrap()
                .to_string_lossy()
                .to_string();
            let bytes = std::fs::read(&path).unwrap();
            location
                .store
                .put(&location.child(&relative), PutPayload::from(bytes))
                .await
                .unwrap();
        }
    });
}

#[test]
fn inputs_and_dataset_on_an_object_store_give_the_local_rows() {
    let dir = tempfile::tempdir().unwrap();
    let local = corpus_and_config(dir.path(), &small_corpus(10, 31));
    run(&local);
    let expected = content(&local.out);
    for base in bases() {
        upload(&dir.path().join("corpus"), &format!("{base}/corpus"));
        let config = IngestConfig {
            structures: format!("{base}/corpus/mmcif"),
            alignments: format!("{base}/corpus/alignments"),
            clusters: Some(format!("{base}/corpus/clusters.txt")),
            out: format!("{base}/ds"),
            ..local.clone()
        };
        let report = run(&config);
        assert_eq!(report.failed(), 0, "{base}: {}", report.summary());
        assert_eq!(content(&config.out), expected, "{base}");
    }
}
