//! Mixed precision: bf16 autocast around the forward pass, master weights and optimizer state in fp32.
//!
//! tch 0.24's `tch::autocast` only flips the CUDA-wide flag and keeps its default fp16, and does
//! nothing on CPU. The shim in `csrc/autocast.cpp` calls libtorch's per-device
//! `at::autocast::set_autocast_{enabled,dtype}`, which gives bf16 autocast on CUDA and on CPU.

use serde::{Deserialize, Serialize};
use tch::Device;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Precision {
    /// Everything in fp32.
    Fp32,
    /// bf16 autocast for the forward pass (matmuls, linear layers, convolutions in bf16).
    Bf16,
    /// bf16 on CUDA, and on CPUs with native bf16 arithmetic (AVX512-BF16 or AMX), where it is
    /// several times faster; fp32 elsewhere.
    Auto,
}

impl Precision {
    /// Resolves `Auto` for `device`: true when the forward pass should run under bf16 autocast.
    pub fn uses_bf16(self, device: Device) -> bool {
        match self {
            Precision::Fp32 => false,
            Precision::Bf16 => true,
            Precision::Auto => match device {
                Device::Cuda(_) => true,
                Device::Cpu => cpu_has_native_bf16(),
                _ => false,
            },
        }
    }
}

/// Whether this CPU does bf16 arithmetic natively (Linux `/proc/cpuinfo` flags).
pub fn cpu_has_native_bf16() -> bool {
    std::fs::read_to_string("/proc/cpuinfo")
        .map(|info| {
            info.lines()
                .filter(|line| line.starts_with("flags"))
                .any(|line| {
                    line.split_whitespace()
                        .any(|flag| flag == "avx512_bf16" || flag == "amx_bf16")
                })
        })
        .unwrap_or(false)
}

extern "C" {
    fn ragtune_autocast_enter(device_type: i32, dtype: i32) -> bool;
    fn ragtune_autocast_exit(device_type: i32, previous: bool);
    fn ragtune_autocast_is_enabled(device_type: i32) -> bool;
}

// c10::DeviceType and c10::ScalarType values.
const DEVICE_CPU: i32 = 0;
const DEVICE_CUDA: i32 = 1;
const SCALAR_BFLOAT16: i32 = 15;

fn device_type(device: Device) -> Option<i32> {
    match device {
        Device::Cpu => Some(DEVICE_CPU),
        Device::Cuda(_) => Some(DEVICE_CUDA),
        _ => None,
    }
}

/// Runs `f` under bf16 autocast on `device` when `enabled` (and the device has autocast), else plainly.
/// Run only the forward pass in it; call `backward` outside, as PyTorch recommends.
pub fn autocast_bf16<T>(device: Device, enabled: bool, f: impl FnOnce() -> T) -> T {
    let Some(device_type) = device_type(device).filter(|_| enabled) else {
        return f();
    };
    // Restores the previous state even if `f` panics.
    struct Guard {
        device_type: i32,
        previous: bool,
    }
    impl Drop for Guard {
        fn drop(&mut self) {
            // SAFETY: plain calls into libtorch's thread-local autocast state.
            unsafe { ragtune_autocast_exit(self.device_type, self.previous) }
        }
    }
    // SAFETY: as above; the dtype is a valid c10::ScalarType.
    let previous = unsafe { ragtune_autocast_enter(device_type, SCALAR_BFLOAT16) };
    let _guard = Guard {
        device_type,
        previous,
    };
    f()
}

/// Whether autocast is on for `device` right now (for tests and assertions).
pub fn autocast_enabled(device: Device) -> bool {
    // SAFETY: reads libtorch's thread-local autocast state.
    device_type(device).is_some_and(|t| unsafe { ragtune_autocast_is_enabled(t) })
}
