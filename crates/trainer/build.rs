//! Compiles the small C++ shim that reaches what tch does not expose: per-device autocast with a
//! chosen dtype (tch's own `autocast` is CUDA-only and fp16) and torch's fused AdamW kernel.

fn main() {
    // torch-sys (`links = "tch"`) publishes the libtorch lib folder to its direct dependents.
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").expect(
        "torch-sys did not report DEP_TCH_LIBTORCH_LIB; is libtorch set up (`cargo xtask setup`)?",
    );
    let root = std::path::Path::new(&lib)
        .parent()
        .expect("libtorch lib folder has a parent")
        .to_path_buf();
    println!("cargo:rerun-if-changed=csrc/autocast.cpp");
    println!("cargo:rerun-if-changed=csrc/fused_adamw.cpp");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/autocast.cpp")
        .file("csrc/fused_adamw.cpp")
        .compile("ragtune_trainer_shim");
}
