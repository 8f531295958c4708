//! Where the prebuilt DuckDB library is (scripts/duckdb.sh puts it there): checked here, so that
//! a build without it stops with what to do instead of a linker error, and handed on as the
//! run-time library path of the binaries that link it (this crate's tests; the `tributary`
//! binary reads it as `DEP_TRIBUTARY_DUCKDB_LIBDIR` in crates/cli/build.rs). Nothing to do
//! with the `bundled-duckdb` feature, which compiles DuckDB into the binary.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DUCKDB_LIB_DIR");
    if std::env::var_os("CARGO_FEATURE_BUNDLED_DUCKDB").is_some() {
        return;
    }
    let dir = std::env::var("DUCKDB_LIB_DIR").unwrap_or_default();
    let lib = Path::new(&dir).join("libduckdb.so");
    // The link resolved: the library's own folder in the cache, the same for every checkout.
    let Some(real) = lib.canonicalize().ok().filter(|p| p.is_file()) else {
        panic!(
            "no prebuilt DuckDB library at {}: run scripts/duckdb.sh (make does), or build \
             DuckDB from source with --features tributary-sink/bundled-duckdb",
            lib.display()
        );
    };
    println!("cargo:rerun-if-changed={}", real.display());
    let libdir = real.parent().unwrap_or(Path::new("/")).display().to_string();
    println!("cargo:rustc-link-arg=-Wl,-rpath,{libdir}");
    println!("cargo:libdir={libdir}");
}
