"""Language-model recipes: a GPT and an LSTM trained on the Python documentation or your text.

    layerwise train --model gpt                      # char tokens, ~4 min on 2 cores
    layerwise train --model lstm --tokenizer bpe     # byte-level BPE (512) from the training text
    layerwise train --data novel.txt --model gpt     # a text file, or a folder of them
    layerwise generate runs/gpt-... --prompt "The "  # continue a prompt with a trained run

The corpus (``python_docs_corpus``, or the user's text: ``corpus.py``) is cut by position: the
first 90% of its characters train, the last 10% validate, so no validation text leaks into
training windows. A char vocabulary is read off the whole text (it holds only which characters
exist); a BPE tokenizer is trained on the training part only. Either is saved as the run's
``tokenizer.json``, and a resumed run reads it back instead of rebuilding it.

A finished run reports the validation loss per token and per character (total nats over
total characters of the validation targets, so char and BPE runs compare), the perplexity,
the unigram entropy of the validation text for reference (what a model that ignores context
could at best reach), and a seeded sample, also written to ``sample.txt``.
"""

import math
import os
from collections import Counter
from dataclasses import dataclass

from layerwise import optim
from layerwise.autograd import Tensor
from layerwise.backend import xp
from layerwise.data.text import BPETokenizer, CharTokenizer, lm_splits, load_tokenizer
from layerwise.limits import (
    MAX_BATCH_SIZE, MAX_CONTEXT, MAX_CORPUS_CHARS, MAX_LAYERS, MAX_NEW_TOKENS, MAX_VOCAB,
    MAX_WIDTH, Choice, Flag, Int, Real, SettingError, Text,
)
from layerwise.models.gpt import GPT, GPTConfig
from layerwise.models.lstm_lm import LSTMLanguageModel, check_sizes
from layerwise.nn import functional as F
from layerwise.nn.module import Module
from layerwise.serialization import write_text_atomic
from layerwise.train.checkpoint import RunError, load_run_weights, read_json
from layerwise.train.recipes.corpus import (
    check_windows, checked_corpus, corpus_name, corpus_record, split_text,
)
from layerwise.train.recipes.base import (
    PROBABILITY, RECIPES, TRAINING_SCHEMA, Parts, Recipe, Task, TaskData, recipe_of, register,
)

TOKENIZER_FILE = "tokenizer.json"
SAMPLE_FILE = "sample.txt"
TOKENIZERS = ("char", "bpe")
BPE_MIN_VOCAB = 257  # the 256 bytes and at least one merge
CHAR_VOCAB_ESTIMATE = 256  # what a size check assumes before the corpus is read


# --- the corpus and its tokenizer -----------------------------------------------------------


def build_tokenizer(kind, train_text, full_text, bpe_vocab_size):
    if kind == "char":
        return CharTokenizer.from_text(full_text)
    if kind == "bpe":
        try:
            return BPETokenizer.train(train_text, vocab_size=bpe_vocab_size)
        except ValueError as err:  # a vocabulary too small for the 256 bytes
            raise RunError(f"bpe_vocab_size: {err}") from None
    raise RunError(f"tokenizer must be one of {', '.join(TOKENIZERS)}, got {kind!r}")


def run_tokenizer(hp, train_text, full_text, run_dir):
    """The run's saved tokenizer when resuming (``run_dir``), else a new one."""
    if run_dir is None:
        return build_tokenizer(hp["tokenizer"], train_text, full_text, hp["bpe_vocab_size"])
    path = os.path.join(run_dir, TOKENIZER_FILE)
    try:
        return load_tokenizer(path)
    except (FileNotFoundError, ValueError) as err:
        raise RunError(f"cannot read the run's tokenizer: {err}") from None


def unigram_entropy(text):
    """Entropy in nats per character of the text's own character frequencies."""
    counts = xp.asarray(list(Counter(text).values()), dtype=xp.float64)
    p = counts / counts.sum()
    return float(-(p * xp.log(p)).sum())


