//! `cargo xtask`: project automation.
//!
//! - `cargo xtask reproduce` — run every experiment under `experiments/` (resuming finished
//!   runs) and write `REPORT.md` with tables and figures.
//! - `cargo xtask run FILE.toml` — the same for one experiment file of your own.
//! - `cargo xtask report` — rebuild the report from the runs on disk (merging shards).
//! - `cargo xtask list` — the experiments and their run counts.
//! - `cargo xtask isa` — the instruction sets this machine can run (CI tests each).

use clap::{Args, Parser, Subcommand};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::time::Instant;
use xtask::{Options, Shard, load_all, load_experiment, report, runs_of, sweep};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "implicit-em automation")]
struct Cli {
    #[command(subcommand)]
    cmd: Option<Cmd>,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run every experiment (resuming) and write the report.
    Reproduce(Flags),
    /// Run one experiment file and write its report.
    Run {
        /// The experiment file (TOML).
        file: PathBuf,
        #[command(flatten)]
        flags: Flags,
    },
    /// Rebuild the report from the runs found under --out (all shards).
    Report(Flags),
    /// List the experiments and their runs.
    List(Flags),
    /// Print the instruction sets this machine can run, one per line.
    Isa,
}

#[derive(Args, Clone)]
struct Flags {
    /// Smoke scale: every experiment in a few minutes (not evidence).
    #[arg(long)]
    quick: bool,
    /// Seeds per cell (overrides the files).
    #[arg(long)]
    seeds: Option<usize>,
    /// Output directory [default: results/full or results/quick].
    #[arg(long)]
    out: Option<PathBuf>,
    /// Worker threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Run only this shard of the sweep, `I/N` (0-based), e.g. from a Slurm array index.
    #[arg(long)]
    shard: Option<String>,
    /// Only the experiment with this name.
    #[arg(long)]
    only: Option<String>,
    /// List the runs instead of running them.
    #[arg(long)]
    list: bool,
    /// MNIST directory (IDX files, optionally .gz); also read from IEM_MNIST_DIR. Without
    /// it the MNIST studies (E3, E6 at MNIST scale, E8) are skipped.
    #[arg(long)]
    mnist: Option<PathBuf>,
    /// Fashion-MNIST directory; also read from IEM_FASHION_MNIST_DIR.
    #[arg(long)]
    fashion_mnist: Option<PathBuf>,
    /// With `report`: also copy the report and its figures to docs/results.md and
    /// docs/figures/ (the committed results of the latest full run).
    #[arg(long)]
    publish: bool,
}

fn options(f: &Flags) -> Result<Options, String> {
    let out = f.out.clone().unwrap_or_else(|| {
        xtask::repo_root().join("results").join(if f.quick { "quick" } else { "full" })
    });
    Ok(Options {
        quick: f.quick,
        seeds: f.seeds,
        out,
        threads: f
            .threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())),
        shard: f.shard.as_deref().map(Shard::parse).transpose()?,
        progress: std::io::stderr().is_terminal(),
        dirs: iem_spec::run::DataDirs {
            mnist: iem_data::idx::resolve_dir(f.mnist.as_deref(), iem_data::idx::MNIST_ENV),
            fashion_mnist: iem_data::idx::resolve_dir(
                f.fashion_mnist.as_deref(),
                iem_data::idx::FASHION_ENV,
            ),
        },
    })
}

fn select(
    all: Vec<iem_spec::Experiment>,
    only: &Option<String>,
) -> Result<Vec<iem_spec::Experiment>, String> {
    match only {
        None => Ok(all),
        Some(n) => {
            let names: Vec<String> = all.iter().map(|e| e.name.clone()).collect();
            let v: Vec<_> = all.into_iter().filter(|e| &e.name == n).collect();
            if v.is_empty() {
                Err(format!("--only {n}: no such experiment (have: {})", names.join(", ")))
            } else {
                Ok(v)
            }
        }
    }
}

fn list(exps: &[iem_spec::Experiment], opts: &Options, runs: bool) {
    for e in exps {
        let r = runs_of(e, opts);
        let done = r.iter().filter(|s| xtask::finished(&opts.out, s).is_some()).count();
        println!("{:<16} {:>6} runs ({done} finished)  {}", e.name, r.len(), e.title);
        if runs {
            for s in r {
                println!("    {}", s.rel_dir());
            }
        }
    }
}

