"""Text models behind the server: a GPT or LSTM run writes text, a BERT run embeds it.

A generation request is one job on the model's inference thread (prompts of different
lengths do not share a batch); with ``emit`` set, each piece of text is handed to it as its
token is sampled, so a server can stream it. The text of a request equals what
``layerwise generate`` prints for the same prompt, settings and seed.
"""

import secrets
import threading
from dataclasses import dataclass, field

from layerwise.autograd import Tensor
from layerwise.backend import xp
from layerwise.errors import RunError
from layerwise.limits import MAX_PROMPT_CHARS, MAX_SEED, MAX_VOCAB, shown
from layerwise.serve.inputs import InputError
from layerwise.serve.models import ServedModel

DEFAULT_MAX_NEW_TOKENS = 512  # the most a request may ask for, unless the server says other
DEFAULT_NEW_TOKENS = 100  # what a request that names no max_new_tokens gets (capped as above)
DEFAULT_TEMPERATURE = 0.8  # as `layerwise generate`
MAX_TEMPERATURE = 100.0  # past this sampling is uniform to float precision
MAX_EMBED_CHARS = MAX_PROMPT_CHARS  # characters of one text to embed
# A UTF-8 character is at most 4 bytes, so at most 4 byte-level tokens: decoding the new
# tokens after this many of the prompt's keeps a character split across the boundary whole.
_BOUNDARY_TOKENS = 4
GENERATE_FIELDS = ("prompt", "max_new_tokens", "temperature", "top_k", "top_p", "seed",
                   "stream")


@dataclass
class GenerationRequest:
    prompt: str
    ids: list  # the prompt's token ids
    max_new_tokens: int
    temperature: float
    top_k: int = None
    top_p: float = None
    seed: int = 0
    stream: bool = False
    emit: object = None  # called with each new piece of text, on the inference thread
    cancelled: threading.Event = field(default_factory=threading.Event)


class LanguageModel(ServedModel):
    """A GPT or LSTM run: POST .../generate with a prompt; the text, or a stream of it."""

    kind = "text-generation"
    endpoint = "generate"
    batchable = False

    def __init__(self, trained, max_new_tokens=None):
        super().__init__(trained.run_dir, trained.config)
        self.model, self.tokenizer = trained.model, trained.tokenizer
        self.max_new_tokens = DEFAULT_MAX_NEW_TOKENS if max_new_tokens is None \
            else max_new_tokens
        self.use_cache = {} if not hasattr(self.model, "new_kv_cache") else {"use_cache": True}

    def input_spec(self):
        return {"prompt": f"text, 1 to {MAX_PROMPT_CHARS:,} characters",
                "max_new_tokens": f"0 to {self.max_new_tokens} (default "
                                  f"{min(DEFAULT_NEW_TOKENS, self.max_new_tokens)})",
                "temperature": f"0 (greedy) to {MAX_TEMPERATURE:g} (default "
                               f"{DEFAULT_TEMPERATURE})",
                "top_k": "null or an int >= 1", "top_p": "null or a number in (0, 1]",
                "seed": f"null (a random one, returned) or 0 to {MAX_SEED}",
                "stream": "false, or true for server-sent events"}

    def parse(self, body):
        """A GenerationRequest from the JSON body of POST .../generate."""
        if not isinstance(body, dict):
            raise InputError(f'expected a JSON object such as {{"prompt": "The "}}; got '
                             f"{shown(body)}")
        unknown = [key for key in body if key not in GENERATE_FIELDS]
        if unknown:
            raise InputError(f"unknown field {unknown[0]!r}; a generate request takes "
                             f"{', '.join(GENERATE_FIELDS)}")
        if "prompt" not in body:
            raise InputError('missing field "prompt": the text to continue')
        prompt = body["prompt"]
        if not isinstance(prompt, str) or not 1 <= len(prompt) <= MAX_PROMPT_CHARS:
            raise InputError(f"prompt must be text of 1 to {MAX_PROMPT_CHARS:,} characters; "
                             f"got {_described(prompt)}")
        try:
            ids = _prompt_ids(self.tokenizer, prompt)
        except RunError as err:
            raise InputError(str(err)) from None
        default_new = min(DEFAULT_NEW_TOKENS, self.max_new_tokens)
        new = _int_field(body, "max_new_tokens", 0, self.max_new_tokens, default_new,
                         " (this server's --max-new-tokens)")
        temperature = body.get("temperature", DEFAULT_TEMPERATURE)
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or \
                not 0 <= temperature <= MAX_TEMPERATURE:
            raise InputError(f"temperature must be a number from 0 (greedy) to "
                             f"{MAX_TEMPERATURE:g}; got {shown(temperature)}")
        top_p = body.get("top_p")
        if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, (int, float))
                                  or not 0 < top_p <= 1):
            raise InputError(f"top_p must be null or a number in (0, 1]; got {shown(top_p)}")
        seed = body.get("seed")
        seed = secrets.randbelow(MAX_SEED + 1) if seed is None else \
            _int_field(body, "seed", 0, MAX_SEED, None)
        stream = body.get("stream", False)
        if not isinstance(stream, bool):
            raise InputError(f"stream must be true or false; got {shown(stream)}")
        return GenerationRequest(prompt, ids, new, float(temperature),
                                 _int_field(body, "top_k", 1, MAX_VOCAB, None),
                                 None if top_p is None else float(top_p), seed, stream)

    def run_batch(self, requests):
        return [self.generate(request) for request in requests]

    def generate(self, request):
        """The text after the prompt; each piece goes to ``request.emit`` as it is made."""
        ids = request.ids
        steps = self.model.stream(Tensor(xp.asarray([ids], dtype=xp.int64)),
                                  request.max_new_tokens, temperature=request.temperature,
                                  top_k=request.top_k, top_p=request.top_p, seed=request.seed,
                                  **self.use_cache)
        tail = ids[-_BOUNDARY_TOKENS:]
        tail_text = self.tokenizer.decode(tail)
        new, sent = [], ""
        for token in steps:  # (1, 1)
            if request.cancelled.is_set():  # the client went away: stop spending the thread
                steps.close()
                break
            new.append(int(token[0, 0]))
            if request.emit is not None:
                text = self.tokenizer.decode(tail + new)[len(tail_text):]
                if text.startswith(sent) and len(text) > len(sent) and \
                        not text.endswith("\ufffd"):  # not half of a multi-byte character
                    request.emit(text[len(sent):])
                    sent = text
        text = _text_after(self.tokenizer, ids, new)
        if request.emit is not None and text.startswith(sent) and len(text) > len(sent):
            request.emit(text[len(sent):])
        return text

    def warm_up_input(self):
        index = getattr(self.tokenizer, "index", None)  # a char vocabulary: one of its own
        text = next(iter(index)) if index else "The "
        return GenerationRequest(text, _prompt_ids(self.tokenizer, text), 1, 0.0)


