"""BERT: a bidirectional transformer encoder (Devlin et al. 2019), its masked-LM and
classification heads, and sentence embeddings for cosine-similarity search.

Module names follow Hugging Face's ``transformers`` BERT, so one of its checkpoints maps 1:1
(HF BERT uses nn.Linear, (out, in), so no weight needs transposing, unlike GPT-2's Conv1D):
    embeddings.{word_embeddings, position_embeddings, token_type_embeddings, LayerNorm}
    encoder.layer.{i}.attention.self.{query, key, value}
    encoder.layer.{i}.attention.output.{dense, LayerNorm}
    encoder.layer.{i}.intermediate.dense, encoder.layer.{i}.output.{dense, LayerNorm}
    pooler.dense
    BertForMaskedLM: bert.*, cls.predictions.{bias, transform.dense, transform.LayerNorm,
                     decoder} (decoder.weight tied to the word embeddings, decoder.bias to bias)
    BertForSequenceClassification: bert.*, classifier
The layers are post-norm, x = LayerNorm(x + sublayer(x)), as the original BERT, because that
is what those checkpoints were trained with.
"""

from dataclasses import dataclass

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd.tensor import Tensor
from layerwise.limits import (
    MAX_CONTEXT, MAX_LAYERS, MAX_VOCAB, MAX_WIDTH, Choice, Int, Real, SettingError,
    check_parameter_count, check_settings,
)
from layerwise.nn import functional as F
from layerwise.nn import init
from layerwise.nn.container import ModuleList
from layerwise.nn.dropout import Dropout
from layerwise.nn.embedding import Embedding, positions
from layerwise.nn.linear import Linear
from layerwise.nn.module import Module
from layerwise.nn.normalization import LayerNorm
from layerwise.ops.attention import scaled_dot_product_attention

_ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "gelu_new": lambda x: F.gelu(x, approximate="tanh")}


@dataclass
class BertConfig:
    vocab_size: int = 30522
    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"  # exact (erf) GELU as BERT; "gelu_new" is the tanh approximation
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    pad_token_id: int = 0
    initializer_range: float = 0.02
    num_labels: int = 2

    def __post_init__(self):
        # Every field is held to its bound and the parameters are counted before any layer
        # is built, so a crafted config.json fails in one line instead of exhausting memory.
        check_settings(CONFIG_SCHEMA, vars(self), where="BertConfig")
        if self.hidden_size % self.num_attention_heads:
            raise SettingError(f"BertConfig.hidden_size ({self.hidden_size}) must be divisible "
                               f"by num_attention_heads ({self.num_attention_heads})")
        if self.pad_token_id >= self.vocab_size:
            raise SettingError(f"BertConfig.pad_token_id ({self.pad_token_id}) must be a token "
                               f"of the vocabulary, below vocab_size ({self.vocab_size})")
        check_parameter_count(self.num_parameters(),
                              f"BertConfig(num_hidden_layers={self.num_hidden_layers}, "
                              f"hidden_size={self.hidden_size}, intermediate_size="
                              f"{self.intermediate_size}, vocab_size={self.vocab_size})")

    def num_parameters(self):
        """The parameters of the encoder, BertModel(self, add_pooling_layer=False), from the
        config alone: the pooler and the heads add a few more."""
        h, i = self.hidden_size, self.intermediate_size
        embeddings = (self.vocab_size + self.max_position_embeddings + self.type_vocab_size) * h
        # query, key, value, output dense (4 h^2 + 4 h), two LayerNorms (4 h), intermediate
        # (h i + i) and output (i h + h) denses
        layer = 4 * h * h + 2 * h * i + 9 * h + i
        return embeddings + 2 * h + self.num_hidden_layers * layer


_PROBABILITY = Real(0, 1, high_open=True)
CONFIG_SCHEMA = {  # BertConfig's fields and their bounds
    "vocab_size": Int(1, MAX_VOCAB), "hidden_size": Int(1, MAX_WIDTH),
    "num_hidden_layers": Int(1, MAX_LAYERS), "num_attention_heads": Int(1, MAX_WIDTH),
    "intermediate_size": Int(1, MAX_WIDTH), "hidden_act": Choice(tuple(sorted(_ACTIVATIONS))),
    "hidden_dropout_prob": _PROBABILITY, "attention_probs_dropout_prob": _PROBABILITY,
    "max_position_embeddings": Int(1, MAX_CONTEXT), "type_vocab_size": Int(1, MAX_VOCAB),
    "layer_norm_eps": Real(0, 1, low_open=True), "pad_token_id": Int(0, MAX_VOCAB),
    "initializer_range": Real(0), "num_labels": Int(1, MAX_VOCAB),
}


