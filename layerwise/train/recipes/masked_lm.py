"""BERT pre-training by masked-LM on the Python documentation (or your text), and the encoding
of sentences.

    layerwise train --model bert                     # char tokens, a few minutes on 2 cores
    layerwise train --model bert --data notes/       # a text file, or a folder of them

Each paragraph of the corpus (text between blank lines), cut into pieces of at most
``max_len - 2`` tokens, becomes one sequence ``[CLS] piece [SEP]`` padded to ``max_len``.
Training batches are masked afresh each time (RoBERTa's dynamic masking, drawn from lw's
generator, so a resume checkpoint carries it); the validation set is masked once with a
fixed seed, so every epoch is scored on the same masked tokens. The run reports the masked
tokens' validation loss (nats per masked token), accuracy and perplexity.

The special tokens follow the base vocabulary (char or BPE, saved as ``tokenizer.json``):
    [PAD] = n, [UNK] = n + 1, [CLS] = n + 2, [SEP] = n + 3, [MASK] = n + 4
so that BERT's random replacement, drawn from [0, n), always yields a real token, and the
attention mask (ids != [PAD]) can be read off the corrupted ids.
"""

import math
import os

from layerwise import optim
from layerwise.autograd import Tensor
from layerwise.backend import xp
from layerwise.data import TensorDataset
from layerwise.data.text import CharTokenizer
from layerwise.models.bert import BertConfig, BertForMaskedLM, mask_tokens
from layerwise.nn import functional as F
from layerwise.limits import MAX_CONTEXT, MAX_LAYERS, MAX_WIDTH, Int, Real
from layerwise.train.recipes.corpus import (
    check_sequences, checked_corpus, corpus_record, split_text,
)
from layerwise.train.recipes.language import (
    CORPUS_SCHEMA, TOKENIZER_FILE, decay_groups, run_tokenizer, unigram_entropy, vocab_estimate,
)
from layerwise.train.checkpoint import RunError
from layerwise.train.recipes.base import Parts, Task, TaskData, register

SPECIALS = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")


def special_ids(tokenizer):
    """{'[PAD]': id, ...}: the special tokens numbered after the base vocabulary."""
    return {name: tokenizer.vocab_size + i for i, name in enumerate(SPECIALS)}


def token_ids(tokenizer, text):
    """Ids of ``text``; a character outside a char vocabulary becomes [UNK]."""
    if isinstance(tokenizer, CharTokenizer):
        unk = special_ids(tokenizer)["[UNK]"]
        return [tokenizer.index.get(c, unk) for c in text]
    return tokenizer.encode(text)


def pack(tokenizer, pieces, length):
    """Token lists -> ([CLS] piece [SEP] [PAD]... ids (N, length), attention mask (N, length)).

    A piece longer than ``length - 2`` is truncated.
    """
    sp = special_ids(tokenizer)
    ids = xp.full((len(pieces), length), sp["[PAD]"], dtype=xp.int64)
    for row, piece in enumerate(pieces):
        seq = [sp["[CLS]"], *piece[: length - 2], sp["[SEP]"]]
        ids[row, : len(seq)] = seq
    return ids, (ids != sp["[PAD]"]).astype(xp.int64)


def paragraph_pieces(tokenizer, text, max_len):
    """The token lists of the text's paragraphs, each cut into pieces of <= max_len - 2."""
    size = max_len - 2
    pieces = []
    for paragraph in text.split("\n\n"):
        if paragraph.strip():
            ids = token_ids(tokenizer, paragraph.strip("\n"))
            pieces.extend(ids[i:i + size] for i in range(0, len(ids), size))
    return pieces


def masked_token_loss(logits, labels):
    """Mean nats per masked token: logits (B, T, V), labels (B, T) with -100 where unmasked.

    The sum over the masked tokens divided by their count, which is 0 (not NaN) for a batch
    that happens to have none masked: a short last batch can draw none.
    """
    n = int((labels.data != -100).sum())
    total = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                            reduction="sum")
    return total / max(n, 1)


