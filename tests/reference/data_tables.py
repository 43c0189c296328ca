"""Reads (or writes) Parquet files with pyarrow and pandas for the data crate's interop tests.

stdin: {"read": [paths]} -> {"tables": [{path, metadata, num_rows, columns, types, rows, pandas_rows,
                                          duckdb_rows, duckdb_columns, duckdb_metadata}]}
       {"write": {"path": p, "columns": {name: [values]}}} -> {"written": p}  (plain pandas.to_parquet)
"""
import json
import sys

import duckdb
import pandas as pd
import pyarrow.parquet as pq


def main():
    req = json.load(sys.stdin)
    if "write" in req:
        w = req["write"]
        pd.DataFrame(w["columns"]).to_parquet(w["path"], index=False)
        print(json.dumps({"written": w["path"]}))
        return
    out = []
    for path in req["read"]:
        table = pq.read_table(path)
        meta = pq.read_metadata(path).metadata or {}
        df = pd.read_parquet(path)
        relation = duckdb.read_parquet(path)
        duck_columns = relation.columns
        duck_rows = [dict(zip(duck_columns, row)) for row in relation.fetchall()]
        duck_meta = duckdb.execute(
            "SELECT key, value FROM parquet_kv_metadata(?)", [path]
        ).fetchall()
        out.append(
            {
                "path": path,
                "metadata": {k.decode(): v.decode() for k, v in meta.items() if k != b"ARROW:schema"},
                "num_rows": table.num_rows,
                "columns": table.column_names,
                "types": [str(t) for t in table.schema.types],
                "rows": table.to_pylist(),
                "pandas_rows": len(df),
                "duckdb_columns": duck_columns,
                "duckdb_rows": duck_rows,
                "duckdb_metadata": {
                    k.decode(): v.decode() for k, v in duck_meta if k != b"ARROW:schema"
                },
            }
        )
    print(json.dumps({"tables": out}, default=str))


main()
