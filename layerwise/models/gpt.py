"""GPT: a decoder-only transformer language model (Radford et al. 2019), nanoGPT-style.

Parameter names are GPT-2's, so a GPT-2 checkpoint maps 1:1:
    transformer.wte.weight, transformer.wpe.weight,
    transformer.h.{i}.ln_1.{weight,bias}, transformer.h.{i}.attn.c_attn.{weight,bias},
    transformer.h.{i}.attn.c_proj.{weight,bias}, transformer.h.{i}.ln_2.{weight,bias},
    transformer.h.{i}.mlp.c_fc.{weight,bias}, transformer.h.{i}.mlp.c_proj.{weight,bias},
    transformer.ln_f.{weight,bias}, lm_head.weight (the same Parameter as transformer.wte.weight).
The layers here are nn.Linear, whose weight is (out, in) as in nanoGPT. Hugging Face's GPT-2
files store c_attn, c_proj and c_fc as Conv1D with the weight transposed, (in, out): a loader
for those files must transpose these four weights (and only these) before load_state_dict.

Pre-norm blocks (x + attn(ln_1(x)), x + mlp(ln_2(x))), a final ln_f, GELU with the tanh
approximation as GPT-2, and lm_head tied to the token embedding (Press & Wolf 2017).
Attention is written as a PyTorch user writes it (nanoGPT's CausalSelfAttention), through
``F.scaled_dot_product_attention``; its fast paths are those of any caller's attention.
"""

import math
from dataclasses import dataclass

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd.grad_mode import no_grad
from layerwise.autograd.tensor import Tensor
from layerwise.limits import (
    MAX_CONTEXT, MAX_LAYERS, MAX_VOCAB, MAX_WIDTH, Flag, Int, Real, SettingError,
    check_parameter_count, check_settings,
)
from layerwise.nn import functional as F
from layerwise.nn import init
from layerwise.nn.container import ModuleDict, ModuleList
from layerwise.nn.dropout import Dropout
from layerwise.nn.embedding import Embedding, positions
from layerwise.nn.linear import Linear
from layerwise.nn.module import Module
from layerwise.nn.normalization import LayerNorm
from layerwise.ops.movement import cat


@dataclass
class GPTConfig:
    vocab_size: int = 50304  # GPT-2's 50257 rounded up to a multiple of 64, as nanoGPT
    block_size: int = 1024
    n_layer: int = 12
    n_head: int = 12
    n_embd: int = 768
    dropout: float = 0.0
    bias: bool = True  # biases in Linear layers and LayerNorms, as GPT-2

    def __post_init__(self):
        # Every field is held to its bound and the parameters are counted before any layer
        # is built, so a crafted config fails in one line instead of exhausting memory.
        check_settings(CONFIG_SCHEMA, vars(self), where="GPTConfig")
        if self.n_embd % self.n_head:
            raise SettingError(f"GPTConfig.n_embd ({self.n_embd}) must be divisible by "
                               f"n_head ({self.n_head})")
        check_parameter_count(self.num_parameters(),
                              f"GPTConfig(n_layer={self.n_layer}, n_embd={self.n_embd}, "
                              f"vocab_size={self.vocab_size}, block_size={self.block_size})")

    def num_parameters(self):
        """The parameters of GPT(self), from the config alone (lm_head shares wte's)."""
        c, bias = self.n_embd, int(self.bias)
        norm = c * (1 + bias)  # a LayerNorm's weight (and bias)
        # ln_1, ln_2; c_attn 3c^2, attn c_proj c^2, c_fc 4c^2, mlp c_proj 4c^2 and their
        # biases 3c + c + 4c + c
        block = 2 * norm + 12 * c * c + bias * 9 * c
        return (self.vocab_size + self.block_size) * c + self.n_layer * block + norm


CONFIG_SCHEMA = {  # GPTConfig's fields and their bounds
    "vocab_size": Int(1, MAX_VOCAB), "block_size": Int(1, MAX_CONTEXT),
    "n_layer": Int(1, MAX_LAYERS), "n_head": Int(1, MAX_WIDTH), "n_embd": Int(1, MAX_WIDTH),
    "dropout": Real(0, 1, high_open=True), "bias": Flag(),
}


