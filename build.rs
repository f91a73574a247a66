//! Compiles `proto/` with the pure-Rust `protox` (no system `protoc`) and
//! writes the encoded descriptor set that server reflection serves, and the
//! proto3 JSON mapping of the messages (pbjson).

use std::{env, fs, path::PathBuf};

use prost::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // tonic-prost-build 0.14 no longer emits these itself.
    println!("cargo:rerun-if-changed=proto");
    println!("cargo:rerun-if-changed=migrations");

    let mut files = Vec::new();
    for entry in fs::read_dir("proto/kpi/v1")? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "proto") {
            files.push(path);
        }
    }
    files.sort();
    // Error detail messages, so reflection clients can decode our errors.
    files.push(PathBuf::from("proto/google/rpc/error_details.proto"));

    let fds = protox::compile(&files, ["proto"])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out_dir.join("kpi_descriptor.bin"), fds.encode_to_vec())?;

    // The proto3 JSON mapping (serde) of every kpi.v1 message, for the
    // importer's NDJSON and the HTTP face; the well-known types come from
    // pbjson-types, which has theirs.
    pbjson_build::Builder::new()
        .register_descriptors(&fds.encode_to_vec())?
        .build(&[".kpi"])?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        // Message-sized encode buffers: what an open watch holds.
        .codec_path("crate::proto::codec::LeanCodec")
        .compile_fds(fds)?;
    Ok(())
}
