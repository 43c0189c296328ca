//! GGUF reader vs llama.cpp's `gguf` Python package: metadata, shapes and bit-identical
//! dequantization, on the real SmolLM2 file and on a synthetic file with every supported type;
//! plus truncated and corrupted copies, which must give clear errors, never panics.

use ragtune_models::gguf::GgufFile;
use ragtune_models::ModelError;
use ragtune_testkit::{asset, reference, scratch};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

fn smollm2() -> PathBuf {
    asset("smollm2-135m-instruct").join("SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn f32_sha256(values: &[f32]) -> String {
    let mut hasher = Sha256::new();
    for v in values {
        hasher.update(v.to_le_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn assert_tensors_match(gguf: &GgufFile, expected: &Value) {
    let expected = expected.as_object().expect("tensors object");
    assert!(!expected.is_empty());
    for (name, want) in expected {
        let info = gguf.tensor_info(name).expect("tensor present");
        assert_eq!(
            info.ggml_type.name(),
            want["type"].as_str().unwrap(),
            "{name}"
        );
        let shape: Vec<i64> = serde_json::from_value(want["shape"].clone()).unwrap();
        assert_eq!(info.torch_shape(), shape, "{name}");
        let values = gguf.dequantize(name).unwrap();
        let head: Vec<f32> = serde_json::from_value(want["head"].clone()).unwrap();
        assert_eq!(&values[..head.len()], &head[..], "{name}: first values");
        assert_eq!(
            f32_sha256(&values),
            want["sha256"].as_str().unwrap(),
            "{name} ({}): dequantized values are not bit-identical to gguf.quants.dequantize",
            want["type"]
        );
    }
}

#[test]
fn smollm2_dequantizes_bit_identically_to_the_gguf_package() {
    let path = smollm2();
    let gguf = GgufFile::open(&path).unwrap();
    assert_eq!(gguf.version, 3);
    assert_eq!(gguf.tensors.len(), 272);
    // One tensor or more of every type in the file: Q8_0 embeddings, Q4_1 matrices, F32 norms.
    let names = [
        "token_embd.weight",
        "blk.0.attn_q.weight",
        "blk.0.attn_k.weight",
        "blk.29.ffn_down.weight",
        "blk.3.attn_norm.weight",
        "output_norm.weight",
    ];
    let expected = reference(
        "gguf_ref.py",
        &json!({"op": "dequantize", "path": path, "tensors": names}),
    );
    let types: std::collections::BTreeSet<String> = names
        .iter()
        .map(|n| gguf.tensor_info(n).unwrap().ggml_type.name())
        .collect();
    assert_eq!(
        types.into_iter().collect::<Vec<_>>(),
        ["F32", "Q4_1", "Q8_0"]
    );
    assert_tensors_match(&gguf, &expected["tensors"]);
}

#[test]
fn synthetic_file_of_every_type_matches_the_gguf_package() {
    let dir = scratch("gguf-synthetic");
    let expected = reference(
        "gguf_ref.py",
        &json!({"op": "synthetic", "dir": dir, "seed": 7}),
    );
    let gguf = GgufFile::open(Path::new(expected["path"].as_str().unwrap())).unwrap();
    for (key, want) in expected["metadata"].as_object().unwrap() {
        let got = gguf
            .get(key)
            .unwrap_or_else(|| panic!("metadata {key} missing"));
        assert_eq!(&got.to_json(), want, "metadata {key}");
    }
    let types: Vec<String> = gguf.tensors.iter().map(|t| t.ggml_type.name()).collect();
    assert_eq!(types, ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q8_0"]);
    assert_tensors_match(&gguf, &expected["tensors"]);
}

fn open_err(path: &Path) -> String {
    let err = GgufFile::open(path).unwrap_err();
    assert!(matches!(err, ModelError::Format { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&path.display().to_string()),
        "error does not name the file: {msg}"
    );
    msg
}

#[test]
fn truncated_and_corrupted_copies_fail_with_clear_errors() {
    let original = std::fs::read(smollm2()).unwrap();
    let gguf = GgufFile::open(&smollm2()).unwrap();
    let data_offset = gguf.data_offset as usize;
    let dir = scratch("gguf-corrupt");
    let path = dir.join("bad.gguf");

    // Cuts inside the header: magic, counts, metadata strings, the token array, tensor infos.
    for cut in [
        0,
        3,
        7,
        20,
        100,
        1_000,
        50_000,
        700_000,
        data_offset - 200,
        data_offset - 1,
    ] {
        std::fs::write(&path, &original[..cut]).unwrap();
        let msg = open_err(&path);
        assert!(
            msg.contains("truncated") || msg.contains("not a GGUF"),
            "cut at {cut}: {msg}"
        );
    }

    // A cut inside the data section: the header reads, and each tensor past the cut is refused.
    let cut = data_offset + 10_000_000;
    std::fs::write(&path, &original[..cut]).unwrap();
    let truncated = GgufFile::open(&path).unwrap();
    let last = truncated.tensors.iter().max_by_key(|t| t.offset).unwrap();
    let msg = truncated.dequantize(&last.name).unwrap_err().to_string();
    assert!(
        msg.contains("past the end of the file") && msg.contains(&last.name),
        "{msg}"
    );
    let err = ragtune_models::llama_load::load_gguf(&path, tch::Device::Cpu, tch::Kind::Float)
        .err()
        .expect("loading a truncated model fails");
    assert!(err.to_string().contains("truncated?"), "{err}");

    let header = &original[..data_offset];
    let write_patched = |patch: &dyn Fn(&mut Vec<u8>)| {
        let mut bytes = header.to_vec();
        patch(&mut bytes);
        std::fs::write(&path, &bytes).unwrap();
    };

    write_patched(&|b| b[4..8].copy_from_slice(&1u32.to_le_bytes()));
    assert!(open_err(&path).contains("version 1"));

    // Tensor count in the quadrillions: refused before any allocation.
    write_patched(&|b| b[8..16].copy_from_slice(&(1u64 << 50).to_le_bytes()));
    assert!(open_err(&path).contains("corrupted"));

    // The first key's length made huge.
    write_patched(&|b| b[24..32].copy_from_slice(&u64::MAX.to_le_bytes()));
    assert!(open_err(&path).contains("claims"));

    let info_at = |name: &str| {
        let mut needle = (name.len() as u64).to_le_bytes().to_vec();
        needle.extend(name.as_bytes());
        header
            .windows(needle.len())
            .rposition(|w| w == needle.as_slice())
            .unwrap()
            + needle.len()
    };
    // token_embd: n_dims (u32) = 2, two u64 dims, then its type.
    let embd = info_at("token_embd.weight");
    write_patched(&|b| b[embd..embd + 4].copy_from_slice(&9u32.to_le_bytes()));
    assert!(open_err(&path).contains("9 dims"));

    let type_at = embd + 4 + 16;
    let mut patched = original[..data_offset + 4096].to_vec();
    patched[type_at..type_at + 4].copy_from_slice(&12u32.to_le_bytes());
    std::fs::write(&path, &patched).unwrap();
    let file = GgufFile::open(&path).unwrap();
    let msg = file
        .dequantize("token_embd.weight")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("Q4_K") && msg.contains("token_embd.weight"),
        "{msg}"
    );

    std::fs::remove_dir_all(&dir).unwrap();
}
