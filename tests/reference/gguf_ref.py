"""Reference for ragtune's GGUF reader: the `gguf` Python package (llama.cpp's own).

JSON on stdin, JSON on stdout. Operations:
  {"op": "dequantize", "path": FILE, "tensors": [NAME, ...]}
      -> {"tensors": {NAME: {"type", "shape", "sha256", "head"}}}
         sha256 of the little-endian f32 bytes of gguf.quants.dequantize, shape in torch order.
  {"op": "synthetic", "dir": DIR, "seed": N}
      -> writes DIR/synthetic.gguf with one tensor per type (F32, F16, BF16, Q4_0, Q4_1, Q8_0),
         quantized by gguf.quants.quantize from seeded random data, plus metadata of every value
         type, and answers {"path", "metadata": {...}, "tensors": {NAME: {...}}} as above.
"""

import hashlib
import json
import os
import sys

import numpy as np
import gguf
from gguf.quants import dequantize, quantize


def describe(reader_tensor):
    values = dequantize(reader_tensor.data, reader_tensor.tensor_type).astype("<f4")
    return {
        "type": reader_tensor.tensor_type.name,
        "shape": [int(d) for d in reversed(reader_tensor.shape.tolist())],
        "sha256": hashlib.sha256(values.tobytes()).hexdigest(),
        "head": [float(v) for v in values.reshape(-1)[:8]],
    }


def dequantize_op(req):
    reader = gguf.GGUFReader(req["path"])
    by_name = {t.name: t for t in reader.tensors}
    return {"tensors": {name: describe(by_name[name]) for name in req["tensors"]}}


def synthetic_op(req):
    rng = np.random.default_rng(req.get("seed", 0))
    path = os.path.join(req["dir"], "synthetic.gguf")
    writer = gguf.GGUFWriter(path, arch="llama")
    writer.add_uint8("test.u8", 200)
    writer.add_int8("test.i8", -5)
    writer.add_uint16("test.u16", 60000)
    writer.add_int16("test.i16", -30000)
    writer.add_uint32("test.u32", 4000000000)
    writer.add_int32("test.i32", -2000000000)
    writer.add_float32("test.f32", 0.25)
    writer.add_bool("test.bool", True)
    writer.add_string("test.string", "héllo ✓")
    writer.add_uint64("test.u64", 2**63 + 5)
    writer.add_int64("test.i64", -(2**62))
    writer.add_float64("test.f64", 1e-300)
    writer.add_array("test.array", ["a", "bc", ""])
    writer.add_array("test.int_array", [1, -2, 3])
    # Rows of 64 so every block type divides them; values spread like real weights, a few outliers.
    data = (rng.standard_normal((6, 64)) * 0.05).astype(np.float32)
    data[0, 3] = 1.5
    types = {
        "t.f32": gguf.GGMLQuantizationType.F32,
        "t.f16": gguf.GGMLQuantizationType.F16,
        "t.bf16": gguf.GGMLQuantizationType.BF16,
        "t.q4_0": gguf.GGMLQuantizationType.Q4_0,
        "t.q4_1": gguf.GGMLQuantizationType.Q4_1,
        "t.q8_0": gguf.GGMLQuantizationType.Q8_0,
    }
    for name, qtype in types.items():
        if qtype == gguf.GGMLQuantizationType.F32:
            writer.add_tensor(name, data)
        elif qtype == gguf.GGMLQuantizationType.F16:
            writer.add_tensor(name, data.astype(np.float16))
        else:
            writer.add_tensor(name, quantize(data, qtype), raw_dtype=qtype)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

    reader = gguf.GGUFReader(path)
    metadata = {}
    for key, field in reader.fields.items():
        if key.startswith("test."):
            metadata[key] = field.contents()
    tensors = {t.name: describe(t) for t in reader.tensors}
    return {"path": path, "metadata": metadata, "tensors": tensors}


def main():
    req = json.load(sys.stdin)
    op = {"dequantize": dequantize_op, "synthetic": synthetic_op}[req["op"]]
    json.dump(op(req), sys.stdout)


if __name__ == "__main__":
    main()
