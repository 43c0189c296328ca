"""Python peer of `ragtune data import ... --tokenizer`: JSONL -> corpus.parquet -> token cache.

argv: corpus.jsonl out_dir tokenizer.json max_length
pyarrow reads the JSONL (multithreaded), writes corpus.parquet, then HF tokenizers batch-encodes
the texts (truncation at max_length, no padding) in chunks and writes input_ids as list<int32> plus
lengths. Prints {"rows": n} on stdout.
"""
import json
import os
import sys

import pyarrow as pa
import pyarrow.json as pj
import pyarrow.parquet as pq
from tokenizers import Tokenizer

CHUNK = 8192


def main():
    src, out, tok_path, max_length = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
    os.makedirs(os.path.join(out, "cache"), exist_ok=True)
    table = pj.read_json(src)
    table = table.rename_columns(["doc_id" if c == "_id" else c for c in table.column_names])
    table = table.select(["doc_id", "title", "text"])
    pq.write_table(table, os.path.join(out, "corpus.parquet"), compression="snappy")

    tok = Tokenizer.from_file(tok_path)
    tok.enable_truncation(max_length=max_length)
    tok.no_padding()
    schema = pa.schema(
        [("id", pa.string()), ("input_ids", pa.list_(pa.int32())), ("length", pa.int32())]
    )
    ids = table.column("doc_id")
    texts = table.column("text")
    with pq.ParquetWriter(os.path.join(out, "cache", "corpus.tokens.parquet"), schema, compression="snappy") as w:
        for start in range(0, table.num_rows, CHUNK):
            batch_texts = texts.slice(start, CHUNK).to_pylist()
            encs = tok.encode_batch_fast(batch_texts, add_special_tokens=True)
            input_ids = [e.ids for e in encs]
            w.write_table(
                pa.table(
                    {
                        "id": ids.slice(start, CHUNK),
                        "input_ids": pa.array(input_ids, type=pa.list_(pa.int32())),
                        "length": pa.array([len(x) for x in input_ids], type=pa.int32()),
                    },
                    schema=schema,
                )
            )
    print(json.dumps({"rows": table.num_rows}))


main()