fn run_and_report(exps: Vec<iem_spec::Experiment>, f: &Flags) -> Result<(), String> {
    let opts = options(f)?;
    if f.list {
        list(&exps, &opts, true);
        return Ok(());
    }
    let skipped: usize = exps.iter().map(|e| xtask::skipped_of(e, &opts)).sum();
    if skipped > 0 {
        eprintln!(
            "note: {skipped} runs need MNIST or Fashion-MNIST and are skipped: pass --mnist DIR / --fashion-mnist DIR (or set {} / {})",
            iem_data::idx::MNIST_ENV,
            iem_data::idx::FASHION_ENV
        );
    }
    let t = Instant::now();
    let s = sweep(&exps, &opts)?;
    println!(
        "{:<16} {:>7} {:>9} {:>7} {:>7} {:>9}",
        "experiment", "runs", "resumed", "ran", "failed", "seconds"
    );
    for (name, n, before, ran, failed, secs) in &s.per_experiment {
        println!("{name:<16} {n:>7} {before:>9} {ran:>7} {failed:>7} {secs:>9.1}");
    }
    for e in s.failures.iter().take(20) {
        eprintln!("failed: {e}");
    }
    if opts.shard.is_some() {
        println!(
            "shard done in {:.1} s; merge with `cargo xtask report --out {}` once every shard has finished",
            t.elapsed().as_secs_f64(),
            opts.out.display()
        );
        return Ok(());
    }
    let (md, _) = report::build(&exps, &opts)?;
    let path = opts.out.join("REPORT.md");
    iem_train::checkpoint::write_atomic(&path, md.as_bytes()).map_err(|e| e.to_string())?;
    println!("wrote {} ({:.1} s)", path.display(), t.elapsed().as_secs_f64());
    if !s.failures.is_empty() {
        return Err(format!("{} runs failed", s.failures.len()));
    }
    Ok(())
}

fn main() {
    let cli = Cli::parse();
    let res = match cli.cmd {
        Some(Cmd::Isa) => {
            for isa in iem_simd::Isa::available() {
                println!("{isa}");
            }
            Ok(())
        }
        Some(Cmd::Reproduce(f)) => {
            load_all().and_then(|a| select(a, &f.only)).and_then(|e| run_and_report(e, &f))
        }
        None => {
            let f = Flags {
                quick: false,
                seeds: None,
                out: None,
                threads: None,
                shard: None,
                only: None,
                list: false,
                mnist: None,
                fashion_mnist: None,
                publish: false,
            };
            load_all().and_then(|e| run_and_report(e, &f))
        }
        Some(Cmd::Run { file, flags }) => {
            load_experiment(&file).and_then(|e| run_and_report(vec![e], &flags))
        }
        Some(Cmd::Report(f)) => (|| {
            let exps = select(load_all()?, &f.only)?;
            let opts = options(&f)?;
            let (md, _) = report::build(&exps, &opts)?;
            let path = opts.out.join("REPORT.md");
            iem_train::checkpoint::write_atomic(&path, md.as_bytes()).map_err(|e| e.to_string())?;
            println!("wrote {}", path.display());
            if f.publish {
                let docs = xtask::repo_root().join("docs");
                let figs = docs.join("figures");
                std::fs::create_dir_all(&figs).map_err(|e| e.to_string())?;
                for entry in std::fs::read_dir(opts.out.join("figures"))
                    .map_err(|e| e.to_string())?
                    .flatten()
                {
                    std::fs::copy(entry.path(), figs.join(entry.file_name()))
                        .map_err(|e| e.to_string())?;
                }
                iem_train::checkpoint::write_atomic(&docs.join("results.md"), md.as_bytes())
                    .map_err(|e| e.to_string())?;
                println!("published to {}", docs.join("results.md").display());
            }
            Ok(())
        })(),
        Some(Cmd::List(f)) => (|| {
            let exps = select(load_all()?, &f.only)?;
            list(&exps, &options(&f)?, f.list);
            Ok(())
        })(),
    };
    if let Err(e) = res {
        eprintln!("error: {e}");
        std::process::exit(1);
    }
}
