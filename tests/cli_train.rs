//! `scalefold train` and `scalefold eval` end to end through the binary on a tiny
//! synthetic dataset: train with checkpoints while a child `eval --watch` process
//! scores each one, resume to more steps, evaluate again; bad configs and a
//! `--resume` without checkpoints fail with clear messages and a non-zero exit.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

mod support;
use support::{ingest_command, run_ok, scalefold, synth_command};

/// A dataset of 8 short chains with shallow MSAs.
fn dataset(dir: &Path) -> String {
    let corpus = dir.join("corpus");
    run_ok(synth_command(&corpus, 8, 5).args([
        "--min-length",
        "12",
        "--max-length",
        "30",
        "--max-msa-depth",
        "20",
    ]));
    let ds = dir.join("ds");
    run_ok(&mut ingest_command(&corpus, &ds));
    ds.display().to_string()
}

/// `train` on the tiny preset with small settings for a test.
fn train(ds: &str, out: &Path, steps: u64) -> Command {
    let mut cmd = scalefold();
    cmd.args(["train", "--data", ds, "--config", "tiny", "--out"])
        .arg(out)
        .args(["--steps", &steps.to_string(), "--quiet"])
        .args(["--set", "run.checkpoint_every=1", "--set", "data.workers=1"])
        .args(["--set", "eval.max_chains=2"]);
    cmd
}

fn metrics_steps(out: &Path) -> Vec<u64> {
    std::fs::read_to_string(out.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert!(v["loss"].as_f64().unwrap().is_finite(), "{l}");
            assert!(v["terms"]["fape"].as_f64().is_some(), "{l}");
            v["step"].as_u64().unwrap()
        })
        .collect()
}

#[test]
fn train_checkpoint_resume_and_eval_through_the_cli() {
    let dir = tempfile::tempdir().unwrap();
    let ds = dataset(dir.path());
    let out = dir.path().join("run");

    // Two steps, a checkpoint after each; a child process evaluates them.
    let stdout = run_ok(train(&ds, &out, 2).args(["--eval-data", &ds])).stdout;
    let text = String::from_utf8_lossy(&stdout);
    assert!(text.contains("trained 2 steps"), "{text}");
    assert_eq!(metrics_steps(&out), [0, 1]);
    for f in ["ckpt-00000001", "ckpt-00000002", "loss.png", "done"] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    assert_eq!(
        std::fs::read_to_string(out.join("latest")).unwrap(),
        "ckpt-00000002"
    );
    // The checkpoint opens as plain safetensors with the four groups.
    let bytes = std::fs::read(out.join("ckpt-00000002/model.safetensors")).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    for group in ["params/", "adam_m/", "adam_v/", "ema/"] {
        assert!(
            header
                .as_object()
                .unwrap()
                .keys()
                .any(|k| k.starts_with(group)),
            "no {group} tensors"
        );
    }
    // The watcher finishes once it has scored every checkpoint after `done`.
    let deadline = Instant::now() + Duration::from_secs(300);
    while !["ckpt-00000001", "ckpt-00000002"]
        .iter()
        .all(|c| out.join(c).join("eval.json").exists())
    {
        assert!(
            Instant::now() < deadline,
            "the eval process did not score both checkpoints:\n{}",
            std::fs::read_to_string(out.join("eval.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let report: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("ckpt-00000002/eval.json")).unwrap())
            .unwrap();
    assert_eq!(report["step"], 2);
    let lddt = report["mean_lddt_ca"].as_f64().unwrap();
    assert!((0.0..=1.0).contains(&lddt), "{report}");
    assert_eq!(report["chains"].as_array().unwrap().len(), 2);

    // Resume to three steps: one more step and checkpoint, metrics continue.
    let text =
        String::from_utf8_lossy(&run_ok(train(&ds, &out, 3).arg("--resume")).stdout).to_string();
    assert!(text.contains("trained 3 steps (1 in this run"), "{text}");
    assert_eq!(metrics_steps(&out), [0, 1, 2]);
    assert!(out.join("ckpt-00000003").exists());

    // Eval without --watch scores only the new checkpoint.
    let text = String::from_utf8_lossy(
        &run_ok(
            scalefold()
                .args(["eval", "--data", &ds, "--checkpoints"])
                .arg(&out)
                .args(["--max-chains", "2"]),
        )
        .stdout,
    )
    .to_string();
    assert_eq!(
        text.lines().filter(|l| l.starts_with("step")).count(),
        1,
        "{text}"
    );
    assert!(out.join("ckpt-00000003/eval.json").exists());

    // Training into a folder with checkpoints without --resume is refused.
    let err = train(&ds, &out, 4).output().unwrap();
    assert!(!err.status.success());
    assert!(String::from_utf8_lossy(&err.stderr).contains("--resume"));
}

#[test]
fn bad_configs_fail_with_the_key_named() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("run");
    let fail = |args: &[&str]| -> String {
        let o = scalefold()
            .args(["train", "--data", "nowhere", "--out"])
            .arg(&out)
            .args(args)
            .output()
            .unwrap();
        assert!(!o.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&o.stderr).to_string()
    };
    let e = fail(&["--set", "model.c_zz=3"]);
    assert!(
        e.contains("`model.c_zz`") && e.contains("unknown key"),
        "{e}"
    );
    let e = fail(&["--set", "optimizer.lr=fast"]);
    assert!(
        e.contains("`optimizer.lr`") && e.contains("expected"),
        "{e}"
    );
    let e = fail(&["--config", "no_such.toml"]);
    assert!(e.contains("no_such.toml") && e.contains("tiny"), "{e}");
    let e = fail(&["--steps", "1"]);
    assert!(e.contains("nowhere"), "{e}");
    let e = fail(&["--resume"]);
    assert!(e.contains("nowhere") || e.contains("no checkpoint"), "{e}");
    let e = fail(&["--set", "run.cuda_graphs=true", "--device", "cpu"]);
    assert!(
        e.contains("run.cuda_graphs") && e.contains("--device cuda"),
        "{e}"
    );
}
