//! Device selection: CUDA whenever it is there, unless the user names a device.

use crate::{ModelError, Result};
use tch::Device;

/// Parses `--device`: `auto` (CUDA if available, else CPU), `cpu`, `cuda`, `cuda:N` or `mps`.
pub fn parse_device(spec: &str) -> Result<Device> {
    match spec.trim().to_ascii_lowercase().as_str() {
        "" | "auto" => Ok(Device::cuda_if_available()),
        "cpu" => Ok(Device::Cpu),
        "cuda" => cuda(0),
        "mps" => Ok(Device::Mps),
        other => match other.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(index)) => cuda(index),
            _ => Err(ModelError::Invalid(format!(
                "device `{spec}`: expected auto, cpu, cuda, cuda:N or mps"
            ))),
        },
    }
}

fn cuda(index: usize) -> Result<Device> {
    let count = tch::Cuda::device_count() as usize;
    if index >= count {
        return Err(ModelError::Invalid(format!(
            "device cuda:{index} requested, but this machine has {count} CUDA device(s); use --device auto or cpu"
        )));
    }
    Ok(Device::Cuda(index))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_and_rejects_garbage() {
        assert_eq!(parse_device("cpu").unwrap(), Device::Cpu);
        assert_eq!(parse_device("auto").unwrap(), Device::cuda_if_available());
        assert!(parse_device("tpu")
            .unwrap_err()
            .to_string()
            .contains("expected auto"));
        if !tch::Cuda::is_available() {
            assert!(parse_device("cuda:0").is_err());
        }
    }
}