def encode_prompt(tokenizer, prompt):
    """Token ids of ``prompt``; a character outside a char vocabulary is a RunError naming it."""
    if not prompt:
        raise RunError("the prompt is empty; give at least one character, e.g. --prompt 'The '")
    if isinstance(tokenizer, CharTokenizer):
        unknown = [c for c in dict.fromkeys(prompt) if c not in tokenizer.index]
        if unknown:
            shown = ", ".join(repr(c) for c in unknown[:5])
            what = f"character {shown} is" if len(unknown) == 1 else f"characters {shown} are"
            raise RunError(f"prompt {what} not in the run's character vocabulary "
                           f"({tokenizer.vocab_size} characters of its training text); leave "
                           "it out, or train with --tokenizer bpe, which encodes any text")
    return tokenizer.encode(prompt)


# --- the task -------------------------------------------------------------------------------


def decay_groups(model, weight_decay):
    """AdamW groups: decay matrices and embeddings, not biases and norm weights (GPT-2)."""
    params = list(model.parameters())
    return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
            {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def lm_forward(model, inputs):
    """GPT and LSTMLanguageModel return (logits, loss or state): the Trainer wants the logits."""
    return model(inputs)[0]


def token_cross_entropy(logits, targets):
    """Mean nats per token: logits (B, T, V) against targets (B, T)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))


class LanguageModelTask(Task):
    """Next-token prediction on the pydoc corpus or a user's text; ``make_model(hp,
    vocab_size)`` builds the network, so ``layerwise generate`` can rebuild it from a run's
    config."""

    kind = "lm"
    monitor = "val_loss"
    data_kinds = ("text",)

    def __init__(self, make_model):
        self.make_model = make_model

    def model_vocab_size(self, tokenizer):
        return tokenizer.vocab_size

    def data_record(self, hparams, data_dir, data=None):
        if data_dir is not None:
            raise RunError("--data-dir is for the image recipes; the language models train on "
                           "the Python documentation that ships with Python, or --data TEXT")
        return corpus_record(hparams, data)

    def load(self, config, run_dir=None):
        hp = config["hyperparameters"]
        text = checked_corpus(config, quiet=run_dir is not None)  # warned when it began
        train_text, val_text = split_text(text, hp["val_fraction"])
        tokenizer = run_tokenizer(hp, train_text, text, run_dir)
        train_ids, val_ids = tokenizer.encode(train_text), tokenizer.encode(val_text)
        check_windows(config, len(text), len(train_ids), len(val_ids))
        try:  # the sample is written when the run ends: a prompt it cannot encode fails now
            encode_prompt(tokenizer, hp["sample_prompt"])
        except RunError as err:
            raise RunError(f"sample_prompt={hp['sample_prompt']!r}: {err}; or --set "
                           f"sample_prompt=TEXT with characters of {corpus_name(config)}, "
                           f"e.g. {text[:8]!r}") from None
        block = hp["block_size"]
        # lm_splits holds out the last int(n * f) tokens... of one stream: choose f so that its
        # cut falls exactly between the two separately encoded parts (the +0.5 absorbs rounding).
        n = len(train_ids) + len(val_ids)
        try:
            splits = lm_splits(train_ids + val_ids, block, val_fraction=(len(val_ids) - 0.5) / n)
        except ValueError as err:
            raise RunError(f"{err} (corpus_chars={hp.get('corpus_chars')})") from None
        val_targets = splits["val"].tensors[1].data  # (N, T): the tokens the loss scores
        info = {"vocab_size": tokenizer.vocab_size, "train_tokens": len(train_ids),
                "val_tokens": int(val_targets.size),
                "val_chars": len(tokenizer.decode(val_targets.reshape(-1))),
                "unigram_entropy": unigram_entropy(val_text)}
        return TaskData(splits, tokenizer, info)

    def save(self, data, run_dir):
        data.tokenizer.save(os.path.join(run_dir, TOKENIZER_FILE))

    def finish(self, trainer, parts, data, config, run_dir):
        hp, info = config["hyperparameters"], data.info
        last = trainer.history[-1]
        nats_per_token = last["val_loss"]
        nats_per_char = nats_per_token * info["val_tokens"] / info["val_chars"]
        prompt = hp["sample_prompt"]
        new_text = generate_text(parts.model, data.tokenizer, prompt, hp["sample_tokens"],
                                 temperature=hp["sample_temperature"], top_k=hp["sample_top_k"],
                                 seed=config["seed"])
        write_text_atomic(os.path.join(run_dir, SAMPLE_FILE), prompt + new_text)
        return {
            "val_loss_nats_per_token": nats_per_token,
            "val_nats_per_char": nats_per_char,
            "val_bits_per_char": nats_per_char / math.log(2),
            "val_perplexity": math.exp(nats_per_token),
            "val_accuracy": last.get("val_accuracy"),
            "unigram_entropy_nats_per_char": info["unigram_entropy"],
            "tokenizer": hp["tokenizer"], "vocab_size": info["vocab_size"],
            "val_tokens": info["val_tokens"], "val_chars": info["val_chars"],
            "sample": prompt + new_text,
        }

    def summary(self, metrics):
        return [
            f"val loss: {metrics['val_loss_nats_per_token']:.4f} nats/token, "
            f"{metrics['val_nats_per_char']:.4f} nats/char ({metrics['val_bits_per_char']:.3f} "
            f"bits/char), perplexity {metrics['val_perplexity']:.2f}  (unigram entropy of the "
            f"val text: {metrics['unigram_entropy_nats_per_char']:.4f} nats/char)",
            f"{metrics['train_seconds']:.1f} s, {metrics['params']:,} parameters, "
            f"{metrics['tokenizer']} vocabulary of {metrics['vocab_size']}",
            "sample:", metrics["sample"],
        ]


def generate_text(model, tokenizer, prompt, max_new_tokens, temperature=1.0, top_k=None,
                  top_p=None, seed=None, use_cache=True):
    """The text a GPT or LSTM run writes after ``prompt`` (the prompt itself not included)."""
    ids = encode_prompt(tokenizer, prompt)
    idx = Tensor(xp.asarray([ids], dtype=xp.int64))  # (1, T)
    kwargs = {} if isinstance(model, LSTMLanguageModel) else {"use_cache": use_cache}
    out = model.generate(idx, max_new_tokens, temperature=temperature, top_k=top_k, top_p=top_p,
                         seed=seed, **kwargs)
    tokens = out.data[0]
    # Decoding all tokens and dropping the prompt keeps a BPE byte sequence split across the
    # prompt's end whole.
    full = tokenizer.decode(tokens)
    prefix = tokenizer.decode(tokens[: len(ids)])
    return full[len(prefix):] if full.startswith(prefix) else tokenizer.decode(tokens[len(ids):])


def lm_parts(model, hp, steps_per_epoch):
    """AdamW with decay groups, warm-up then cosine, gradient clipping: nanoGPT's recipe."""
    optimizer = optim.AdamW(decay_groups(model, hp["weight_decay"]), lr=hp["lr"],
                            betas=(0.9, 0.99))
    total = hp["epochs"] * steps_per_epoch
    scheduler = optim.lr_scheduler.warmup_cosine(
        optimizer, warmup_steps=min(hp["warmup_steps"], total - 1), total_steps=total,
        min_lr=hp["lr"] / 10)
    return Parts(model, optimizer, token_cross_entropy, scheduler, forward=lm_forward,
                 clip_grad_norm=hp["grad_clip"])


