"""Reference values for ragtune-eval's generation metrics, from the real libraries.

stdin: {"cases": [{"prediction": str, "references": [str]}], "words": [str]}
stdout: per case SQuAD EM/F1 (the official v2.0 script's functions, reproduced below), sacrebleu
sentence BLEU, rouge-score with and without stemmer (score_multi), nltk METEOR with WordNet
stubbed to no synonyms; corpus BLEU over all cases; nltk Porter stems of `words`.
"""
import collections
import json
import re
import string
import sys

import sacrebleu
from nltk.stem.porter import PorterStemmer
from nltk.translate.meteor_score import meteor_score
from rouge_score import rouge_scorer


# --- SQuAD v2.0 official evaluation script (evaluate-v2.0.py), verbatim logic ---
def normalize_answer(s):
    def remove_articles(text):
        regex = re.compile(r"\b(a|an|the)\b", re.UNICODE)
        return re.sub(regex, " ", text)

    def white_space_fix(text):
        return " ".join(text.split())

    def remove_punc(text):
        exclude = set(string.punctuation)
        return "".join(ch for ch in text if ch not in exclude)

    def lower(text):
        return text.lower()

    return white_space_fix(remove_articles(remove_punc(lower(s))))


def get_tokens(s):
    if not s:
        return []
    return normalize_answer(s).split()


def compute_exact(a_gold, a_pred):
    return int(normalize_answer(a_gold) == normalize_answer(a_pred))


def compute_f1(a_gold, a_pred):
    gold_toks = get_tokens(a_gold)
    pred_toks = get_tokens(a_pred)
    common = collections.Counter(gold_toks) & collections.Counter(pred_toks)
    num_same = sum(common.values())
    if len(gold_toks) == 0 or len(pred_toks) == 0:
        return int(gold_toks == pred_toks)
    if num_same == 0:
        return 0
    precision = 1.0 * num_same / len(pred_toks)
    recall = 1.0 * num_same / len(gold_toks)
    return (2 * precision * recall) / (precision + recall)


def squad(prediction, references):
    gold_answers = [a for a in references if normalize_answer(a)]
    if not gold_answers:
        gold_answers = [""]
    return (
        max(compute_exact(a, prediction) for a in gold_answers),
        max(compute_f1(a, prediction) for a in gold_answers),
    )


class NoSynonyms:
    """WordNet stand-in: the corpus cannot be downloaded here, so nltk's synonym stage matches nothing."""

    def synsets(self, word):
        return []


def rouge_dict(scores):
    return {k: [v.precision, v.recall, v.fmeasure] for k, v in scores.items()}


def main():
    data = json.load(sys.stdin)
    types = ["rouge1", "rouge2", "rougeL", "rougeLsum"]
    plain = rouge_scorer.RougeScorer(types, use_stemmer=False)
    stemmed = rouge_scorer.RougeScorer(types, use_stemmer=True)
    wordnet = NoSynonyms()
    out = []
    for case in data["cases"]:
        pred, refs = case["prediction"], case["references"]
        em, f1 = squad(pred, refs)
        bleu = sacrebleu.sentence_bleu(pred, refs)
        out.append({
            "em": em,
            "f1": f1,
            "sentence_bleu": bleu.score,
            "sentence_bleu_counts": bleu.counts,
            "rouge": rouge_dict(plain.score_multi(refs, pred)),
            "rouge_stem": rouge_dict(stemmed.score_multi(refs, pred)),
            "meteor": meteor_score([r.split() for r in refs], pred.split(), wordnet=wordnet),
        })
    max_refs = max(len(c["references"]) for c in data["cases"])
    streams = [[c["references"][i] if i < len(c["references"]) else None for c in data["cases"]] for i in range(max_refs)]
    corpus = sacrebleu.corpus_bleu([c["prediction"] for c in data["cases"]], streams)
    stemmer = PorterStemmer()
    json.dump({
        "cases": out,
        "corpus_bleu": corpus.score,
        "corpus_bleu_counts": corpus.counts,
        "corpus_bleu_totals": corpus.totals,
        "corpus_sys_len": corpus.sys_len,
        "corpus_ref_len": corpus.ref_len,
        "stems": [stemmer.stem(w) for w in data["words"]],
    }, sys.stdout)


if __name__ == "__main__":
    main()
