"""A character- or word-level LSTM language model: embedding -> LSTM -> linear to the vocabulary.

The recipe of PyTorch's word_language_model example (Zaremba et al. 2014, "Recurrent Neural
Network Regularization"): dropout on the embeddings, between LSTM layers and on the LSTM
output; optionally the decoder shares the embedding matrix (Press & Wolf 2017, "Using the
Output Embedding to Improve Language Models"), which needs embed_dim == hidden_size.
"""

from layerwise import backend
from layerwise.backend import xp
from layerwise.autograd.grad_mode import no_grad
from layerwise.autograd.tensor import Tensor
from layerwise.limits import (
    MAX_LAYERS, MAX_VOCAB, MAX_WIDTH, Flag, Int, check_parameter_count, check_settings,
)
from layerwise.nn import init
from layerwise.nn.dropout import Dropout
from layerwise.nn.embedding import Embedding
from layerwise.nn.linear import Linear
from layerwise.nn.module import Module
from layerwise.nn.rnn import LSTM


_SIZES = {"vocab_size": Int(1, MAX_VOCAB), "embed_dim": Int(1, MAX_WIDTH),
          "hidden_size": Int(1, MAX_WIDTH), "num_layers": Int(1, MAX_LAYERS),
          "tie_weights": Flag()}


def num_parameters(vocab_size, embed_dim, hidden_size, num_layers=1, tie_weights=False):
    """The parameters of LSTMLanguageModel with these sizes, from the sizes alone."""
    h = hidden_size
    lstm = sum(4 * h * ((embed_dim if layer == 0 else h) + h) + 8 * h  # w_ih, w_hh, 2 biases
               for layer in range(num_layers))
    decoder = (0 if tie_weights else h * vocab_size) + vocab_size
    return vocab_size * embed_dim + lstm + decoder


def check_sizes(vocab_size, embed_dim, hidden_size, num_layers=1, tie_weights=False):
    """Hold the sizes to their bounds and the model to MAX_PARAMETERS before building it."""
    sizes = {"vocab_size": vocab_size, "embed_dim": embed_dim, "hidden_size": hidden_size,
             "num_layers": num_layers, "tie_weights": tie_weights}
    check_settings(_SIZES, sizes, where="LSTMLanguageModel")
    check_parameter_count(num_parameters(**sizes),
                          "LSTMLanguageModel(" + ", ".join(f"{k}={v}" for k, v in sizes.items())
                          + ")")