# --- a trained run, loaded back ---------------------------------------------------------------


@dataclass
class TrainedRun:
    """A finished run's config, recipe, tokenizer and model (in eval mode)."""

    run_dir: str
    config: dict
    recipe: Recipe
    tokenizer: object
    model: Module

    @property
    def task(self):
        return self.recipe.task


def load_trained(run_dir, kinds=("lm", "mlm")):
    """Read a finished text run back: config.json, tokenizer.json, model.safetensors.

    ``kinds`` are the task kinds the caller can use; another kind is a RunError naming it.
    """
    from layerwise.train.finished import finished_config  # finished.py imports the recipes

    if os.path.isdir(run_dir):  # the kind first: the wrong kind of run is the useful message
        path = os.path.join(run_dir, "config.json")
        _check_kind(run_dir, recipe_of(read_json(path, "the run's config"), path), kinds)
    config, recipe, weights = finished_config(run_dir)
    tokenizer = run_tokenizer(config["hyperparameters"], None, None, run_dir)
    model = recipe.task.make_model(config["hyperparameters"],
                                   recipe.task.model_vocab_size(tokenizer))
    load_run_weights(model, weights)
    return TrainedRun(run_dir, config, recipe, tokenizer, model)


def _check_kind(run_dir, recipe, kinds):
    if recipe.task.kind not in kinds:
        wanted = " or ".join(_KIND_NAMES.get(k, k) for k in kinds)
        usable = ", ".join(name for name, r in RECIPES.items() if r.task.kind in kinds)
        raise RunError(f"run {run_dir} holds {_KIND_NAMES.get(recipe.task.kind, 'a model')} "
                       f"(recipe {recipe.name!r}); this needs {wanted}, from a run of one of: "
                       f"{usable}")


