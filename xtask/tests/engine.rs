//! The engine end to end: quick mode's summary tables are insta snapshots, and a sweep
//! killed mid-way resumes without redoing or corrupting finished runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};
use xtask::{Options, load_all, report, sweep};

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("iem-xtask-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

#[test]
fn quick_mode_summary_snapshots() {
    let out = tmp("quick");
    let opts = Options {
        quick: true,
        seeds: None,
        out: out.clone(),
        threads: 2,
        shard: None,
        progress: false,
        dirs: Default::default(),
    };
    let exps = load_all().unwrap();
    let s = sweep(&exps, &opts).unwrap();
    assert!(s.failures.is_empty(), "{:?}", s.failures);
    let (md, summary) = report::build(&exps, &opts).unwrap();
    assert!(md.contains("**Answer"));
    for fig in [
        "e0_em.svg",
        "e1_autoencoder_lines.svg",
        "e1_classifier_lines.svg",
        "e2_pass_forward_loss.svg",
        "e3_depth_depth.svg",
        "e4_volume_usage.svg",
        "e7_cost.svg",
    ] {
        let svg = std::fs::read_to_string(out.join("figures").join(fig)).unwrap();
        assert!(svg.contains("<svg") && svg.contains("<text"), "{fig} has no text");
    }
    // Metrics run on a checkpoint written by iem-train: reload one run's model and recompute
    // its hyperplane statistics from the saved weights alone.
    let run =
        xtask::runs_of(&exps.iter().find(|e| e.name == "e1_autoencoder").unwrap().clone(), &opts)
            .remove(0);
    let dir = out.join(run.rel_dir());
    let model: iem_train::Model =
        iem_train::checkpoint::load(&dir.join("checkpoint.bin"), None).unwrap();
    let w = model.layers[0].effective_weights().unwrap();
    let b = model.layers[0].bias().unwrap().to_vec();
    let hs = iem_metrics::hyperplane::hyperplane_stats(&w, &b, 0.99, 0.1).unwrap();
    let stored = xtask::finished(&out, &run).unwrap();
    assert_eq!(hs.duplicates as f64, stored.metrics["duplicates"]);
    assert_eq!(hs.mean_abs_cos, stored.metrics["mean_abs_cos"]);
    for (name, rows) in &summary {
        insta::with_settings!({ info => &"quick mode; values rounded to 2 significant digits", omit_expression => true }, {
            insta::assert_snapshot!(format!("quick_{name}"), rows.join("\n"));
        });
    }
    std::fs::remove_dir_all(&out).unwrap();
}

const SMALL: &str = r#"
name = "resume_probe"
title = "resume probe"
question = "test"
runner = "autoencoder"
seeds = 8
epochs = 150
batch = 32
lr = 1e-3
widths = [8]
datasets = [{ kind = "blobs", k = 3, per_class = 64, std = 0.3, radius = 2.0 }]
activations = [{ kind = "relu" }, { kind = "softmax" }]
"#;

fn finished_runs(out: &Path) -> Vec<(PathBuf, std::time::SystemTime, String)> {
    let mut v = Vec::new();
    let root = out.join("resume_probe");
    let Ok(cells) = std::fs::read_dir(&root) else { return v };
    for ds in cells.flatten() {
        for k in std::fs::read_dir(ds.path()).into_iter().flatten().flatten() {
            for a in std::fs::read_dir(k.path()).into_iter().flatten().flatten() {
                for c in std::fs::read_dir(a.path()).into_iter().flatten().flatten() {
                    for s in std::fs::read_dir(c.path()).into_iter().flatten().flatten() {
                        let m = s.path().join("metrics.json");
                        if let Ok(meta) = std::fs::metadata(&m) {
                            let text = std::fs::read_to_string(&m).unwrap();
                            let v2: serde_json::Value = serde_json::from_str(&text)
                                .expect("a finished run's metrics.json is complete JSON");
                            v.push((m, meta.modified().unwrap(), v2["metrics"].to_string()));
                        }
                    }
                }
            }
        }
    }
    v.sort();
    v
}

#[test]
fn killed_sweep_resumes_without_redoing_finished_runs() {
    let out = tmp("resume");
    std::fs::create_dir_all(&out).unwrap();
    let spec = out.join("probe.toml");
    std::fs::write(&spec, SMALL).unwrap();
    let run = || {
        Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(["run", spec.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap()
    };
    // Start, wait for the first finished run, kill at once.
    let mut child = run();
    let t = Instant::now();
    while finished_runs(&out).is_empty() && t.elapsed() < Duration::from_secs(120) {
        std::thread::sleep(Duration::from_millis(2));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let before = finished_runs(&out);
    assert!(
        !before.is_empty() && before.len() < 16,
        "kill landed mid-sweep: {} of 16 finished",
        before.len()
    );
    std::thread::sleep(Duration::from_millis(20));
    // Resume to the end.
    assert!(run().wait().unwrap().success());
    let after = finished_runs(&out);
    assert_eq!(after.len(), 16);
    for (p, mtime, metrics) in &before {
        let (_, m2, metrics2) = after.iter().find(|(q, _, _)| q == p).unwrap();
        assert_eq!(mtime, m2, "{} was redone", p.display());
        assert_eq!(metrics, metrics2);
    }
    // An uninterrupted run gives the same numbers.
    let fresh = tmp("fresh");
    let status = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["run", spec.to_str().unwrap(), "--out", fresh.to_str().unwrap(), "--threads", "2"])
        .stdout(std::process::Stdio::null())
        .status()
        .unwrap();
    assert!(status.success());
    let clean: Vec<String> = finished_runs(&fresh).into_iter().map(|r| r.2).collect();
    let resumed: Vec<String> = after.into_iter().map(|r| r.2).collect();
    assert_eq!(clean, resumed, "resumed results differ from an uninterrupted run (with 2 threads)");
    std::fs::remove_dir_all(&out).unwrap();
    std::fs::remove_dir_all(&fresh).unwrap();
}

#[test]
fn shards_partition_the_sweep_and_bad_flags_are_errors() {
    assert!(xtask::Shard::parse("2/2").is_err());
    assert!(xtask::Shard::parse("x").is_err());
    let exps = load_all().unwrap();
    let mk = |shard| Options {
        quick: true,
        seeds: None,
        out: PathBuf::from("/nonexistent"),
        threads: 1,
        shard,
        progress: false,
        dirs: Default::default(),
    };
    let total: usize = exps.iter().map(|e| xtask::runs_of(e, &mk(None)).len()).sum();
    assert!(total > 0);
    // every run index belongs to exactly one of 3 shards
    let mut count = 0;
    for i in 0..3 {
        let s = xtask::Shard { index: i, count: 3 };
        count += (0..total).filter(|g| g % s.count == s.index).count();
    }
    assert_eq!(count, total);
    // an experiment file with an unknown field is rejected, naming the field and the file
    let dir = tmp("badspec");
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join("bad.toml");
    std::fs::write(
        &p,
        "name = 'x'\ntitle = 't'\nquestion = 'q'\nrunner = 'identity'\nseeds = 1\nwidth = [2]\n",
    )
    .unwrap();
    let e = xtask::load_experiment(&p).unwrap_err();
    assert!(e.contains("width") && e.contains("bad.toml"), "{e}");
    std::fs::remove_dir_all(&dir).unwrap();
}