class LSTMLanguageModel(Module):
    """forward(idx (B, T) int64, state=None) -> (logits (B, T, vocab_size), (h_n, c_n)).

    ``state`` is the (h, c) pair a previous call returned, so a long text can be fed in
    chunks (truncated backpropagation through time: pass ``(h.detach(), c.detach())``).
    """

    def __init__(
        self, vocab_size, embed_dim, hidden_size, num_layers=1, dropout=0.0, tie_weights=False
    ):
        super().__init__()
        check_sizes(vocab_size, embed_dim, hidden_size, num_layers, tie_weights)
        if tie_weights and embed_dim != hidden_size:
            raise ValueError(
                f"tie_weights needs embed_dim == hidden_size (the decoder reuses the "
                f"embedding matrix), got embed_dim={embed_dim}, hidden_size={hidden_size}"
            )
        self.vocab_size, self.tie_weights = vocab_size, tie_weights
        self.embedding = Embedding(vocab_size, embed_dim)
        self.drop = Dropout(dropout)
        self.lstm = LSTM(
            embed_dim,
            hidden_size,
            num_layers,
            batch_first=True,
            dropout=dropout if num_layers > 1 else 0.0,
        )
        self.decoder = Linear(hidden_size, vocab_size)
        # The example's init: small uniform embeddings and decoder, zero decoder bias. N(0, 1)
        # embeddings would saturate the first gates for a while.
        init.uniform_(self.embedding.weight, -0.1, 0.1)
        init.zeros_(self.decoder.bias)
        if tie_weights:
            self.decoder.weight = self.embedding.weight
        else:
            init.uniform_(self.decoder.weight, -0.1, 0.1)

    def forward(self, idx, state=None):
        if not isinstance(idx, Tensor) or idx.ndim != 2:
            shape = tuple(idx.shape) if hasattr(idx, "shape") else type(idx).__name__
            raise ValueError(
                f"LSTMLanguageModel expects token ids of shape (batch, seq_len), got {shape}"
            )
        x = self.drop(self.embedding(idx))  # (B, T) -> (B, T, E)
        out, state = self.lstm(x, state)  # (B, T, H), ((L, B, H), (L, B, H))
        logits = self.decoder(self.drop(out))  # (B, T, V): Linear runs one (B*T, H) GEMM
        return logits, state

    def generate(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None):
        """Continue each row of ``idx`` (B, T) by ``max_new_tokens`` sampled tokens -> (B, T + n).

        The prefix runs once; after that each new token advances the carried (h, c) by one
        step, so the cost per token does not grow with the length. temperature == 0 is greedy;
        ``seed`` draws from a private generator, leaving the global one untouched.
        """
        steps = self.stream(idx, max_new_tokens, temperature, top_k, top_p, seed)
        return Tensor(xp.concatenate([idx.data, *steps], axis=1).astype(backend.int64))

    def stream(self, idx, max_new_tokens, temperature=1.0, top_k=None, top_p=None, seed=None):
        """The tokens ``generate`` appends, one step at a time: an iterator of (B, 1) int64
        arrays (a server sends each as it is made). The arguments are checked now."""
        if (
            isinstance(max_new_tokens, bool)
            or not isinstance(max_new_tokens, int)
            or max_new_tokens < 0
        ):
            raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
        _check_sampling(temperature, top_k, top_p)
        gen = backend.rng() if seed is None else xp.random.default_rng(seed)
        return self._steps(idx, max_new_tokens, temperature, top_k, top_p, gen)

    def _steps(self, idx, max_new_tokens, temperature, top_k, top_p, gen):
        was_training = self.training
        self.eval()
        try:
            if max_new_tokens == 0:
                return
            with no_grad():
                logits, state = self(idx)
            for step in range(max_new_tokens):
                token = sample_next(logits.data[:, -1], temperature, top_k, top_p, gen)  # (B,)
                yield token[:, None].astype(backend.int64)
                if step + 1 < max_new_tokens:
                    with no_grad():
                        logits, state = self(Tensor(token[:, None]), state)  # one step
        finally:
            self.train(was_training)


def _check_sampling(temperature, top_k, top_p):
    if (
        isinstance(temperature, bool)
        or not isinstance(temperature, (int, float))
        or temperature < 0
    ):
        raise ValueError(f"temperature must be a number >= 0 (0 is greedy), got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None or an int >= 1, got {top_k!r}")
    if top_p is not None and (
        isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1
    ):
        raise ValueError(f"top_p must be None or a number in (0, 1], got {top_p!r}")


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, gen=None):
    """One token per row of ``logits`` (B, V), an xp array -> int64 (B,).

    top_k keeps the k largest logits; top_p (nucleus sampling, Holtzman et al. 2020) keeps the
    smallest set of most likely tokens whose probabilities add up to at least top_p.
    """
    if temperature == 0:
        return logits.argmax(axis=-1).astype(backend.int64)
    gen = backend.rng() if gen is None else gen
    z = logits.astype(xp.float64) / temperature
    if top_k is not None and top_k < z.shape[-1]:
        kth = xp.partition(z, -top_k, axis=-1)[:, -top_k, None]  # (B, 1): the k-th largest
        z = xp.where(z < kth, -xp.inf, z)
    probs = xp.exp(z - z.max(axis=-1, keepdims=True))
    probs /= probs.sum(axis=-1, keepdims=True)
    if top_p is not None and top_p < 1:
        order = xp.argsort(-probs, axis=-1, kind="stable")
        sorted_p = xp.take_along_axis(probs, order, axis=-1)
        before = xp.cumsum(sorted_p, axis=-1) - sorted_p  # mass of the more likely tokens
        drop = xp.zeros(probs.shape, dtype=bool)
        xp.put_along_axis(drop, order, before >= top_p, axis=-1)
        probs = xp.where(drop, 0.0, probs)
    cdf = xp.cumsum(probs, axis=-1)
    u = gen.random((probs.shape[0], 1)) * cdf[:, -1:]
    token = (cdf <= u).sum(axis=-1)
    return xp.minimum(token, probs.shape[-1] - 1).astype(backend.int64)
