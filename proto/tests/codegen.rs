//! Regenerates the committed Rust code from the `.proto` files and fails if it
//! differs. `CUTOVER_REGENERATE=1 cargo test -p cutover-proto --test codegen`
//! rewrites `src/gen/` instead.

use std::fs;
use std::path::{Path, PathBuf};

use prost::Message;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn generate(out: &Path) {
    let protos = ["cutover/v1/probe.proto", "cutover/v1/admin.proto"];
    let fds = protox::compile(protos, [root()]).expect("the .proto files compile");
    fs::write(out.join("cutover.v1.bin"), fds.encode_to_vec()).expect("write descriptor set");
    tonic_prost_build::configure()
        .out_dir(out)
        .emit_rerun_if_changed(false)
        .build_transport(true)
        .compile_fds(fds)
        .expect("code generation succeeds");
}

fn listing(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .expect("read dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

#[test]
fn committed_code_matches_the_proto_files() {
    let committed = root().join("src/gen");
    if std::env::var_os("CUTOVER_REGENERATE").is_some() {
        for name in listing(&committed) {
            fs::remove_file(committed.join(name)).expect("remove stale file");
        }
        generate(&committed);
        return;
    }
    let fresh = tempfile::tempdir().expect("temp dir");
    generate(fresh.path());
    assert_eq!(
        listing(fresh.path()),
        listing(&committed),
        "src/gen holds other files than the generator writes; regenerate with CUTOVER_REGENERATE=1"
    );
    for name in listing(fresh.path()) {
        let want = fs::read(fresh.path().join(&name)).expect("read generated");
        let have = fs::read(committed.join(&name)).expect("read committed");
        assert!(
            want == have,
            "src/gen/{name} is stale: run CUTOVER_REGENERATE=1 cargo test -p cutover-proto --test codegen"
        );
    }
}