_KIND_NAMES = {"lm": "a language model", "mlm": "a masked-LM encoder",
               "image": "an image classifier"}


# --- the recipes ----------------------------------------------------------------------------

_LM_COMMON = {
    "tokenizer": "char", "bpe_vocab_size": 512, "corpus_chars": None, "val_fraction": 0.1,
    "weight_decay": 0.1, "warmup_steps": 20, "grad_clip": 1.0, "eval_batch_size": 64,
    "sample_prompt": "The ", "sample_tokens": 300, "sample_temperature": 0.8,
    "sample_top_k": None, "patience": None,
}
# The settings of every recipe trained on the pydoc corpus (BERT's too).
CORPUS_SCHEMA = {
    **TRAINING_SCHEMA, "tokenizer": Choice(TOKENIZERS),
    "bpe_vocab_size": Int(BPE_MIN_VOCAB, MAX_VOCAB),
    "corpus_chars": Int(1, MAX_CORPUS_CHARS, none="the whole corpus"),
    "val_fraction": Real(0, 1, low_open=True, high_open=True),
    "grad_clip": Real(0, low_open=True, none="no clipping"),
    "eval_batch_size": Int(1, MAX_BATCH_SIZE), "dropout": PROBABILITY,
}
_LM_SCHEMA = {
    **CORPUS_SCHEMA, "block_size": Int(1, MAX_CONTEXT), "sample_prompt": Text(),
    "sample_tokens": Int(0, MAX_NEW_TOKENS), "sample_temperature": Real(0),
    "sample_top_k": Int(1, MAX_VOCAB, none="no top-k cut"),
}
_GPT_SCHEMA = {**_LM_SCHEMA, "n_layer": Int(1, MAX_LAYERS), "n_head": Int(1, MAX_WIDTH),
               "n_embd": Int(1, MAX_WIDTH)}
_LSTM_SCHEMA = {**_LM_SCHEMA, "embed_dim": Int(1, MAX_WIDTH), "hidden_size": Int(1, MAX_WIDTH),
                "num_layers": Int(1, MAX_LAYERS), "tie_weights": Flag()}


def vocab_estimate(hp):
    """The vocabulary size a size check assumes before a tokenizer is built."""
    return hp["bpe_vocab_size"] if hp["tokenizer"] == "bpe" else CHAR_VOCAB_ESTIMATE


