//! Compiles the C++ shim for what tch does not expose: a custom autograd function for activation
//! checkpointing (csrc/checkpoint.cpp) and a fused CPU dropout (csrc/dropout.cpp).

fn main() {
    // torch-sys (`links = "tch"`) publishes the libtorch lib folder to its direct dependents.
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").expect(
        "torch-sys did not report DEP_TCH_LIBTORCH_LIB; is libtorch set up (`cargo xtask setup`)?",
    );
    let root = std::path::Path::new(&lib)
        .parent()
        .expect("libtorch lib folder has a parent")
        .to_path_buf();
    println!("cargo:rerun-if-changed=csrc/checkpoint.cpp");
    println!("cargo:rerun-if-changed=csrc/dropout.cpp");
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .include(root.join("include/torch/csrc/api/include"))
        .flag("-std=c++17")
        .flag("-D_GLIBCXX_USE_CXX11_ABI=1")
        .flag("-DGLOG_USE_GLOG_EXPORT")
        .file("csrc/checkpoint.cpp")
        .file("csrc/dropout.cpp")
        // The dropout kernel is hot in training; test builds want it fast too.
        .opt_level(3)
        .compile("ragtune_models_shim");
}