class BertEmbeddings(Module):
    def __init__(self, config):
        super().__init__()
        self.word_embeddings = Embedding(config.vocab_size, config.hidden_size,
                                         padding_idx=config.pad_token_id)
        self.position_embeddings = Embedding(config.max_position_embeddings, config.hidden_size)
        self.token_type_embeddings = Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids, token_type_ids=None):
        b, t = input_ids.shape
        if t > self.position_embeddings.num_embeddings:
            raise ValueError(f"BERT got {t} tokens but has max_position_embeddings="
                             f"{self.position_embeddings.num_embeddings}; truncate the input")
        if token_type_ids is None:
            token_type_ids = Tensor(xp.zeros((b, t), dtype=backend.int64))
        x = (self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
             + self.position_embeddings(positions(0, t)))  # (B, T, H) + (T, H)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(Module):
    def __init__(self, config):
        super().__init__()
        h = config.hidden_size
        self.num_heads = config.num_attention_heads
        self.query, self.key, self.value = Linear(h, h), Linear(h, h), Linear(h, h)
        self.dropout = Dropout(config.attention_probs_dropout_prob)
        self.store_attn_weights = False  # set True to keep last_attn_weights (B, heads, T, T)
        self.last_attn_weights = None

    def forward(self, x, mask):
        b, t, c = x.shape
        q, k, v = (layer(x).reshape(b, t, self.num_heads, c // self.num_heads).transpose(1, 2)
                   for layer in (self.query, self.key, self.value))  # (B, T, H) -> (B, nh, T, hd)
        y = scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                         dropout_p=self.dropout.p if self.training else 0.0,
                                         need_weights=self.store_attn_weights)
        if self.store_attn_weights:
            y, weights = y
            self.last_attn_weights = weights.detach()
        return y.transpose(1, 2).reshape(b, t, c)  # (B, nh, T, hd) -> (B, T, H)


class BertSelfOutput(Module):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, hidden, residual):
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)  # post-norm


class BertAttention(Module):
    def __init__(self, config):
        super().__init__()
        self.self = BertSelfAttention(config)
        self.output = BertSelfOutput(config)

    def forward(self, x, mask):
        return self.output(self.self(x, mask), x)


class BertIntermediate(Module):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.intermediate_size)
        self.act = _ACTIVATIONS[config.hidden_act]

    def forward(self, x):
        return self.act(self.dense(x))


class BertOutput(Module):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.intermediate_size, config.hidden_size)
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = Dropout(config.hidden_dropout_prob)

    def forward(self, hidden, residual):
        return self.LayerNorm(self.dropout(self.dense(hidden)) + residual)  # post-norm


class BertLayer(Module):
    def __init__(self, config):
        super().__init__()
        self.attention = BertAttention(config)
        self.intermediate = BertIntermediate(config)
        self.output = BertOutput(config)

    def forward(self, x, mask):
        x = self.attention(x, mask)
        return self.output(self.intermediate(x), x)


class BertEncoder(Module):
    def __init__(self, config):
        super().__init__()
        self.layer = ModuleList([BertLayer(config) for _ in range(config.num_hidden_layers)])

    def forward(self, x, mask=None):
        for layer in self.layer:
            x = layer(x, mask)
        return x


class BertPooler(Module):
    """tanh(W h_[CLS] + b): the sentence vector BERT's next-sentence objective trained."""

    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)

    def forward(self, hidden):
        return F.tanh(self.dense(hidden[:, 0]))


def _ids(x, name):
    x = x if isinstance(x, Tensor) else Tensor(xp.asarray(x))
    if x.ndim != 2 or x.dtype.kind not in "iub":
        raise ValueError(f"BERT {name} must be integers of shape (B, T), got {x.dtype} "
                         f"of shape {tuple(x.shape)}")
    return x


def _init_bert(module, config):
    """As HF BERT: N(0, initializer_range) weights and embeddings, zero biases and padding row."""
    for m in module.modules():
        if isinstance(m, (Linear, Embedding)):
            init.normal_(m.weight, 0.0, config.initializer_range)
        if isinstance(m, Linear) and m.bias is not None:
            init.zeros_(m.bias)
        if isinstance(m, Embedding) and m.padding_idx is not None:
            m.weight.data[m.padding_idx] = 0


