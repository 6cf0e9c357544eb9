"""Hugging Face checkpoints from a local directory into layerwise's GPT and BERT.

A directory written by ``save_pretrained`` holds ``config.json`` and either one
``model.safetensors`` or shards ``model-0000x-of-0000y.safetensors`` listed in
``model.safetensors.index.json`` (``weight_map``: tensor name -> shard file). Only safetensors
are read: ``pytorch_model.bin`` is a pickle and could run code when opened.

GPT-2 (``GPT2LMHeadModel``, also the bare ``GPT2Model`` layout without ``transformer.``):
HF stores c_attn, c_proj and c_fc as Conv1D, whose weight is (in, out), so those weights are
transposed into nn.Linear's (out, in). The ``attn.bias`` / ``attn.masked_bias`` entries of old
files are the causal-mask buffers, not parameters, and are skipped. lm_head is tied to wte.

BERT: layerwise's names are HF's, so the tensors load as they are; old checkpoints' LayerNorm
``gamma`` / ``beta`` are renamed to ``weight`` / ``bias``.

A config.json is held to the model config's bounds (types, per-field limits, and a parameter
count computed from the config) before any layer is built, and the shards an index names must
be files of the checkpoint directory: a crafted file fails in one line (BadFileError) naming
the file, the key and the value, instead of allocating until memory runs out.

    model = from_pretrained("path/to/gpt2")          # GPT, in eval mode
    tokens = model.generate(ids, max_new_tokens=20, temperature=0)
"""

import json
import os
from collections import OrderedDict

from layerwise import serialization
from layerwise.errors import BadFileError
from layerwise.limits import Real, SettingError, check_settings, shown
from layerwise.models import bert, gpt
from layerwise.models.bert import BertConfig, BertForMaskedLM, BertModel
from layerwise.models.gpt import GPT, GPTConfig
from layerwise.nn.normalization import LayerNorm

INDEX_FILE = "model.safetensors.index.json"
WEIGHTS_FILE = "model.safetensors"
_CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def config_file(path):
    return os.path.join(os.fspath(path), "config.json")


def read_config(path):
    """The parsed ``config.json`` of a checkpoint directory (a JSON object)."""
    file = config_file(path)
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{path} has no config.json; expected a directory written by "
                                f"save_pretrained (config.json + model.safetensors)")
    return _read_json_object(file)


def _read_json_object(file):
    try:
        with open(file, encoding="utf-8") as f:
            value = json.load(f)
    except ValueError as err:  # not JSON, not UTF-8, or a number of thousands of digits
        raise BadFileError(f"{file} is not valid JSON: {err}") from None
    if not isinstance(value, dict):
        raise BadFileError(f"{file}: expected a JSON object, got {shown(value)}")
    return value


def _shard_path(path, index, shard):
    """A shard the index names, which must be a file name inside the checkpoint directory."""
    if not isinstance(shard, str) or os.path.basename(shard) != shard or \
            shard in ("", ".", ".."):
        raise BadFileError(f"{index}: weight_map names the shard {shown(shard)}; expected a file "
                           f"name inside {path}, like model-00001-of-00002.safetensors")
    return os.path.join(path, shard)


def load_state_dict(path):
    """All tensors of a checkpoint directory (single file or shards) as name -> Tensor."""
    path = os.fspath(path)
    single, index = os.path.join(path, WEIGHTS_FILE), os.path.join(path, INDEX_FILE)
    if os.path.isfile(single):
        return serialization.load(single)
    if os.path.isfile(index):
        weight_map = _read_json_object(index).get("weight_map")
        if not isinstance(weight_map, dict):
            raise BadFileError(f"{index}: weight_map {shown(weight_map)} is not an object of "
                               f"tensor name -> shard file")
        shards = {shard: _shard_path(path, index, shard) for shard in weight_map.values()}
        state = OrderedDict()
        for shard in sorted(shards):
            tensors = serialization.load(shards[shard])
            state.update((k, v) for k, v in tensors.items() if weight_map.get(k) == shard)
        missing = sorted(set(weight_map) - set(state))
        if missing:
            raise ValueError(f"{index} lists tensors its shards do not hold: {missing[:5]}")
        return state
    found = sorted(os.listdir(path)) if os.path.isdir(path) else []
    hint = (" (pytorch_model.bin is a pickle, which layerwise never opens: convert it with "
            "`transformers` save_pretrained(..., safe_serialization=True))"
            if "pytorch_model.bin" in found else "")
    raise FileNotFoundError(f"{path} has neither {WEIGHTS_FILE} nor {INDEX_FILE}; found "
                            f"{found}{hint}")


# --- GPT-2 -------------------------------------------------------------------------------------


_GPT2_KEYS = {"vocab_size": "vocab_size", "n_positions": "block_size", "n_layer": "n_layer",
              "n_head": "n_head", "n_embd": "n_embd"}  # HF name -> GPTConfig field
# GPTConfig's bounds under the file's names, and the one other value the loader reads
_GPT2_SCHEMA = {key: gpt.CONFIG_SCHEMA[field] for key, field in _GPT2_KEYS.items()}
_GPT2_OPTIONAL = {"layer_norm_epsilon": Real(0, 1, low_open=True)}


