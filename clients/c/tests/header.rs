//! The checked-in C header is what cbindgen makes of the sources now.

use std::path::Path;

/// include/keyseat.h matches a fresh cbindgen run over src/ (with
/// `KEYSEAT_BLESS=1`, rewrites it instead of failing).
#[test]
fn the_checked_in_header_is_current() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    let config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    // From src/lib.rs, whose `mod` lines cbindgen follows: no `cargo
    // metadata` run (which could touch Cargo.lock or the network) for a
    // crate whose C items are all its own.
    let builder = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"));
    let mut fresh = Vec::new();
    builder
        .generate()
        .expect("cbindgen fails on src/")
        .write(&mut fresh);
    let path = dir.join("include/keyseat.h");
    let checked_in = std::fs::read(&path).unwrap_or_default();
    if fresh == checked_in {
        return;
    }
    if std::env::var_os("KEYSEAT_BLESS").is_some() {
        std::fs::write(&path, &fresh).expect("writing include/keyseat.h");
        return;
    }
    panic!(
        "clients/c/include/keyseat.h is stale: the sources' C API changed. Regenerate it with \
         KEYSEAT_BLESS=1 cargo test -p keyseat-c --test header, and review the diff"
    );
}
