//! Experiment files: strict parsing of every data set and block kind with precise errors,
//! grid expansion, the greedy block conversion, and the runners on tiny problems.

use iem_simd::Par;
use iem_spec::run::{DataDirs, execute};
use iem_spec::{Block, DataSpec, Experiment, Method, RealData, Runner};

fn parse(s: &str) -> Result<Experiment, String> {
    toml::from_str::<Experiment>(s).map_err(|e| e.to_string())
}

const BASE: &str = r#"
name = "t"
title = "t"
question = "Q2"
runner = "network"
seeds = 2
epochs = 4
batch = 32
lr = 1e-2
widths = [6]
"#;

#[test]
fn data_and_blocks_parse_with_precise_errors() {
    let e = parse(&format!(
        "{BASE}datasets = [{{ kind = \"digits\" }}, {{ kind = \"mnist\", train = 100 }}, {{ kind = \"moons\", per_class = 20, noise = 0.1 }}]\nactivations = [{{ kind = \"softmax\" }}, {{ kind = \"proto_attention\", tau = 0.5 }}]\ndepths = [1, 3]\nmethods = [\"greedy\", \"e2e\"]"
    ))
    .unwrap();
    assert_eq!(e.datasets[0], DataSpec::Real(RealData::Digits));
    assert_eq!(e.datasets[1].name(), "mnist100");
    assert_eq!(e.datasets[1].needs_dir(), Some("mnist"));
    assert!(matches!(e.activations[1], Block::Attention(_)));
    let runs = e.runs(false);
    assert_eq!(runs.len(), 3 * 2 * 2 * 2 * 2);
    assert!(runs[0].cell.ends_with("/D1/greedy"), "{}", runs[0].cell);
    assert_eq!(runs[0].method, Some(Method::Greedy));
    // Misspelt fields name themselves, whichever kind they belong to.
    let err = parse(&format!("{BASE}datasets = [{{ kind = \"mnist\", trian = 5 }}]")).unwrap_err();
    assert!(err.contains("trian"), "{err}");
    let err =
        parse(&format!("{BASE}datasets = [{{ kind = \"moons\", per_class = 3, nois = 0.1 }}]"))
            .unwrap_err();
    assert!(err.contains("nois"), "{err}");
    let err =
        parse(&format!("{BASE}activations = [{{ kind = \"proto_attention\", tau = 1.0, k = 3 }}]"))
            .unwrap_err();
    assert!(err.contains('k'), "{err}");
    let err = parse(&format!("{BASE}activations = [{{ kind = \"softmaks\" }}]")).unwrap_err();
    assert!(err.contains("softmaks"), "{err}");
    // A spec written to JSON (as each run's metrics.json holds it) reads back equal.
    let json = serde_json::to_string(&runs[1]).unwrap();
    assert_eq!(serde_json::from_str::<iem_spec::RunSpec>(&json).unwrap(), runs[1]);
}

#[test]
fn mnist_without_a_directory_is_a_clear_error() {
    let e = parse(&format!(
        "{BASE}datasets = [{{ kind = \"mnist\" }}]\nactivations = [{{ kind = \"relu\" }}]"
    ))
    .unwrap();
    let run = &e.runs(true)[0];
    assert!(!DataDirs::default().has(run));
    let err = execute(run, Par::Seq, &DataDirs::default()).unwrap_err();
    assert!(err.contains("--mnist"), "{err}");
    let dirs = DataDirs { mnist: Some("/nonexistent/mnist".into()), fashion_mnist: None };
    let err = execute(run, Par::Seq, &dirs).unwrap_err();
    assert!(err.contains("/nonexistent/mnist"), "{err}");
}

#[test]
fn every_network_method_and_block_runs_and_measures() {
    let e = parse(&format!(
        "{BASE}datasets = [{{ kind = \"blobs\", k = 3, per_class = 30, std = 0.3, radius = 2.0 }}]\nactivations = [{{ kind = \"softmax\" }}, {{ kind = \"relu\" }}, {{ kind = \"proto_attention\", tau = 1.0 }}]\ndepths = [2]\nmethods = [\"greedy\", \"greedy_finetune\", \"e2e\"]"
    ))
    .unwrap();
    for run in e.runs(false).iter().filter(|r| r.seed == 0) {
        let r = execute(run, Par::Seq, &DataDirs::default())
            .unwrap_or_else(|e| panic!("{}: {e}", run.cell));
        for key in [
            "test_accuracy",
            "probe_acc_l2",
            "cka_l1",
            "ari_l2",
            "cells_l2",
            "drift_l1",
            "resp_entropy_pre_l1",
        ] {
            let v = r.metrics.get(key).unwrap_or_else(|| panic!("{}: no {key}", run.cell));
            assert!(v.is_finite(), "{}: {key} = {v}", run.cell);
        }
        // Greedy training keeps the blocks frozen after pretraining: no drift.
        if run.method == Some(Method::Greedy) {
            assert_eq!(r.metrics["drift_l1"], 0.0, "{}", run.cell);
            assert!((r.metrics["cka_l1"] - 1.0).abs() < 1e-9, "{}", run.cell);
        }
    }
    // Same spec, same numbers.
    let run = &e.runs(false)[1];
    let (a, b) = (
        execute(run, Par::Seq, &DataDirs::default()).unwrap(),
        execute(run, Par::Rayon(2), &DataDirs::default()).unwrap(),
    );
    assert_eq!(a.metrics, b.metrics);
}

#[test]
fn volume_runner_tells_the_two_collapses_apart() {
    let e = parse(
        r#"
name = "v"
title = "v"
question = "Q4"
runner = "volume"
seeds = 1
epochs = 60
batch = 64
lr = 1e-2
widths = [4]
datasets = [{ kind = "digits" }]
controls = [
  { kind = "volume", name = "none" },
  { kind = "volume", name = "var_tc", controls = [{ kind = "variance", weight = 1.0, eps = 1e-6 }, { kind = "decorrelation", weight = 1.0 }] },
  { kind = "volume", name = "usage", controls = [{ kind = "usage_entropy", weight = 1.0 }] },
  { kind = "sae", l1 = 0.01 },
]
"#,
    )
    .unwrap();
    let runs = e.runs(false);
    assert_eq!(runs[0].runner, Runner::Volume);
    let res: Vec<_> =
        runs.iter().map(|r| execute(r, Par::Seq, &DataDirs::default()).unwrap()).collect();
    // The LSE alone drives every distance to 0: metric collapse, all units dead.
    assert_eq!(res[0].metrics["collapse_metric"], 1.0, "{:?}", res[0].metrics);
    assert_eq!(res[0].metrics["dead_units"], 4.0);
    // The variance term prevents it.
    assert_eq!(res[1].metrics["collapse_metric"], 0.0, "{:?}", res[1].metrics);
    assert!(res[1].metrics["dead_units"] < 4.0);
    for r in &res {
        assert!(r.metrics["probe_accuracy"] > 0.0);
        let steps = r.artifacts["step"].as_array().unwrap();
        assert_eq!(steps.len(), 60);
    }
}

#[test]
fn cost_runner_times_every_block() {
    let e = parse(
        r#"
name = "c"
title = "c"
question = "E7"
runner = "cost"
seeds = 1
widths = [5, 17]
activations = [{ kind = "proto_attention", tau = 1.0 }, { kind = "solu" }]
"#,
    )
    .unwrap();
    for run in e.runs(false) {
        let r = execute(&run, Par::Seq, &DataDirs::default()).unwrap();
        assert!(r.metrics["us_per_sample"] > 0.0);
    }
}
