"""Nearest-neighbour sentence search with a BERT encoder pre-trained by layerwise.

    uv run python examples/embedding_search.py                     # trains bert-tiny first (seconds)
    uv run python examples/embedding_search.py runs/bert-20250101-120000 \\
        --query "The for statement iterates over a sequence" -k 5

The sentences searched are from the held-out (validation) part of the Python documentation,
text the encoder never trained on. Embeddings: mean-pooled, centred, L2-normalised hidden
states (see layerwise/train/search.py); similarity: cosine.
"""

import argparse
import sys
import tempfile

from layerwise.train.checkpoint import RunError
from layerwise.train.recipes.corpus import corpus_text, split_text
from layerwise.train.search import build_index, corpus_sentences, search


def train_tiny_encoder(out_dir):
    """A bert-tiny run (masked LM on 20k characters), trained here in seconds."""
    from layerwise.train.run import make_config, start_run

    run_dir, metrics = start_run(make_config("bert-tiny", seed=0), out_dir=out_dir,
                                 progress=False, verbose=False)
    print(f"trained {run_dir}: masked-token accuracy {metrics['val_mlm_accuracy']:.3f} "
          f"in {metrics['train_seconds']:.1f} s", file=sys.stderr)
    return run_dir


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run", nargs="?", help="a bert run directory (default: train bert-tiny)")
    parser.add_argument("--query", default="The for statement iterates over a sequence",
                        help="the sentence to look up")
    parser.add_argument("-k", type=int, default=5, help="how many neighbours (default: 5)")
    parser.add_argument("--sentences", type=int, default=400,
                        help="how many documentation sentences to index (default: 400)")
    args = parser.parse_args(argv)

    run_dir = args.run or train_tiny_encoder(tempfile.mkdtemp(prefix="layerwise-bert-"))
    _, held_out = split_text(corpus_text({}), 0.1)
    sentences = corpus_sentences(held_out, limit=args.sentences)
    try:
        index = build_index(run_dir, sentences)
    except RunError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    print(f"{len(sentences)} sentences indexed; nearest to {args.query!r}:")
    for score, _, sentence in search(index, args.query, k=args.k):
        print(f"  {score:+.3f}  {sentence}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