class KVCache:
    """The keys and values each layer has seen, (B, n_head, T_past, head_size) per layer.

    Passed to ``GPT.forward``, which appends the new tokens' keys and values, so the next call
    feeds only the tokens after them.
    """

    def __init__(self, n_layer):
        self.keys = [None] * n_layer
        self.values = [None] * n_layer

    def __len__(self):
        return 0 if self.keys[0] is None else self.keys[0].shape[2]

    def update(self, layer, k, v):
        """Append (B, nh, T_new, hs) keys and values; return all of them for this layer."""
        if self.keys[layer] is not None:
            k = cat([self.keys[layer], k], dim=2)  # (B, nh, T_past + T_new, hs)
            v = cat([self.values[layer], v], dim=2)
        self.keys[layer], self.values[layer] = k, v
        return k, v


class CausalSelfAttention(Module):
    def __init__(self, config):
        super().__init__()
        self.c_attn = Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v together
        self.c_proj = Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.resid_dropout = Dropout(config.dropout)
        self.n_head, self.n_embd, self.dropout = config.n_head, config.n_embd, config.dropout
        self.store_attn_weights = False  # set True to keep last_attn_weights (B, nh, T, T_total)
        self.last_attn_weights = None

    def forward(self, x, kv_cache=None, layer=0):
        B, T = x.shape[:2]
        # the head size from the projection, not from C: a layer with pruned heads
        # (compress/heads.py) projects to fewer channels than C
        q, k, v = self.c_attn(x).chunk(3, dim=2)  # (B, T, 3C) -> 3 x (B, T, C)
        q = q.view(B, T, self.n_head, -1).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, self.n_head, -1).transpose(1, 2)
        v = v.view(B, T, self.n_head, -1).transpose(1, 2)
        if kv_cache is not None:
            k, v = kv_cache.update(layer, k, v)  # (B, nh, T_past + T, hs)
        # The causal mask is aligned to the end of the keys, so with a cache the T new queries
        # see all past keys and the new ones up to their own position.
        dropout_p = self.dropout if self.training else 0.0
        if self.store_attn_weights:
            y, weights = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p,
                                                        is_causal=True, need_weights=True)
            self.last_attn_weights = weights.detach()
        else:
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=True)
        y = y.transpose(1, 2).contiguous().view(B, T, -1)  # (B, nh, T, hs) -> (B, T, C)
        return self.resid_dropout(self.c_proj(y))


class MLP(Module):
    def __init__(self, config):
        super().__init__()
        self.c_fc = Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.c_proj = Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.dropout = Dropout(config.dropout)

    def forward(self, x):
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x), approximate="tanh")))


class Block(Module):
    def __init__(self, config):
        super().__init__()
        self.ln_1 = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x, kv_cache=None, layer=0):
        x = x + self.attn(self.ln_1(x), kv_cache, layer)
        return x + self.mlp(self.ln_2(x))