def mlm_forward(model, input_ids):
    """Logits (B, T, V) of BertForMaskedLM, attending to every position that is not [PAD]."""
    pad = model.config.pad_token_id
    return model(input_ids, attention_mask=Tensor(input_ids.data != pad))[0]


def bert_config(hp, vocab_size):
    """The BertConfig of a run's hyperparameters; ``vocab_size`` counts the specials."""
    return BertConfig(
        vocab_size=vocab_size, hidden_size=hp["hidden_size"],
        num_hidden_layers=hp["num_layers"], num_attention_heads=hp["num_heads"],
        intermediate_size=hp["intermediate_size"], max_position_embeddings=hp["max_len"],
        pad_token_id=vocab_size - len(SPECIALS), hidden_dropout_prob=hp["dropout"],
        attention_probs_dropout_prob=hp["dropout"])


class MaskedLMTask(Task):
    """Masked-LM pre-training of BertForMaskedLM on the paragraphs of the pydoc corpus or a
    user's text."""

    kind = "mlm"
    monitor = "val_loss"
    data_kinds = ("text",)

    def model_vocab_size(self, tokenizer):
        return tokenizer.vocab_size + len(SPECIALS)

    def make_model(self, hp, vocab_size):
        return BertForMaskedLM(bert_config(hp, vocab_size))

    def data_record(self, hparams, data_dir, data=None):
        if data_dir is not None:
            raise RunError("--data-dir is for the image recipes; BERT trains on the Python "
                           "documentation that ships with Python, or --data TEXT")
        return corpus_record(hparams, data)

    def load(self, config, run_dir=None):
        hp = config["hyperparameters"]
        if hp["max_len"] < 3:
            raise RunError(f"max_len must be >= 3 ([CLS], a token, [SEP]), got {hp['max_len']}")
        text = checked_corpus(config, quiet=run_dir is not None)  # warned when it began
        train_text, val_text = split_text(text, hp["val_fraction"])
        tokenizer = run_tokenizer(hp, train_text, text, run_dir)
        sp = special_ids(tokenizer)
        train_pieces = paragraph_pieces(tokenizer, train_text, hp["max_len"])
        val_pieces = paragraph_pieces(tokenizer, val_text, hp["max_len"])
        check_sequences(config, len(text), len(train_pieces), len(val_pieces))
        train_ids, _ = pack(tokenizer, train_pieces, hp["max_len"])
        val_ids, _ = pack(tokenizer, val_pieces, hp["max_len"])
        # The validation set is masked once, with its own seed: the same tokens every epoch.
        val_inputs, val_labels = mask_tokens(
            val_ids, sp["[MASK]"], tokenizer.vocab_size, prob=hp["mask_prob"],
            seed=config["seed"] + 2, special_token_ids=_unmaskable(sp))
        # Training targets are placeholders: dynamic masking replaces them with the labels.
        splits = {"train": TensorDataset(train_ids, train_ids.copy()),
                  "val": TensorDataset(val_inputs, val_labels)}
        info = {"vocab_size": self.model_vocab_size(tokenizer),
                "train_sequences": len(train_ids), "val_sequences": len(val_ids),
                "val_masked_tokens": int((val_labels.data >= 0).sum()),
                "unigram_entropy": unigram_entropy(val_text)}
        return TaskData(splits, tokenizer, info)

    def save(self, data, run_dir):
        data.tokenizer.save(os.path.join(run_dir, TOKENIZER_FILE))

    def finish(self, trainer, parts, data, config, run_dir):
        hp, last = config["hyperparameters"], trainer.history[-1]
        return {
            "val_mlm_loss": last["val_loss"],
            "val_mlm_accuracy": last["val_accuracy"],
            "val_mlm_perplexity": math.exp(last["val_loss"]),
            "val_masked_tokens": data.info["val_masked_tokens"],
            "unigram_entropy_nats_per_char": data.info["unigram_entropy"],
            "tokenizer": hp["tokenizer"], "vocab_size": data.info["vocab_size"],
        }

    def summary(self, metrics):
        return [
            f"val masked-LM loss: {metrics['val_mlm_loss']:.4f} nats/masked token, accuracy "
            f"{metrics['val_mlm_accuracy']:.4f}, perplexity {metrics['val_mlm_perplexity']:.2f} "
            f"({metrics['val_masked_tokens']:,} masked tokens; unigram entropy of the val text "
            f"{metrics['unigram_entropy_nats_per_char']:.4f} nats/char)",
            f"{metrics['train_seconds']:.1f} s, {metrics['params']:,} parameters, "
            f"{metrics['tokenizer']} vocabulary of {metrics['vocab_size']} (with 5 specials)",
        ]