class BertModel(Module):
    """forward(input_ids (B, T), attention_mask=None (1 = token, 0 = padding), token_type_ids=None)
    -> (last_hidden_state (B, T, H), pooler_output (B, H) or None)."""

    def __init__(self, config, add_pooling_layer=True):
        super().__init__()
        self.config = config
        self.embeddings = BertEmbeddings(config)
        self.encoder = BertEncoder(config)
        self.pooler = BertPooler(config) if add_pooling_layer else None
        _init_bert(self, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None):
        input_ids = _ids(input_ids, "input_ids")
        mask = None
        if attention_mask is not None:
            am = _ids(attention_mask, "attention_mask")
            if am.shape != input_ids.shape:
                raise ValueError(f"attention_mask shape {tuple(am.shape)} must match input_ids "
                                 f"{tuple(input_ids.shape)}")
            # (B, T) -> (B, 1, 1, T), True: attend; through ops, so an exported graph computes
            # it from its attention_mask input instead of freezing the example's
            mask = (am != 0)[:, None, None, :]
        if token_type_ids is not None:
            token_type_ids = _ids(token_type_ids, "token_type_ids")
        hidden = self.encoder(self.embeddings(input_ids, token_type_ids), mask)
        return hidden, None if self.pooler is None else self.pooler(hidden)

    def embed(self, input_ids, attention_mask=None, pooling="mean", token_type_ids=None):
        """L2-normalised sentence embeddings (B, H): the mean of the token states over the
        non-padding tokens ("mean", as Sentence-BERT), or the pooler's [CLS] vector ("cls").
        Their dot products are cosine similarities: see ``nearest``."""
        if pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {pooling!r}")
        hidden, pooled = self(input_ids, attention_mask, token_type_ids)
        if pooling == "cls":
            if pooled is None:
                raise ValueError("pooling='cls' needs the pooler; build BertModel with "
                                 "add_pooling_layer=True")
            sentence = pooled
        else:
            sentence = mean_pool(hidden, attention_mask)
        norm = ((sentence * sentence).sum(dim=-1, keepdim=True) + 1e-12).sqrt()
        return sentence / norm


def mean_pool(hidden, attention_mask=None):
    """Mean of ``hidden`` (B, T, H) over the tokens where attention_mask (B, T) is 1."""
    if attention_mask is None:
        return hidden.mean(dim=1)
    am = attention_mask.data if isinstance(attention_mask, Tensor) else xp.asarray(attention_mask)
    weights = am.astype(hidden.dtype)[:, :, None]  # (B, T, 1)
    counts = xp.maximum(weights.sum(axis=1), 1)  # (B, 1): an all-padding row gives zeros
    return (hidden * Tensor(weights)).sum(dim=1) / Tensor(counts)


class BertPredictionHeadTransform(Module):
    def __init__(self, config):
        super().__init__()
        self.dense = Linear(config.hidden_size, config.hidden_size)
        self.transform_act_fn = _ACTIVATIONS[config.hidden_act]
        self.LayerNorm = LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x):
        return self.LayerNorm(self.transform_act_fn(self.dense(x)))


class BertLMPredictionHead(Module):
    def __init__(self, config):
        super().__init__()
        self.transform = BertPredictionHeadTransform(config)
        self.decoder = Linear(config.hidden_size, config.vocab_size)
        self.bias = self.decoder.bias  # one Parameter under both names, as HF
        init.zeros_(self.bias)

    def forward(self, x):
        return self.decoder(self.transform(x))


class BertOnlyMLMHead(Module):
    def __init__(self, config):
        super().__init__()
        self.predictions = BertLMPredictionHead(config)

    def forward(self, x):
        return self.predictions(x)


