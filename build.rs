//! Rebuilds the crate when a migration is added or changed: refinery embeds `sql/` at compile time.

fn main() {
    println!("cargo:rerun-if-changed=sql");
}
