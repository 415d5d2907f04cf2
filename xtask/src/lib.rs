//! The experiment engine behind `cargo xtask`: load experiment files, expand them into runs,
//! execute the runs that are not finished (resumable, shardable, atomic), and write the
//! report.

pub mod figures;
pub mod report;
mod studies;

#[cfg(test)]
mod tidy;

use iem_simd::Par;
use iem_spec::run::DataDirs;
use iem_spec::{Experiment, RunSpec};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// The repository root (the parent of `xtask/`).
pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the repository")
        .to_path_buf()
}

/// Loads one experiment file, with a message naming the file on error.
pub fn load_experiment(path: &Path) -> Result<Experiment, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// Every experiment under `experiments/`, sorted by file name.
pub fn load_all() -> Result<Vec<Experiment>, String> {
    let dir = repo_root().join("experiments");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    files.sort();
    files.iter().map(|p| load_experiment(p)).collect()
}

/// A shard `I/N`: this process runs the runs whose index is `I` modulo `N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    /// Index (0-based).
    pub index: usize,
    /// Count.
    pub count: usize,
}

impl Shard {
    /// Parses `I/N` with `0 ≤ I < N`.
    pub fn parse(s: &str) -> Result<Shard, String> {
        let (a, b) = s.split_once('/').ok_or_else(|| format!("--shard {s:?}: expected I/N"))?;
        let (index, count): (usize, usize) = (
            a.trim().parse().map_err(|_| format!("--shard {s:?}: bad I"))?,
            b.trim().parse().map_err(|_| format!("--shard {s:?}: bad N"))?,
        );
        if count == 0 || index >= count {
            return Err(format!("--shard {s:?}: need 0 ≤ I < N"));
        }
        Ok(Shard { index, count })
    }
}

/// How a sweep runs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Smoke scale.
    pub quick: bool,
    /// Override the seed count of every experiment.
    pub seeds: Option<usize>,
    /// Output root.
    pub out: PathBuf,
    /// Worker threads (runs in parallel, one thread each).
    pub threads: usize,
    /// This machine's shard.
    pub shard: Option<Shard>,
    /// Show progress bars (only when stderr is a terminal).
    pub progress: bool,
    /// Where MNIST and Fashion-MNIST live; runs that need a directory not given are
    /// skipped (and the report says so).
    pub dirs: DataDirs,
}

/// What is stored beside each run once it finished.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stored {
    /// The run's resolved configuration.
    pub spec: RunSpec,
    /// Its metrics.
    pub metrics: BTreeMap<String, f64>,
    /// Wall time in seconds (informational; never compared).
    pub seconds: f64,
}

fn all_runs(exp: &Experiment, opts: &Options) -> Vec<RunSpec> {
    let mut e = exp.clone();
    if let Some(s) = opts.seeds {
        e.seeds = s;
        e.quick.seeds = Some(s);
    }
    e.runs(opts.quick)
}

/// The runs of `exp` under `opts` (seed override applied; runs whose data directory was
/// not given left out).
pub fn runs_of(exp: &Experiment, opts: &Options) -> Vec<RunSpec> {
    all_runs(exp, opts).into_iter().filter(|r| opts.dirs.has(r)).collect()
}

/// How many runs of `exp` are left out because their data directory was not given.
pub fn skipped_of(exp: &Experiment, opts: &Options) -> usize {
    all_runs(exp, opts).iter().filter(|r| !opts.dirs.has(r)).count()
}

/// A finished run's record, if the folder holds one written for exactly this spec.
pub fn finished(root: &Path, spec: &RunSpec) -> Option<Stored> {
    let p = root.join(spec.rel_dir()).join("metrics.json");
    let s: Stored = serde_json::from_str(&std::fs::read_to_string(p).ok()?).ok()?;
    (s.spec == *spec).then_some(s)
}

fn write_json<T: Serialize>(path: &Path, v: &T) -> Result<(), String> {
    let text = serde_json::to_vec_pretty(v).map_err(|e| e.to_string())?;
    iem_train::checkpoint::write_atomic(path, &text).map_err(|e| e.to_string())
}

