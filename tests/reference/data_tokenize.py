"""Token ids from Hugging Face tokenizers, with the truncation and padding a token cache uses.

stdin: {"tokenizer": path, "max_length": n, "texts": [..]} -> {"input_ids": [[..], ..]}
Truncation at max_length, no padding (the MiniLM tokenizer.json has both baked in at 128).
"""
import json
import sys

from tokenizers import Tokenizer


def main():
    req = json.load(sys.stdin)
    tok = Tokenizer.from_file(req["tokenizer"])
    tok.enable_truncation(max_length=req["max_length"])
    tok.no_padding()
    encs = tok.encode_batch(req["texts"], add_special_tokens=True)
    print(json.dumps({"input_ids": [e.ids for e in encs]}))


main()