class GPT(Module):
    """forward(idx (B, T) int64, targets=None, kv_cache=None) -> (logits (B, T, V), loss or None).

    Targets equal to -1 are ignored by the loss (nanoGPT's convention).
    """

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.transformer = ModuleDict(dict(
            wte=Embedding(config.vocab_size, config.n_embd),
            wpe=Embedding(config.block_size, config.n_embd),
            drop=Dropout(config.dropout),
            h=ModuleList([Block(config) for _ in range(config.n_layer)]),
            ln_f=LayerNorm(config.n_embd, bias=config.bias),
        ))
        self.lm_head = Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer.wte.weight = self.lm_head.weight  # tied: one Parameter under both names
        self._init_weights()

    def _init_weights(self):
        # GPT-2: N(0, 0.02) for weights and embeddings, zero biases; the projections into the
        # residual stream get std 0.02 / sqrt(2 n_layer), since 2 n_layer of them add up there.
        for module in self.modules():
            if isinstance(module, (Linear, Embedding)):
                init.normal_(module.weight, 0.0, 0.02)
            if isinstance(module, Linear) and module.bias is not None:
                init.zeros_(module.bias)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                init.normal_(p, 0.0, 0.02 / math.sqrt(2 * self.config.n_layer))

    def new_kv_cache(self):
        return KVCache(self.config.n_layer)

    def _hidden(self, idx, kv_cache=None):
        """Token ids (B, T) -> final hidden states (B, T, C), after ln_f."""
        if not isinstance(idx, Tensor):
            idx = Tensor(xp.asarray(idx))
        if idx.ndim != 2 or idx.dtype.kind not in "iu":
            raise ValueError(f"GPT expects integer token ids of shape (B, T), got {idx.dtype} "
                             f"of shape {tuple(idx.shape)}")
        past = 0 if kv_cache is None else len(kv_cache)
        b, t = idx.shape
        if past + t > self.config.block_size:
            raise ValueError(f"cannot forward {t} tokens after {past} cached ones: {past + t} > "
                             f"block_size={self.config.block_size}; crop the input to its last "
                             f"{self.config.block_size - past} tokens (or start a new cache)")
        pos = positions(past, past + t)  # (T,)
        tr = self.transformer
        x = tr.drop(tr.wte(idx) + tr.wpe(pos))  # (B, T, C) + (T, C)
        for i, block in enumerate(tr.h):
            x = block(x, kv_cache, i)
        return tr.ln_f(x)

    def forward(self, idx, targets=None, kv_cache=None):
        logits = self.lm_head(self._hidden(idx, kv_cache))  # (B, T, V)
        loss = None
        if targets is not None:
            if not isinstance(targets, Tensor):
                targets = Tensor(xp.asarray(targets))
            if tuple(targets.shape) != tuple(logits.shape[:2]):
                raise ValueError(f"GPT targets must have the shape of idx "
                                 f"{tuple(logits.shape[:2])}, got {tuple(targets.shape)}")
            loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1),
                                   ignore_index=-1)
        return logits, loss

    # --- generation ---------------------------------------------------------------------
    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None,
                 use_cache=True):
        """Continue each row of ``idx`` (B, T) by ``max_new_tokens`` tokens; returns (B, T + new).

        temperature 0 is greedy; otherwise logits / temperature, optionally kept to the top_k
        largest and to the smallest set whose probability reaches top_p (nucleus sampling,
        Holtzman et al. 2020). ``seed`` draws from a private generator, so the same seed gives
        the same tokens and the global one is untouched.

        Context longer than block_size is cropped to its last block_size tokens. With
        ``use_cache`` each step feeds only the new token while the sequence fits in
        block_size; once it would not, the cache is dropped and every later step re-runs the
        cropped window, exactly as without a cache (the positions of all tokens shift, so
        cached keys would be stale). Cached and uncached generation give the same tokens.
        """
        steps = self.stream(idx, max_new_tokens, temperature, top_k, top_p, seed, use_cache)
        tokens = idx.data if isinstance(idx, Tensor) else xp.asarray(idx)
        return Tensor(xp.concatenate([tokens.astype(backend.int64), *steps], axis=1))

    def stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None,
               use_cache=True):
        """The tokens ``generate`` appends, one step at a time: an iterator of (B, 1) int64
        arrays, so that a server can send each token as it is made. The arguments are checked
        now; ``generate`` is this iterator concatenated after ``idx``."""
        temperature, top_k, top_p = _check_sampling(temperature, top_k, top_p,
                                                    self.config.vocab_size)
        tokens = idx.data if isinstance(idx, Tensor) else xp.asarray(idx)
        if tokens.ndim != 2 or tokens.shape[1] == 0:
            raise ValueError(f"generate needs token ids of shape (B, T) with T >= 1, "
                             f"got shape {tokens.shape}")
        generator = xp.random.default_rng(seed) if seed is not None else backend.rng()
        return self._steps(tokens.astype(backend.int64), max_new_tokens, temperature, top_k,
                           top_p, generator, use_cache)

    def _steps(self, tokens, max_new_tokens, temperature, top_k, top_p, generator, use_cache):
        block = self.config.block_size
        was_training = self.training
        self.eval()
        cache = self.new_kv_cache() if use_cache else None
        pending = tokens  # tokens not yet in the cache
        try:
            for _ in range(max_new_tokens):
                if cache is not None and len(cache) + pending.shape[1] > block:
                    cache = None  # the window starts to slide: recompute from here on
                with no_grad():  # per step: the caller runs with its own mode between tokens
                    if cache is not None:
                        hidden = self._hidden(Tensor(pending), cache)
                    else:
                        hidden = self._hidden(Tensor(tokens[:, -block:]))
                    logits = self.lm_head(hidden[:, -1, :]).data  # (B, V): the last position
                nxt = _sample(logits, temperature, top_k, top_p, generator)[:, None]  # (B, 1)
                tokens = xp.concatenate([tokens, nxt], axis=1)
                pending = nxt
                yield nxt
        finally:
            self.train(was_training)

    # --- accounting ---------------------------------------------------------------------
    def num_params(self, non_embedding=True):
        """Parameters, counting the tied wte/lm_head matrix once. ``non_embedding`` leaves out
        the position embeddings (the token embeddings stay in: they are lm_head's weight), as
        nanoGPT and Kaplan et al. (2020) count."""
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel() if non_embedding else n

    def flops_per_token(self, seq_len=None):
        """Forward + backward FLOPs per token: 6 N for the matmuls with the N weights, plus
        12 L H Q T for attention (PaLM paper, appendix B; as nanoGPT's estimate_mfu)."""
        cfg = self.config
        t = cfg.block_size if seq_len is None else seq_len
        head_size = cfg.n_embd // cfg.n_head
        return 6 * self.num_params() + 12 * cfg.n_layer * cfg.n_head * head_size * t

    def estimate_mfu(self, fwdbwd_per_iter, dt, peak_flops, seq_len=None):
        """Model FLOPs utilisation: achieved FLOP/s over ``peak_flops`` (FLOP/s of the device),
        for ``fwdbwd_per_iter`` sequences per iteration taking ``dt`` seconds."""
        t = self.config.block_size if seq_len is None else seq_len
        return self.flops_per_token(t) * t * fwdbwd_per_iter / dt / peak_flops

    def optim_groups(self, weight_decay):
        """Parameter groups for AdamW: decay the matrices (and embeddings), not biases and norm
        weights, as GPT-2 / nanoGPT."""
        params = list(self.parameters())
        return [{"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
                {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]


def _check_sampling(temperature, top_k, top_p, vocab_size):
    if not isinstance(temperature, (int, float)) or temperature < 0:
        raise ValueError(f"temperature must be a number >= 0 (0 = greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive int or None, got {top_k!r}")
    if top_p is not None and not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1] or None, got {top_p!r}")
    return float(temperature), None if top_k is None else min(top_k, vocab_size), top_p


def _sample(logits, temperature, top_k, top_p, generator):
    """One token id per row of ``logits`` (B, V), as an int64 array (B,)."""
    if temperature == 0:
        return logits.argmax(axis=1).astype(backend.int64)
    z = logits.astype(xp.float64) / temperature
    if top_k is not None:
        kth = xp.partition(z, -top_k, axis=1)[:, -top_k:].min(axis=1, keepdims=True)
        z = xp.where(z < kth, -xp.inf, z)
    probs = xp.exp(z - z.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    if top_p is not None and top_p < 1:
        order = xp.argsort(-probs, axis=1, kind="stable")
        sorted_p = xp.take_along_axis(probs, order, axis=1)
        # keep a token while the probability before it is still short of top_p (so the most
        # likely token is always kept)
        drop_sorted = (xp.cumsum(sorted_p, axis=1) - sorted_p) >= top_p
        drop = xp.zeros_like(drop_sorted)
        xp.put_along_axis(drop, order, drop_sorted, axis=1)
        probs = xp.where(drop, 0.0, probs)
    cdf = xp.cumsum(probs, axis=1)  # (B, V)
    u = generator.random((logits.shape[0], 1)) * cdf[:, -1:]
    return (cdf > u).argmax(axis=1).astype(backend.int64)  # inverse-CDF draw
