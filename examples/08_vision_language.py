"""Vision and language: what a digit classifier looks at; a language model's samples; search.

Vision: a small CNN learns the digits. Saliency is the gradient of the class score with respect
to each pixel (which pixels would change the answer most); Grad-CAM weighs the last conv
layer's channels by their gradient (where that layer found the evidence for the class). Both
should lie on the digit's ink, not on the empty paper around it.

Language: a tiny GPT learns the characters of the Python documentation that ships with
Python, then writes at temperatures 0.5, 1.0 and 1.5: logits / T before the softmax, so a low
T picks the likely characters over and over and a high T spreads the choice (more distinct
characters, higher entropy, less English). A tiny BERT learns the same text by filling in
masked characters; its mean hidden state is a sentence's embedding, and the nearest
embeddings by cosine are a search by meaning.

    uv run python examples/08_vision_language.py
    uv run python examples/08_vision_language.py --quick   # fewer steps: rougher maps and text

The picture: four test digits (top), their saliency (middle) and Grad-CAM (bottom); on the
right, the entropy of the GPT's sampled characters at each temperature.
"""

import tempfile
from collections import Counter

import numpy as np

import layerwise as lw
from layerwise import nn
from layerwise.audit import grad_cam, saliency
from layerwise.nn import functional as F
from layerwise.train.run import make_config, start_run
from layerwise.train.search import build_index, corpus_sentences, search
from tour import options, plt, save

quick, picture = options(__file__, __doc__)
lw.manual_seed(0)
rng = np.random.default_rng(0)


def train(model, batch_loss, steps):
    opt = lw.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):
        loss = batch_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()


# --- vision: a CNN, then where it looks --------------------------------------------------------
digits = lw.data.digits_splits(seed=0)
(x, y), (test_x, test_y) = ((t.numpy() for t in digits[s].tensors) for s in ("train", "test"))
cnn = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # (N, 8, 14, 14)
                    nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(),  # the last conv: (N, 16, 14, 14)
                    nn.MaxPool2d(2), nn.Flatten(), nn.Linear(16 * 7 * 7, 10))


def digit_batch_loss():
    b = rng.integers(0, len(x), size=64)
    return F.cross_entropy(cnn(lw.tensor(x[b])), lw.tensor(y[b]))


train(cnn, digit_batch_loss, 60 if quick else 300)
with lw.no_grad():
    predicted = cnn(lw.tensor(test_x)).argmax(dim=1).numpy()
print(f"CNN test accuracy: {(predicted == test_y).mean():.3f}")
sal = np.abs(saliency(cnn, test_x, test_y))[:, 0]  # (N, 28, 28)
cam = grad_cam(cnn, cnn[3], test_x, test_y).repeat(2, axis=1).repeat(2, axis=2)  # (N, 28, 28)
ink = test_x[:, 0] > 0.5
for name, maps in (("saliency", sal / sal.max(axis=(1, 2), keepdims=True)), ("Grad-CAM", cam)):
    print(f"{name} mean on ink: {maps[ink].mean():.3f}")
    print(f"{name} mean off ink: {maps[~ink].mean():.3f}")

# --- language: a tiny GPT and its samples by temperature ------------------------------------------
docs = lw.data.python_docs_corpus()  # ~465,000 characters of the pydoc topics
text = docs[:50_000 if quick else 400_000]
tok = lw.data.CharTokenizer.from_text(text)
ids = np.array(tok.encode(text))
gpt = lw.models.GPT(lw.models.GPTConfig(vocab_size=tok.vocab_size, block_size=64, n_layer=2,
                                        n_head=4, n_embd=64))


def text_batch_loss():
    at = rng.integers(0, len(ids) - 65, size=(32, 1)) + np.arange(64)  # (B, T) positions
    return gpt(ids[at], ids[at + 1])[1]  # each character predicts the next one


train(gpt, text_batch_loss, 20 if quick else 400)


def char_entropy(s):
    """Bits per character of the character frequencies of ``s``."""
    p = np.array(list(Counter(s).values())) / len(s)
    return float(-(p * np.log2(p)).sum())


text_entropy = char_entropy(text)
print(f"character entropy of the training text: {text_entropy:.2f} bits")
entropy = {}
for t in (0.5, 1.0, 1.5):
    out = gpt.generate(np.array([tok.encode("The ")]), 80 if quick else 400, temperature=t, seed=0)
    sample = tok.decode(out.numpy()[0, 4:])
    entropy[t] = char_entropy(sample)
    print(f"sample at temperature {t}: {sample[:70]!r}")
    print(f"distinct characters at temperature {t}: {len(set(sample))}")
    print(f"character entropy at temperature {t}: {entropy[t]:.2f} bits")

# --- language: a tiny BERT's sentence embeddings, searched by cosine --------------------------
sentences = corpus_sentences(docs[-60_000:], limit=50 if quick else None)
with tempfile.TemporaryDirectory() as runs:
    size = dict(corpus_chars=5_000, epochs=1) if quick else {}  # bert-tiny: 20k chars, 4 epochs
    run, metrics = start_run(make_config("bert-tiny", seed=0, **size), out_dir=runs,
                             progress=False, verbose=False)
    index = build_index(run, sentences)  # (N, H) mean-pooled, centred, unit embeddings
print(f"BERT masked-character accuracy: {metrics['val_mlm_accuracy']:.3f}")
print(f"search query: {sentences[1]}")  # a sentence of the index: its nearest must be itself
print(f"search top hit: {search(index, sentences[1], k=1)[0][2]}")
question = "A traceback object is the stack trace of an exception."  # not in the index
print(f"search for {question!r}: {search(index, question, k=1)[0][2]}")

fig = plt.figure(figsize=(10, 4))
grid = fig.add_gridspec(3, 7)
for col, i in enumerate([int(np.flatnonzero(test_y == d)[0]) for d in (2, 3, 7, 9)]):
    for row, (img, cmap) in enumerate(((test_x[i, 0], "gray_r"), (sal[i], "hot"), (cam[i], "jet"))):
        ax = fig.add_subplot(grid[row, col])
        ax.imshow(img, cmap=cmap)
        if row:  # the ink's outline over the maps
            ax.contour(test_x[i, 0], levels=[0.5], colors="white", linewidths=0.5)
        ax.set(xticks=[], yticks=[])
        if col == 0:
            ax.set_ylabel(("digit", "saliency", "Grad-CAM")[row])
ax = fig.add_subplot(grid[:, 4:])
ax.bar([str(t) for t in entropy], list(entropy.values()), color="tab:blue")
ax.axhline(text_entropy, color="k", ls=":", label="the training text")
ax.legend(loc="upper left")
ax.set_xlabel("sampling temperature")
ax.set_ylabel("entropy of the sampled characters (bits)")
ax.set_title("GPT on the Python docs: hotter is more random", fontsize=10)
save(fig, picture)
