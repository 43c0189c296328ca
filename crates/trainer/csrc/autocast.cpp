// Per-device autocast for ragtune-trainer. tch 0.24 only toggles the deprecated CUDA-wide flag
// (fp16 by default); bf16 autocast on CPU and CUDA needs the device-typed calls below.
#include <ATen/autocast_mode.h>

extern "C" {

// device_type: 0 = CPU, 1 = CUDA (c10::DeviceType values). dtype: c10::ScalarType value.
// Returns the previous enabled flag, so the caller can restore it.
bool ragtune_autocast_enter(int device_type, int dtype) {
  auto device = static_cast<c10::DeviceType>(device_type);
  bool previous = at::autocast::is_autocast_enabled(device);
  at::autocast::set_autocast_enabled(device, true);
  at::autocast::set_autocast_dtype(device, static_cast<at::ScalarType>(dtype));
  at::autocast::increment_nesting();
  return previous;
}

void ragtune_autocast_exit(int device_type, bool previous) {
  auto device = static_cast<c10::DeviceType>(device_type);
  if (at::autocast::decrement_nesting() == 0) {
    at::autocast::clear_cache();
  }
  at::autocast::set_autocast_enabled(device, previous);
}

bool ragtune_autocast_is_enabled(int device_type) {
  return at::autocast::is_autocast_enabled(static_cast<c10::DeviceType>(device_type));
}

}