class BertForMaskedLM(Module):
    """forward(input_ids, attention_mask=None, token_type_ids=None, labels=None) -> (logits
    (B, T, V), loss or None); labels are -100 where no prediction is asked (see mask_tokens)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.bert = BertModel(config, add_pooling_layer=False)
        self.cls = BertOnlyMLMHead(config)
        _init_bert(self.cls, config)
        self.cls.predictions.decoder.weight = self.bert.embeddings.word_embeddings.weight  # tied

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        hidden, _ = self.bert(input_ids, attention_mask, token_type_ids)
        logits = self.cls(hidden)
        loss = None
        if labels is not None:
            labels = _ids(labels, "labels")
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1),
                                   ignore_index=-100)
        return logits, loss


class BertForSequenceClassification(Module):
    """The [CLS] pooler output through dropout and a linear ``classifier`` -> (logits (B,
    num_labels), cross-entropy loss against ``labels`` (B,) or None)."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.bert = BertModel(config)
        self.dropout = Dropout(config.hidden_dropout_prob)
        self.classifier = Linear(config.hidden_size, config.num_labels)
        _init_bert(self.classifier, config)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None):
        _, pooled = self.bert(input_ids, attention_mask, token_type_ids)
        logits = self.classifier(self.dropout(pooled))
        loss = None if labels is None else F.cross_entropy(logits, labels)
        return logits, loss


def mask_tokens(ids, mask_token_id, vocab_size, prob=0.15, seed=None, special_token_ids=(),
                attention_mask=None):
    """BERT's masked-LM corruption (Devlin et al. 2019, section 3.1) -> (input_ids, labels).

    Each token that is not padding (attention_mask 0) or a special token is chosen with
    probability ``prob``; a chosen token becomes ``mask_token_id`` 80% of the time, a uniformly
    random token 10%, and stays itself 10%. labels hold the original id where chosen, -100
    elsewhere (ignored by the loss). ``seed`` uses a private generator.
    """
    if not 0 <= prob <= 1:
        raise ValueError(f"mask_tokens prob must be in [0, 1], got {prob}")
    data = ids.data if isinstance(ids, Tensor) else xp.asarray(ids)
    if data.dtype.kind not in "iu":
        raise TypeError(f"mask_tokens needs integer ids, got dtype {data.dtype}")
    gen = xp.random.default_rng(seed) if seed is not None else backend.rng()
    candidates = ~xp.isin(data, xp.asarray(list(special_token_ids), dtype=data.dtype))
    if attention_mask is not None:
        am = attention_mask.data if isinstance(attention_mask, Tensor) else attention_mask
        candidates &= xp.asarray(am).astype(bool)
    chosen = (gen.random(data.shape) < prob) & candidates
    action = gen.random(data.shape)
    corrupted = data.astype(backend.int64).copy()
    corrupted[chosen & (action < 0.8)] = mask_token_id
    randomise = chosen & (action >= 0.8) & (action < 0.9)
    corrupted[randomise] = gen.integers(0, vocab_size, size=int(randomise.sum()))
    labels = xp.where(chosen, data, -100).astype(backend.int64)
    return Tensor(corrupted), Tensor(labels)


def nearest(query_emb, corpus_emb, k=5):
    """The k corpus rows most cosine-similar to each query row -> (scores, indices), best first.

    query_emb (Q, H) or (H,), corpus_emb (N, H); both are normalised here, so raw vectors work
    too. Returns (Q, k) arrays of similarities and int64 row indices ((k,) for a 1-D query).
    """
    q = query_emb.data if isinstance(query_emb, Tensor) else xp.asarray(query_emb)
    c = corpus_emb.data if isinstance(corpus_emb, Tensor) else xp.asarray(corpus_emb)
    single = q.ndim == 1
    q = q[None] if single else q
    if c.ndim != 2 or q.shape[1] != c.shape[1]:
        raise ValueError(f"nearest needs query (Q, H) and corpus (N, H) with the same H, got "
                         f"{tuple(q.shape)} and {tuple(c.shape)}")
    if not 1 <= k <= c.shape[0]:
        raise ValueError(f"nearest k must be in [1, {c.shape[0]}] (the corpus size), got {k}")
    q = q / xp.maximum(xp.linalg.norm(q, axis=1, keepdims=True), 1e-12)
    c = c / xp.maximum(xp.linalg.norm(c, axis=1, keepdims=True), 1e-12)
    sims = q @ c.T  # (Q, N)
    top = xp.argpartition(-sims, k - 1, axis=1)[:, :k]
    order = xp.argsort(-xp.take_along_axis(sims, top, axis=1), axis=1, kind="stable")
    indices = xp.take_along_axis(top, order, axis=1).astype(backend.int64)
    scores = xp.take_along_axis(sims, indices, axis=1)
    return (scores[0], indices[0]) if single else (scores, indices)
