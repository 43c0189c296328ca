"""The Python side of `cargo xtask bench bm25`: bm25s (method="lucene") on the dataset folder the
ragtune side searches.

  bench_bm25.py build DATA_DIR INDEX_DIR --k1 K1 --b B
      Reads DATA_DIR/corpus.parquet, tokenizes every passage ("title. text", as ragtune's
      passage_text) and indexes it (timed together as the build, from raw text), then saves the
      index to INDEX_DIR (timed apart). Prints `key value` lines: passages, tokens, vocabulary,
      corpus_load_seconds, tokenize_seconds, index_seconds, build_seconds, save_seconds, index_bytes.
  bench_bm25.py search DATA_DIR INDEX_DIR QUERIES_PARQUET --threads T --warmup W --sample S --top OUT
      Loads the index (timed), then for k = 10 and k = 100: one untimed warm-up batch (the first W
      queries), then every query tokenized and retrieved (timed together, as ragtune's search
      analyzes its queries). Prints load_seconds, queries, and per k `search_seconds_k`,
      `retrieve_seconds_k` (retrieve alone) and `queries_per_s_k`; writes the top 10 of the first S
      queries (doc ids and scores, from the k = 10 pass) to OUT as a TREC run.

The analyzer is ragtune's as far as bm25s allows: lowercase, Lucene's 33 English stopwords (bm25s'
STOPWORDS_EN is the same list), no stemmer, and a token pattern that follows UAX #29 word
boundaries (ragtune's unicode_words) on this text: words joined across "." "'" "’" (between word
characters), ":" (between letters) and "," ";" (between digits), superscript digits split off
(checked on the FAQ: the same vocabulary and passage lengths as ragtune's index). bm25s' default
pattern (?u)\\b\\w\\w+\\b would drop one-character words and split "can't".
"""

import argparse
import os
import sys
import time

# A word character of UAX #29: Python's \w less the superscript digits, which word boundaries
# split off ("m²" is "m", "²") though each still counts as a word of its own.
WORD = r"[^\W¹²³]"
TOKEN_PATTERN = rf"(?u){WORD}+(?:(?:[.'’]|(?<=[^\W\d_]):|(?<=\d)[,;](?=\d)){WORD}+)*|[¹²³]"


def passage_text(title, text):
    title = (title or "").strip()
    return text if not title else f"{title}. {text}"


def tokenize(texts, return_ids):
    import bm25s

    return bm25s.tokenize(
        texts,
        lower=True,
        token_pattern=TOKEN_PATTERN,
        stopwords="en",
        stemmer=None,
        return_ids=return_ids,
        show_progress=False,
    )


def folder_bytes(path):
    return sum(
        os.path.getsize(os.path.join(root, f)) for root, _, files in os.walk(path) for f in files
    )


def build(args):
    import bm25s
    import pyarrow.parquet as pq

    start = time.perf_counter()
    table = pq.read_table(os.path.join(args.data_dir, "corpus.parquet"), columns=["title", "text"])
    texts = [passage_text(t, x) for t, x in zip(table.column("title").to_pylist(), table.column("text").to_pylist())]
    del table
    loaded = time.perf_counter()
    tokens = tokenize(texts, return_ids=True)
    tokenized = time.perf_counter()
    model = bm25s.BM25(k1=args.k1, b=args.b, method="lucene")
    model.index(tokens, show_progress=False)
    indexed = time.perf_counter()
    model.save(args.index_dir, show_progress=False)
    saved = time.perf_counter()
    result = {
        "passages": len(texts),
        "tokens": sum(len(ids) for ids in tokens.ids),
        # The empty token bm25s adds for queries with no known word is not a term of the corpus.
        "vocabulary": len([t for t in tokens.vocab if t != ""]),
        "corpus_load_seconds": loaded - start,
        "tokenize_seconds": tokenized - loaded,
        "index_seconds": indexed - tokenized,
        "build_seconds": indexed - loaded,
        "save_seconds": saved - indexed,
        "index_bytes": folder_bytes(args.index_dir),
    }
    for key, value in result.items():
        print(f"{key} {value}")


def search(args):
    import bm25s
    import pyarrow.parquet as pq

    doc_ids = pq.read_table(os.path.join(args.data_dir, "corpus.parquet"), columns=["doc_id"]).column("doc_id").to_pylist()
    queries = pq.read_table(args.queries, columns=["query_id", "text"]).to_pylist()
    texts = [q["text"] for q in queries]
    start = time.perf_counter()
    model = bm25s.BM25.load(args.index_dir, show_progress=False)
    print(f"load_seconds {time.perf_counter() - start}")
    print(f"queries {len(texts)}")
    print(f"backend {model.backend}")
    top = {}
    for k in (10, 100):
        warm = texts[: args.warmup]
        if warm:
            model.retrieve(tokenize(warm, return_ids=False), k=k, n_threads=args.threads, show_progress=False)
        began = time.perf_counter()
        query_tokens = tokenize(texts, return_ids=False)
        tokenized = time.perf_counter()
        docs, scores = model.retrieve(query_tokens, k=k, n_threads=args.threads, show_progress=False)
        done = time.perf_counter()
        print(f"search_seconds_{k} {done - began}")
        print(f"retrieve_seconds_{k} {done - tokenized}")
        print(f"queries_per_s_{k} {len(texts) / (done - began)}")
        if k == 10:
            for i in range(min(args.sample, len(texts))):
                top[queries[i]["query_id"]] = [
                    [doc_ids[int(d)], float(s)] for d, s in zip(docs[i], scores[i])
                ]
    tmp = args.top + ".tmp"
    with open(tmp, "w") as f:
        for query_id, hits in top.items():
            for rank, (doc, score) in enumerate(hits, 1):
                f.write(f"{query_id} Q0 {doc} {rank} {score} bm25s\n")
    os.replace(tmp, args.top)


def main():
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build")
    b.add_argument("data_dir")
    b.add_argument("index_dir")
    b.add_argument("--k1", type=float, required=True)
    b.add_argument("--b", type=float, required=True)
    s = sub.add_parser("search")
    s.add_argument("data_dir")
    s.add_argument("index_dir")
    s.add_argument("queries")
    s.add_argument("--threads", type=int, required=True)
    s.add_argument("--warmup", type=int, default=0)
    s.add_argument("--sample", type=int, default=500)
    s.add_argument("--top", required=True)
    args = parser.parse_args()
    if args.command == "build":
        build(args)
    else:
        search(args)


if __name__ == "__main__":
    sys.exit(main())