def _text_after(tokenizer, ids, new):
    """What ``generate_text`` returns: the decoded whole less the decoded prompt, so that a
    BPE character split across the prompt's end stays whole."""
    full = tokenizer.decode(ids + new)
    prefix = tokenizer.decode(ids)
    return full[len(prefix):] if full.startswith(prefix) else tokenizer.decode(new)


def _prompt_ids(tokenizer, prompt):
    from layerwise.train.recipes.language import encode_prompt

    return list(encode_prompt(tokenizer, prompt))


def _int_field(body, key, low, high, default, where=""):
    value = body.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InputError(f"{key} must be an int from {low} to {high:,}{where}; got "
                         f"{shown(value)}")
    return value


def _described(value):
    if isinstance(value, str):
        return f"{len(value):,} characters"
    return shown(value)


class EmbeddingModel(ServedModel):
    """A BERT run: each instance is a text, each prediction its unit-length embedding (the
    mean of the encoder's last hidden states, as ``layerwise.train.search.Encoder``)."""

    kind = "embedding"

    def __init__(self, encoder, run_dir, config):
        super().__init__(run_dir, config)
        self.encoder = encoder

    def input_spec(self):
        return {"text": f"up to {MAX_EMBED_CHARS:,} characters",
                "embedding_size": self.encoder.bert.config.hidden_size}

    def parse(self, instance):
        if not isinstance(instance, str) or len(instance) > MAX_EMBED_CHARS:
            raise InputError(f"an instance is a text of up to {MAX_EMBED_CHARS:,} characters; "
                             f"got {_described(instance)}")
        return instance

    def run_batch(self, texts):
        return [{"embedding": row} for row in self.encoder.encode(list(texts)).tolist()]

    def warm_up_input(self):
        return "warm up"


def load_language_model(run_dir, kind, max_new_tokens=None):
    from layerwise.train.recipes.language import load_trained

    if kind == "mlm":
        from layerwise.train.search import Encoder

        trained = load_trained(run_dir, kinds=("mlm",))
        encoder = Encoder(trained.model.bert, trained.tokenizer,
                          trained.config["hyperparameters"]["max_len"])
        return EmbeddingModel(encoder, run_dir, trained.config)
    return LanguageModel(load_trained(run_dir, kinds=("lm",)), max_new_tokens)