def gpt2_config(hf, source="config.json"):
    """GPTConfig from a GPT-2 config.json dict; refuses variants layerwise's GPT cannot run,
    and values out of GPTConfig's bounds (BadFileError naming ``source``, key and value)."""
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"GPT-2 activation_function {act!r} is not supported; layerwise's GPT "
                         f"uses the tanh GELU ('gelu_new')")
    check_settings(_GPT2_SCHEMA, hf, error=BadFileError, where=source)
    check_settings(_GPT2_OPTIONAL, hf, error=BadFileError, where=source, required=False)
    try:  # the head split and the parameter count, before any layer is built
        config = GPTConfig(**{field: hf[key] for key, field in _GPT2_KEYS.items()}, dropout=0.0,
                           bias=True)
    except SettingError as err:
        raise BadFileError(f"{source}: {err}") from None
    n_embd = config.n_embd
    if hf.get("n_inner") not in (None, 4 * n_embd):
        raise ValueError(f"GPT-2 n_inner={shown(hf['n_inner'])} is not supported; layerwise's "
                         f"GPT uses 4 * n_embd = {4 * n_embd}")
    if hf.get("scale_attn_by_inverse_layer_idx") or not hf.get("scale_attn_weights", True):
        raise ValueError("GPT-2 attention scaling other than 1/sqrt(head_size) is not supported")
    return config


def gpt2_state_dict(tensors):
    """HF GPT-2 tensors -> layerwise GPT state dict: prefix, Conv1D transpose, tied head."""
    out = OrderedDict()
    for name, t in tensors.items():
        if name.split(".")[-2:] in (["attn", "bias"], ["attn", "masked_bias"]):
            continue  # the causal-mask buffers of old files, not parameters
        key = name if name.startswith(("transformer.", "lm_head.")) else "transformer." + name
        if key.endswith(_CONV1D):
            t = t.T  # Conv1D (in, out) -> Linear (out, in)
        out[key] = t
    out.setdefault("lm_head.weight", out.get("transformer.wte.weight"))  # tied
    return out


def load_gpt2(path):
    """A GPT-2 checkpoint directory as a layerwise GPT in eval mode."""
    hf = read_config(path)
    model = GPT(gpt2_config(hf, config_file(path)))
    eps = hf.get("layer_norm_epsilon", 1e-5)
    for m in model.modules():
        if isinstance(m, LayerNorm):
            m.eps = eps
    model.load_state_dict(gpt2_state_dict(load_state_dict(path)))
    return model.eval()


# --- BERT --------------------------------------------------------------------------------------


def bert_config(hf, source="config.json"):
    """BertConfig from a BERT config.json dict; values out of BertConfig's bounds are a
    BadFileError naming ``source``, key and value."""
    if hf.get("position_embedding_type", "absolute") != "absolute":
        raise ValueError(f"BERT position_embedding_type {hf['position_embedding_type']!r} is not "
                         f"supported; layerwise's BERT has absolute position embeddings")
    given = {k: v for k, v in hf.items() if k in BertConfig.__dataclass_fields__ and v is not None}
    check_settings(bert.CONFIG_SCHEMA, given, error=BadFileError, where=source, required=False)
    try:  # the head split and the parameter count, before any layer is built
        return BertConfig(**given)
    except SettingError as err:
        raise BadFileError(f"{source}: {err}") from None


def bert_state_dict(tensors, prefix):
    """HF BERT tensors with ``prefix`` ("bert." for BertForMaskedLM, "" for BertModel)."""
    out = OrderedDict()
    for name, t in tensors.items():
        name = name.replace("LayerNorm.gamma", "LayerNorm.weight")
        name = name.replace("LayerNorm.beta", "LayerNorm.bias")
        if name.startswith(("cls.seq_relationship", "position_ids")) or \
                name.endswith("embeddings.position_ids"):
            continue  # the next-sentence head and a constant buffer: not in layerwise's BERT
        body = name.removeprefix("bert.")
        if prefix == "":
            if name.startswith("cls."):
                continue  # a BertModel takes the encoder only
            out[body] = t
        else:
            out[name if name.startswith("cls.") else prefix + body] = t
    return out


def load_bert(path, masked_lm=None):
    """A BERT checkpoint as BertForMaskedLM (``masked_lm=True``, or None when the checkpoint has
    the MLM head) or BertModel, in eval mode."""
    hf = read_config(path)
    config = bert_config(hf, config_file(path))
    tensors = load_state_dict(path)
    has_head = any(k.startswith("cls.predictions") for k in tensors)
    if masked_lm is None:
        masked_lm = has_head
    if masked_lm and not has_head:
        raise ValueError(f"{path} has no masked-LM head (cls.predictions.*); load it with "
                         f"masked_lm=False for the bare encoder")
    if masked_lm:
        model = BertForMaskedLM(config)
        state = bert_state_dict(tensors, "bert.")
        dec = "cls.predictions.decoder."
        state.setdefault(dec + "weight", state["bert.embeddings.word_embeddings.weight"])
        state.setdefault(dec + "bias", state["cls.predictions.bias"])
    else:
        has_pooler = any("pooler." in k for k in tensors)
        model = BertModel(config, add_pooling_layer=has_pooler)
        state = bert_state_dict(tensors, "")
    model.load_state_dict(state)
    return model.eval()


def from_pretrained(path):
    """Load a GPT-2 or BERT checkpoint directory by its config's ``model_type``."""
    kind = read_config(path).get("model_type")
    if kind == "gpt2":
        return load_gpt2(path)
    if kind == "bert":
        return load_bert(path)
    raise ValueError(f"{path}: model_type {kind!r} is not supported; layerwise loads 'gpt2' "
                     f"and 'bert'")
