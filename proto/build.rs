//! Compiles the pate.v1 protocol with a vendored `protoc`, so no system
//! protobuf compiler is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=proto/pate/v1/pate.proto");
    tonic_prost_build::configure().compile_protos(&["proto/pate/v1/pate.proto"], &["proto"])?;
    Ok(())
}
