//! Compiles `proto/` into Rust: prost messages, tonic clients and servers,
//! ProtoJSON (serde) impls via pbjson, and a descriptor set for reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "proto/dynabridge/v1/common.proto",
    "proto/dynabridge/v1/errors.proto",
    "proto/dynabridge/v1/events.proto",
    "proto/dynabridge/v1/command_service.proto",
    "proto/dynabridge/v1/query_service.proto",
    "proto/dynabridge/v1/admin_service.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // A vendored protoc keeps the build free of system packages. An explicit
    // PROTOC still wins.
    let protoc = match std::env::var_os("PROTOC") {
        Some(path) => PathBuf::from(path),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let mut config = prost_build::Config::new();
    config.protoc_executable(protoc);
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let descriptor_path = out_dir.join("dynabridge_descriptor.bin");

    tonic_prost_build::configure()
        .file_descriptor_set_path(&descriptor_path)
        // prost's codec, except that a request that does not decode is
        // INVALID_ARGUMENT (src/codec.rs).
        .codec_path("crate::codec::Codec")
        // Well-known types with ProtoJSON (serde) support, so that the event
        // envelope serialises exactly as the protobuf JSON mapping says.
        .compile_well_known_types(true)
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_with_config(config, PROTOS, &["proto"])?;

    let descriptors = std::fs::read(&descriptor_path)?;
    pbjson_build::Builder::new()
        .register_descriptors(&descriptors)?
        .build(&[".dynabridge.v1"])?;

    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