def _unmaskable(sp):
    return (sp["[PAD]"], sp["[CLS]"], sp["[SEP]"])


MLM_TASK = MaskedLMTask()


def build_bert(hp, steps_per_epoch, data):
    tokenizer = data.tokenizer
    model = MLM_TASK.make_model(hp, MLM_TASK.model_vocab_size(tokenizer))
    sp = special_ids(tokenizer)

    def dynamic_masking(input_ids, _targets):  # (B, T) -> corrupted (B, T), labels (B, T)
        return mask_tokens(input_ids, sp["[MASK]"], tokenizer.vocab_size, prob=hp["mask_prob"],
                           special_token_ids=_unmaskable(sp))

    optimizer = optim.AdamW(decay_groups(model, hp["weight_decay"]), lr=hp["lr"],
                            betas=(0.9, 0.98))
    total = hp["epochs"] * steps_per_epoch
    scheduler = optim.lr_scheduler.warmup_cosine(
        optimizer, warmup_steps=min(hp["warmup_steps"], total - 1), total_steps=total,
        min_lr=hp["lr"] / 10)
    return Parts(model, optimizer, masked_token_loss, scheduler,
                 batch_transform=dynamic_masking, forward=mlm_forward,
                 clip_grad_norm=hp["grad_clip"])


_BERT_SCHEMA = {
    **CORPUS_SCHEMA, "max_len": Int(3, MAX_CONTEXT),  # [CLS], a token, [SEP]
    "mask_prob": Real(0, 1, low_open=True, high_open=True),
    "hidden_size": Int(1, MAX_WIDTH), "num_layers": Int(1, MAX_LAYERS),
    "num_heads": Int(1, MAX_WIDTH), "intermediate_size": Int(1, MAX_WIDTH),
}


def _bert_fits(hp):
    bert_config(hp, vocab_estimate(hp) + len(SPECIALS))  # refuses a head split or a size


_BERT_DEFAULTS = {
    "tokenizer": "char", "bpe_vocab_size": 512, "corpus_chars": None, "val_fraction": 0.1,
    "epochs": 4, "batch_size": 16, "lr": 3e-3, "weight_decay": 0.01, "warmup_steps": 30,
    "grad_clip": 1.0, "eval_batch_size": 64, "max_len": 128, "mask_prob": 0.15,
    "hidden_size": 128, "num_layers": 2, "num_heads": 4, "intermediate_size": 512,
    "dropout": 0.0, "patience": None,
}

register("bert", "BERT encoder 2 layers, d=128, 4 heads pre-trained by masked LM on paragraphs "
                 "of the Python docs (char tokens; --tokenizer bpe)", _BERT_DEFAULTS,
         MLM_TASK, _BERT_SCHEMA, checks=(_bert_fits,))(build_bert)
# 30% masked: twice the signal per step of BERT's 15% (Wettig et al. 2023 find up to 40% fine)
register("bert-tiny", "BERT 1 layer, d=64, 32-token pieces, 30% masked, on 20k characters of the "
                      "Python docs for 4 epochs: a smoke test in seconds",
         {**_BERT_DEFAULTS, "corpus_chars": 20_000, "epochs": 4, "batch_size": 8, "max_len": 32,
          "hidden_size": 64, "num_layers": 1, "num_heads": 4, "intermediate_size": 128,
          "lr": 5e-3, "warmup_steps": 10, "mask_prob": 0.3, "eval_batch_size": 256},
         MLM_TASK, _BERT_SCHEMA, checks=(_bert_fits,))(build_bert)
