//! Compiles `proto/verbatim/v1/*.proto` with tonic-prost-build into OUT_DIR and
//! writes the file descriptor set that server reflection serves.
use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var_os("PROTOC").is_none() {
        // SAFETY: build scripts are single-threaded at this point.
        unsafe { std::env::set_var("PROTOC", protoc_bin_vendored::protoc_bin_path()?) };
    }
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);
    let protos = ["proto/verbatim/v1/feedback.proto"];
    tonic_prost_build::configure()
        .file_descriptor_set_path(out_dir.join("verbatim_descriptor.bin"))
        .codec_path("crate::grpc::codec::StrictProstCodec")
        .compile_protos(&protos, &["proto"])?;
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    Ok(())
}
