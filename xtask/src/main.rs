//! `cargo xtask`: project automation.
//!
//! - `cargo xtask reproduce` — regenerate every experiment and the report (no experiments
//!   yet).
//! - `cargo xtask isa` — print the instruction sets this machine can run, one per line
//!   (CI runs the kernel tests under each).

#[cfg(test)]
mod tidy;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("isa") => {
            for isa in iem_simd::Isa::available() {
                println!("{isa}");
            }
        }
        Some("reproduce") | None => {
            println!("no experiments yet: the experiment engine is issue 7");
        }
        Some(other) => {
            eprintln!("unknown command {other:?}; commands: reproduce, isa");
            std::process::exit(2);
        }
    }
}
