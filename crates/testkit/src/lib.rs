//! Test support: where the assets and the project venv are, and how to ask a Python reference
//! implementation (under `tests/reference/`) for the expected values of a parity test.
//!
//! Parity tests never carry hand-written expected numbers: they send their inputs to the real
//! library through these scripts at test time.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The workspace root, from this crate's fixed place in `crates/`.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .expect("workspace root")
}

/// A folder under `assets/`, as `cargo xtask setup` extracted it. Panics with the fix if it is missing.
pub fn asset(name: &str) -> PathBuf {
    let path = root().join("assets").join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask setup` (or `cargo xtask test`)",
        path.display()
    );
    path
}

/// The project venv's Python, which has torch and every reference library.
pub fn python() -> PathBuf {
    let path = root().join(".venv/bin/python");
    assert!(
        path.exists(),
        "{} is missing: run `cargo xtask setup`",
        path.display()
    );
    path
}

/// Runs `tests/reference/<script>` with `input` as JSON on stdin and parses the JSON it prints.
/// Hugging Face libraries run offline and load only local folders.
pub fn reference(script: &str, input: &serde_json::Value) -> serde_json::Value {
    let script_path = root().join("tests/reference").join(script);
    let mut child = Command::new(python())
        .arg(&script_path)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_OFFLINE", "1")
        .env("TOKENIZERS_PARALLELISM", "false")
        .env("PYTHONHASHSEED", "0")
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("could not start {}: {e}", script_path.display()));
    let payload = serde_json::to_vec(input).expect("input serializes");
    let mut stdin = child.stdin.take().expect("stdin");
    let writer = std::thread::spawn(move || stdin.write_all(&payload));
    let out = child.wait_with_output().expect("reference script ran");
    writer.join().expect("writer thread").expect("wrote stdin");
    assert!(
        out.status.success(),
        "{} failed:\n{}",
        script_path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{} printed no JSON ({e}):\n{}",
            script_path.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

/// A fresh empty folder under the system temp dir, unique to this process and `tag`. Folders
/// that earlier, finished test processes left under the same tag are removed first: a test keeps
/// its scratch for inspection after a failure, but runs do not pile up (some hold a 500 MB model).
pub fn scratch(tag: &str) -> PathBuf {
    let temp = std::env::temp_dir();
    let prefix = format!("ragtune-test-{tag}-");
    if let Ok(entries) = std::fs::read_dir(&temp) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let finished = name
                .strip_prefix(&prefix)
                .and_then(|pid| pid.parse::<u32>().ok())
                .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
            if finished && cfg!(target_os = "linux") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let dir = temp.join(format!("{prefix}{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}
