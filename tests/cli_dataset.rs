//! `scalefold inspect` and `scalefold verify` on a real dataset written by the storage crate.

use std::sync::Arc;

use arrow::array::{ArrayRef, Int32Array, RecordBatch, StringArray};
use scalefold_storage::{DatasetWriter, WriterOptions};

mod support;
use support::scalefold;

fn write_dataset(path: &std::path::Path) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let batch = |i: i32| {
            RecordBatch::try_from_iter([
                (
                    "id",
                    Arc::new(StringArray::from(vec![format!("k{i}")])) as ArrayRef,
                ),
                (
                    "length",
                    Arc::new(Int32Array::from(vec![10 + i])) as ArrayRef,
                ),
            ])
            .unwrap()
        };
        let options = WriterOptions {
            shard_bytes: 1,
            length_column: Some("length".into()),
            ..WriterOptions::default()
        };
        let mut writer = DatasetWriter::create(path.to_str().unwrap(), batch(0).schema(), options)
            .await
            .unwrap();
        for i in 0..5 {
            writer
                .write_source(&format!("k{i}"), &batch(i))
                .await
                .unwrap();
        }
        writer.finish_and_commit().await.unwrap();
    });
}

#[test]
fn inspect_and_verify_a_dataset() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dir.path().join("ds");
    write_dataset(&ds);

    let out = scalefold()
        .args(["inspect", "--json"])
        .arg(&ds)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let json: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(json["rows"], 5);
    assert_eq!(json["shards"], 5);
    assert_eq!(json["length_stats"]["min"], 10);
    assert_eq!(json["length_stats"]["max"], 14);

    let out = scalefold().arg("inspect").arg(&ds).output().unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("rows         5"), "{text}");

    let out = scalefold().arg("verify").arg(&ds).output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("5 of 5 shards verified"));

    // Corrupt one shard: verify fails and names it.
    let manifest: serde_json::Value =
        serde_json::from_slice(&std::fs::read(ds.join("manifest.json")).unwrap()).unwrap();
    let name = manifest["shards"][2]["name"].as_str().unwrap().to_string();
    let mut bytes = std::fs::read(ds.join(&name)).unwrap();
    bytes[10] ^= 0xff;
    std::fs::write(ds.join(&name), bytes).unwrap();
    let out = scalefold().arg("verify").arg(&ds).output().unwrap();
    assert!(!out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(&format!("BAD  {name}")), "{stdout}");
    assert!(stdout.contains("4 of 5 shards verified"));
}

#[test]
fn inspect_of_a_missing_dataset_fails_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = scalefold()
        .arg("inspect")
        .arg(dir.path().join("absent"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("manifest.json"), "{stderr}");
}

/// A store that cannot be reached: retried (briefly, here), then an error naming the object.
#[test]
fn unreachable_store_is_an_error_naming_the_object() {
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port(); // the listener is dropped: nothing listens there
    let start = std::time::Instant::now();
    let out = scalefold()
        .args(["inspect", "s3://nowhere/some/dataset"])
        .env(
            "AWS_ENDPOINT_URL",
            format!("http://127.0.0.1:{closed_port}"),
        )
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_ACCESS_KEY_ID", "x")
        .env("AWS_SECRET_ACCESS_KEY", "x")
        .env("AWS_REGION", "us-east-1")
        .env("SCALEFOLD_MAX_RETRIES", "2")
        .env("SCALEFOLD_RETRY_TIMEOUT_S", "5")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("some/dataset/manifest.json"), "{stderr}");
    assert!(start.elapsed() < std::time::Duration::from_secs(30));
}
