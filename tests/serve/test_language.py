"""The served language model without HTTP: an LSTM generates, streamed or not, the text
``generate_text`` writes; a cancelled request stops sampling; bad requests are refused."""

import pytest

import layerwise as lw
from layerwise.data.text import CharTokenizer
from layerwise.models.lstm_lm import LSTMLanguageModel
from layerwise.serve import InputError
from layerwise.serve.language import LanguageModel
from layerwise.train.recipes import get_recipe
from layerwise.train.recipes.language import TrainedRun, generate_text

TEXT = "the quick brown fox jumps over the lazy dog. "


@pytest.fixture
def lstm(tmp_path):
    """A LanguageModel of an untrained LSTM with a character vocabulary, as a run holds it."""
    lw.manual_seed(0)
    tokenizer = CharTokenizer.from_text(TEXT)
    model = LSTMLanguageModel(tokenizer.vocab_size, 16, 24).eval()
    lw.save(model.state_dict(), tmp_path / "model.safetensors")
    trained = TrainedRun(str(tmp_path), {"recipe": "lstm-tiny"}, get_recipe("lstm-tiny"),
                         tokenizer, model)
    return LanguageModel(trained, max_new_tokens=64)


def test_an_lstm_streams_the_text_generate_text_writes(lstm):
    request = lstm.parse({"prompt": "the ", "max_new_tokens": 30, "temperature": 1.2,
                          "seed": 5})
    pieces = []
    request.emit = pieces.append
    text = lstm.generate(request)
    assert text == generate_text(lstm.model, lstm.tokenizer, "the ", 30, temperature=1.2,
                                 seed=5)
    assert "".join(pieces) == text and len(pieces) == 30


def test_a_cancelled_request_stops_sampling(lstm):
    request = lstm.parse({"prompt": "the ", "max_new_tokens": 64, "seed": 1})
    pieces = []

    def emit(piece):
        pieces.append(piece)
        if len(pieces) == 3:
            request.cancelled.set()  # what the server does when the client goes away

    request.emit = emit
    text = lstm.generate(request)
    assert len(pieces) == 3 and len(text) == 3
    assert lstm.model.training is False  # the stream was closed: the mode was put back


@pytest.mark.parametrize("body, reason", [
    ({"prompt": "the", "max_new_tokens": 65}, "from 0 to 64"),
    ({"prompt": "the", "top_k": 0}, "top_k must be an int from 1"),
    ({"prompt": "the", "seed": -1}, "seed must be an int from 0"),
    ({"prompt": "the", "temperature": True}, "temperature must be a number"),
    ({"prompt": "ZZZ"}, "character 'Z' is not in the run's character vocabulary"),
    ("the", 'expected a JSON object such as {"prompt": "The "}'),
])
def test_a_bad_generate_request_is_refused_in_one_line(lstm, body, reason):
    with pytest.raises(InputError) as err:
        lstm.parse(body)
    assert reason in str(err.value) and "\n" not in str(err.value)
    assert err.value.status == 422
