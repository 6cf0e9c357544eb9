"""Every kind of bad request, sent to a real server, gets its 4xx and a one-line JSON reason,
never a 500: wrong shape or type, a missing or unknown field or column, a body that is not
JSON or is over the limit, an unknown model, path or method."""

import base64
import json

import numpy as np
import pytest

from tests.serve.client import IMAGE, call, png_b64, post

MAX_BODY = 10 * 2**20
BAD_REQUESTS = [  # (what, path, body, status, reason contains)
    ("wrong shape", "digits/predict", {"instances": [np.zeros((28, 27)).tolist()]}, 422,
     "image of shape (28, 27); this model takes (1, 28, 28)"),
    ("flat pixels", "digits/predict", {"instances": [[0.0] * 784]}, 422, "shape (784)"),
    ("strings", "digits/predict", {"instances": [[["x"] * 28] * 28]}, 422, "got strings"),
    ("booleans", "digits/predict", {"instances": [[[True] * 28] * 28]}, 422, "got booleans"),
    ("ragged rows", "digits/predict", {"instances": [[[0.0] * 28, [0.0]]]}, 422,
     "not rectangular"),
    ("0-255 pixels", "digits/predict", {"instances": [(np.ones((1, 28, 28)) * 255).tolist()]},
     422, "divide 0-255 pixel values by 255"),
    ("not base64", "digits/predict", {"instances": [{"b64": "***"}]}, 422, "not valid base64"),
    ("not an image", "digits/predict",
     {"instances": [{"b64": base64.b64encode(b"hello").decode()}]}, 422,
     "does not decode to an image"),
    ("other keys", "digits/predict", {"instances": [{"png": "..."}]}, 422,
     'an encoded image is {"b64"'),
    ("a number", "digits/predict", {"instances": [3]}, 422, "an image is a nested list"),
    ("no instances field", "digits/predict", {"inputs": [IMAGE]}, 422,
     'expected a JSON object {"instances": [INPUT, ...]}; got an object with keys \'inputs\''),
    ("a list body", "digits/predict", [IMAGE], 422, "got a list"),
    ("extra field", "digits/predict", {"instances": [IMAGE], "signature": 1}, 422,
     "unknown field 'signature'"),
    ("no inputs", "digits/predict", {"instances": []}, 422, "non-empty list"),
    ("instances not a list", "digits/predict", {"instances": IMAGE[0][0][0]}, 422,
     "non-empty list of inputs; got a number"),
    ("too many instances", "digits/predict", {"instances": [0] * 257}, 413,
     "at most 256 per request"),
    ("second instance bad", "digits/predict", {"instances": [IMAGE, [[0.0]]]}, 422,
     "instances[1]: image of shape (1, 1)"),
    ("missing column", "colors/predict", {"instances": [{"color": "red", "weight": 1}]}, 422,
     "missing column 'size'"),
    ("unknown column", "colors/predict",
     {"instances": [{"color": "red", "size": 1, "weight": 1, "sise": 2}]}, 422,
     "unknown column 'sise'; the model's columns are 'color', 'size', 'weight'"),
    ("text in a numeric column", "colors/predict",
     {"instances": [{"color": "red", "size": "big", "weight": 1}]}, 422,
     "column 'size' is numeric; got 'big'"),
    ("a list in a category", "colors/predict",
     {"instances": [{"color": [1], "size": 1, "weight": 1}]}, 422,
     "column 'color' holds categories"),
    ("row as a list", "cancer/predict", {"instances": [[1.0, 2.0]]}, 422,
     "a table row is an object of column -> value"),
    ("embedding a number", "bert/predict", {"instances": [3]}, 422,
     "an instance is a text of up to 100,000 characters; got 3"),
    ("unknown model", "nope/predict", {"instances": [IMAGE]}, 404,
     "no model 'nope'; this server has: digits, cancer, colors, gpt, bert"),
    ("predict on a generator", "gpt/predict", {"instances": ["x"]}, 404,
     "answers POST /v1/models/gpt/generate"),
    ("generate on a classifier", "digits/generate", {"prompt": "x"}, 404,
     "answers POST /v1/models/digits/predict"),
    ("no prompt", "gpt/generate", {"max_new_tokens": 3}, 422, 'missing field "prompt"'),
    ("prompt not text", "gpt/generate", {"prompt": 5}, 422, "prompt must be text"),
    ("empty prompt", "gpt/generate", {"prompt": ""}, 422, "got 0 characters"),
    ("too many tokens", "gpt/generate", {"prompt": "a", "max_new_tokens": 10**6}, 422,
     "max_new_tokens must be an int from 0 to 512"),
    ("negative temperature", "gpt/generate", {"prompt": "a", "temperature": -1}, 422,
     "temperature must be a number from 0"),
    ("top_p over 1", "gpt/generate", {"prompt": "a", "top_p": 2}, 422, "top_p must be null"),
    ("stream not a flag", "gpt/generate", {"prompt": "a", "stream": "yes"}, 422,
     "stream must be true or false"),
    ("unknown generate field", "gpt/generate", {"prompt": "a", "max_tokens": 3}, 422,
     "unknown field 'max_tokens'"),
    ("character not in the vocabulary", "gpt/generate", {"prompt": "\u2603"}, 422,
     "not in the run's character vocabulary"),
    ("not JSON", "digits/predict", b"instances=1", 400, "the body is not JSON"),
    ("empty body", "digits/predict", b"", 400, "the body is empty"),
    ("NaN", "digits/predict", b'{"instances": [NaN]}', 400, "NaN is not JSON"),
    ("not UTF-8", "digits/predict", b'{"instances": ["\xff"]}', 400, "the body is not JSON"),
    ("nested too deep", "digits/predict", b"[" * 100_000 + b"]" * 100_000, 400,
     "nested too deeply"),
    ("body over the limit", "digits/predict", b"[" + b"0," * (MAX_BODY // 2) + b"0]", 413,
     "this server takes at most 10,485,760"),
]


@pytest.mark.parametrize("what, path, body, status, reason", BAD_REQUESTS,
                         ids=[case[0] for case in BAD_REQUESTS])
def test_a_bad_request_gets_its_4xx_and_a_one_line_reason(server, what, path, body, status,
                                                          reason):
    got, headers, answer = post(server.port, f"/v1/models/{path}", body)
    assert got == status, answer
    assert headers["content-type"] == "application/json"
    assert set(answer) == {"error"} and "\n" not in answer["error"]
    assert reason in answer["error"], answer["error"]


def test_an_encoded_image_too_large_to_decode_is_refused_before_decoding(server):
    side = 4097  # 16.8 million pixels: more than the 4096 x 4096 decoded at most
    huge = png_b64(np.zeros((side, side), dtype=np.uint8), "L")  # compresses to a few kB
    status, _, answer = post(server.port, "/v1/models/digits/predict",
                             {"instances": [{"b64": huge}]})
    assert status == 413 and "is 4097 x 4097 pixels" in answer["error"]


def test_a_chunked_body_over_the_limit_is_cut_off_while_it_is_read(server):
    chunks = (b"0," * 2**18 for _ in range(MAX_BODY // 2**19 + 2))  # no Content-Length
    status, _, answer = post(server.port, "/v1/models/digits/predict", chunks, chunked=True)
    assert status == 413 and "over 10,485,760 bytes" in answer["error"]


@pytest.mark.parametrize("method, path, status, reason", [
    ("GET", "/v1/models/digits/predict", 405, "GET is not allowed"),
    ("POST", "/v2/predict", 404, "no such path '/v2/predict'"),
    ("GET", "/v1/models/nope", 404, "no model 'nope'"),
])
def test_a_wrong_path_or_method_is_answered_in_json(server, method, path, status, reason):
    got, _, answer = call(server.port, method, path, b"{}" if method == "POST" else None)
    assert got == status and reason in json.loads(answer)["error"]


