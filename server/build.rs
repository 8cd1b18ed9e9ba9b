//! Rebuilds the server when a migration changes: `sqlx::migrate!` embeds
//! `migrations/*.sql` at build time, and Cargo does not see those files otherwise.

fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
