//! `cargo xtask`: project automation.
fn main() {
    println!("no experiments yet");
}
