//! Compiles proto/contrail.proto with protox (pure Rust, so no protoc on the machine) and
//! generates the tonic service; the descriptor set is kept for server reflection.
use std::path::PathBuf;

use prost::Message as _;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/contrail.proto");
    let fds = protox::compile(["proto/contrail.proto"], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("contrail_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(fds)?;
    Ok(())
}
