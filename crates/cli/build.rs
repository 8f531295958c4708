//! The run-time library path of the `tributary` binary: next to the binary first (where an
//! image or an install puts libduckdb), then the folder of the prebuilt DuckDB it was linked
//! with (crates/sink/build.rs). Nothing when DuckDB is compiled in (`bundled-duckdb`).

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TRIBUTARY_DUCKDB_LIBDIR");
    if let Ok(dir) = std::env::var("DEP_TRIBUTARY_DUCKDB_LIBDIR") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN:{dir}");
    }
}
