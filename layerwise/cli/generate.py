"""``layerwise generate RUN --prompt TEXT``: continue a prompt with a trained language model.

    layerwise generate runs/gpt-20250101-120000 --prompt "The " --max-new-tokens 200
    layerwise generate gpt-20250101-120000 --prompt "def " --top-p 0.9 --seed 3

The run's config rebuilds the model, ``model.safetensors`` fills it and ``tokenizer.json``
encodes the prompt. The same seed gives the same text; ``--no-cache`` recomputes each GPT step
from the whole context instead of the KV cache, and gives the same text.
"""

import os
import sys

from layerwise.cli.argtypes import (
    MAX_NEW_TOKENS, MAX_SEED, MAX_VOCAB, int_in_range, probability, temperature,
)


def add_generate_parser(commands):
    gen = commands.add_parser(
        "generate", help="continue a prompt with a trained language-model run",
        description="Print a prompt and its continuation by a trained GPT or LSTM run.")
    gen.add_argument("run", metavar="RUN", help="the run directory (or its name under --out)")
    gen.add_argument("--prompt", default="\n", metavar="TEXT",
                     help="text to continue (default: a newline, the start of a paragraph)")
    gen.add_argument("--max-new-tokens", type=int_in_range(0, MAX_NEW_TOKENS), default=200,
                     metavar="N",
                     help="tokens to add (default: 200)")
    gen.add_argument("--temperature", type=temperature, default=0.8, metavar="T",
                     help="divide the logits by T before sampling; 0 is greedy (default: 0.8)")
    gen.add_argument("--top-k", type=int_in_range(1, MAX_VOCAB), metavar="K",
                     help="sample among the K most likely tokens only")
    gen.add_argument("--top-p", type=probability, metavar="P",
                     help="sample among the most likely tokens whose probabilities reach P")
    gen.add_argument("--seed", type=int_in_range(0, MAX_SEED), default=0, metavar="S",
                     help="seed of the sampler: the same seed gives the same text (default: 0)")
    gen.add_argument("--no-cache", action="store_true",
                     help="GPT: recompute every step from the whole context, not a KV cache")
    gen.add_argument("--out", default="runs", metavar="DIR",
                     help="where to look for RUN given by name (default: runs)")


def generate(args, usage_error):
    from layerwise.models.gpt import GPT
    from layerwise.train.recipes.language import generate_text, load_trained

    run_dir = args.run
    if not os.path.isdir(run_dir) and os.path.isdir(os.path.join(args.out, run_dir)):
        run_dir = os.path.join(args.out, run_dir)
    trained = load_trained(run_dir, kinds=("lm",))
    if args.no_cache and not isinstance(trained.model, GPT):
        raise usage_error(f"--no-cache is for GPT runs; {run_dir} is a {trained.recipe.name!r} "
                          "run, which generates from its carried state; drop --no-cache")
    text = generate_text(trained.model, trained.tokenizer, args.prompt, args.max_new_tokens,
                         temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                         seed=args.seed, use_cache=not args.no_cache)
    sys.stdout.write(args.prompt + text + "\n")
    return 0