def gpt_config(hp, vocab_size):
    return GPTConfig(vocab_size=vocab_size, block_size=hp["block_size"], n_layer=hp["n_layer"],
                     n_head=hp["n_head"], n_embd=hp["n_embd"], dropout=hp["dropout"])


def make_gpt(hp, vocab_size):
    return GPT(gpt_config(hp, vocab_size))


def make_lstm(hp, vocab_size):
    return LSTMLanguageModel(vocab_size, hp["embed_dim"], hp["hidden_size"], hp["num_layers"],
                             dropout=hp["dropout"], tie_weights=hp["tie_weights"])


def _gpt_fits(hp):
    gpt_config(hp, vocab_estimate(hp))  # the config refuses a head split or a size itself


def _lstm_fits(hp):
    if hp["tie_weights"] and hp["embed_dim"] != hp["hidden_size"]:
        raise SettingError(f"tie_weights needs embed_dim == hidden_size (the decoder reuses the "
                           f"embedding matrix), got embed_dim={hp['embed_dim']}, "
                           f"hidden_size={hp['hidden_size']}")
    check_sizes(vocab_estimate(hp), hp["embed_dim"], hp["hidden_size"], hp["num_layers"],
                hp["tie_weights"])


GPT_TASK, LSTM_TASK = LanguageModelTask(make_gpt), LanguageModelTask(make_lstm)

_GPT_DEFAULTS = {**_LM_COMMON, "epochs": 4, "batch_size": 16, "lr": 3e-3, "block_size": 128,
                 "n_layer": 4, "n_head": 4, "n_embd": 128, "dropout": 0.0, "warmup_steps": 50}
_LSTM_DEFAULTS = {**_LM_COMMON, "epochs": 4, "batch_size": 16, "lr": 3e-3, "block_size": 64,
                  "embed_dim": 256, "hidden_size": 256, "num_layers": 1, "dropout": 0.0,
                  "tie_weights": False, "weight_decay": 0.01}
_TINY = {"corpus_chars": 20_000, "epochs": 2, "batch_size": 8, "block_size": 32,
         "warmup_steps": 10, "sample_tokens": 40, "eval_batch_size": 256}


def _build_lm(task):
    def build(hp, steps_per_epoch, data):
        return lm_parts(task.make_model(hp, data.tokenizer.vocab_size), hp, steps_per_epoch)

    return build


def _register_gpt(name, description, defaults):
    register(name, description, defaults, GPT_TASK, _GPT_SCHEMA,
             checks=(_gpt_fits,))(_build_lm(GPT_TASK))


def _register_lstm(name, description, defaults):
    register(name, description, defaults, LSTM_TASK, _LSTM_SCHEMA,
             checks=(_lstm_fits,))(_build_lm(LSTM_TASK))


_register_gpt("gpt", "GPT 4 layers, d=128, 4 heads, context 128 on the Python docs (char "
                     "tokens; --tokenizer bpe): AdamW, cosine lr", _GPT_DEFAULTS)
_register_gpt("gpt-tiny", "GPT 1 layer, d=64 on 20k characters of the Python docs for 3 epochs: "
                          "a smoke test in seconds",
              {**_GPT_DEFAULTS, **_TINY, "epochs": 3, "n_layer": 1, "n_head": 4, "n_embd": 64,
               "lr": 3e-3})
_register_lstm("lstm", "LSTM embedding 256, hidden 256, sequences of 64 on the Python docs (char "
                       "tokens; --tokenizer bpe): AdamW, cosine lr", _LSTM_DEFAULTS)
_register_lstm("lstm-tiny", "LSTM embedding 32, hidden 64 on 20k characters of the Python docs "
                            "for 2 epochs: a smoke test in seconds",
               {**_LSTM_DEFAULTS, **_TINY, "embed_dim": 32, "hidden_size": 64, "lr": 2e-2})