/// Executes one run and writes its folder: checkpoint, artefacts, config, then metrics
/// (the completion marker), each atomically. A run killed at any moment leaves either no
/// `metrics.json` (and is redone) or a complete one.
pub fn execute_and_store(root: &Path, spec: &RunSpec, dirs: &DataDirs) -> Result<Stored, String> {
    let dir = root.join(spec.rel_dir());
    let t = Instant::now();
    let res = iem_spec::run::execute(spec, Par::Seq, dirs)
        .map_err(|e| format!("{}: {e}", spec.rel_dir()))?;
    let config = serde_json::to_string(spec).map_err(|e| e.to_string())?;
    let hash = iem_spec::run::hash(&config);
    if let Some(m) = &res.model {
        iem_train::checkpoint::save(&dir.join("checkpoint.bin"), m, hash)
            .map_err(|e| e.to_string())?;
    }
    write_json(&dir.join("artifacts.json"), &res.artifacts)?;
    write_json(&dir.join("config.json"), spec)?;
    let stored =
        Stored { spec: spec.clone(), metrics: res.metrics, seconds: t.elapsed().as_secs_f64() };
    write_json(&dir.join("metrics.json"), &stored)?;
    Ok(stored)
}

/// Summary of a sweep.
#[derive(Clone, Debug, Default)]
pub struct SweepSummary {
    /// Per experiment: (runs in this shard, already finished, run now, failed).
    pub per_experiment: Vec<(String, usize, usize, usize, usize, f64)>,
    /// Failure messages.
    pub failures: Vec<String>,
}

/// Runs every unfinished run of `exps` (this shard's part), in parallel over runs.
pub fn sweep(exps: &[Experiment], opts: &Options) -> Result<SweepSummary, String> {
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(opts.threads.max(1))
        .build()
        .map_err(|e| e.to_string())?;
    let mut summary = SweepSummary::default();
    let mut global = 0usize;
    for exp in exps {
        let mut mine = Vec::new();
        for r in runs_of(exp, opts) {
            let take = opts.shard.is_none_or(|s| global % s.count == s.index);
            global += 1;
            if take {
                mine.push(r);
            }
        }
        let todo: Vec<&RunSpec> =
            mine.iter().filter(|r| finished(&opts.out, r).is_none()).collect();
        let done_before = mine.len() - todo.len();
        let bar = if opts.progress && !todo.is_empty() {
            let b = ProgressBar::with_draw_target(
                Some(todo.len() as u64),
                ProgressDrawTarget::stderr(),
            );
            b.set_style(
                ProgressStyle::with_template("{prefix:>16} [{bar:30}] {pos}/{len} runs, ETA {eta}")
                    .unwrap()
                    .progress_chars("=> "),
            );
            b.set_prefix(exp.name.clone());
            b
        } else {
            ProgressBar::hidden()
        };
        let failed = AtomicUsize::new(0);
        let t = Instant::now();
        let errs: Vec<String> = pool.install(|| {
            todo.par_iter()
                .filter_map(|r| {
                    let res = execute_and_store(&opts.out, r, &opts.dirs);
                    bar.inc(1);
                    match res {
                        Ok(_) => None,
                        Err(e) => {
                            failed.fetch_add(1, Ordering::Relaxed);
                            Some(e)
                        }
                    }
                })
                .collect()
        });
        bar.finish_and_clear();
        summary.failures.extend(errs);
        summary.per_experiment.push((
            exp.name.clone(),
            mine.len(),
            done_before,
            todo.len(),
            failed.load(Ordering::Relaxed),
            t.elapsed().as_secs_f64(),
        ));
    }
    Ok(summary)
}

/// All finished runs of an experiment found under `root` (any shard wrote them), in the
/// order of the experiment's grid.
pub fn collect(root: &Path, exp: &Experiment, opts: &Options) -> Vec<Stored> {
    runs_of(exp, opts).iter().filter_map(|r| finished(root, r)).collect()
}
