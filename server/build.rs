//! Compiles `proto/tessera/v1/licensing.proto` into the gRPC service and client (`src/grpc`). protox parses the
//! .proto in Rust, so building needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../proto");
    println!("cargo:rerun-if-changed={}", root.display());
    let files = protox::compile(["tessera/v1/licensing.proto"], [&root])?;
    tonic_prost_build::configure().build_server(true).build_client(true).compile_fds(files)?;
    Ok(())
}
