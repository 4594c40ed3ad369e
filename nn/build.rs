//! Compiles the fused CUDA kernels (`kernels/*.cu`) to PTX with `nvcc --ptx` when the `cuda`
//! feature is on; src/fast/cuda/mod.rs embeds the PTX. The target is `compute_$CUDA_COMPUTE_CAP`
//! (default 80: PTX is compiled on for newer cards by the driver, so sm_80 code runs on
//! A100, RTX 30/40 and H100/H200 alike; scripts/build-cuda.sh sets it). With `ci-check` (a
//! type check without a CUDA toolkit) the PTX is left empty.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=kernels");
    println!("cargo:rerun-if-env-changed=CUDA_COMPUTE_CAP");
    if std::env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let ptx = out.join("fused.ptx");
    if std::env::var_os("CARGO_FEATURE_CI_CHECK").is_some() {
        std::fs::write(&ptx, "").expect("cannot write the empty PTX");
        return;
    }
    let cap = std::env::var("CUDA_COMPUTE_CAP").unwrap_or_else(|_| "80".into());
    let cap = cap.trim().trim_start_matches("sm_").replace('.', "");
    let status = std::process::Command::new("nvcc")
        .arg(format!("--gpu-architecture=compute_{cap}"))
        .args(["--ptx", "-O3", "-o"])
        .arg(&ptx)
        .arg("kernels/fused.cu")
        .status()
        .expect("`nvcc` did not start: put the CUDA toolkit's bin on PATH (scripts/build-cuda.sh)");
    assert!(status.success(), "nvcc could not compile kernels/fused.cu");
}
