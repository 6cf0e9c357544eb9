"""``layerwise predict RUN IMAGE``: a finished run's answer for one image.

    layerwise predict runs/detect-20260101-120000 scene.png   # boxes drawn -> RUN/predictions/scene.png
    layerwise predict runs/segment-... scene.png --out mask.png
    layerwise predict runs/detect-... --scene 3               # the run's own test scene 3
    layerwise predict runs/cnn-... digit.png                  # the top classes, printed

A detection run prints one line per object found (class, score, box in the image's own
pixels) and draws the boxes over the image; a segmentation run prints the share of the image
each class covers and draws the mask over it; an image classifier prints its three most
likely classes. The image is read as the run's training images were (grey or RGB, resized
to the run's size); the drawing is at the image's own size. An existing file is replaced
only with --force.
"""

import os

from layerwise.cli.argtypes import float_in_range, int_in_range
from layerwise.errors import LayerwiseError
from layerwise.limits import MAX_EXAMPLES

TOP_CLASSES = 3  # an image classifier's answer: its most likely classes
DRAWN_SCORE = 0.3  # detections at or above this score are printed and drawn by default
MASK_OPACITY = 0.45  # of the class colours over the image
MIN_DRAWN_SIDE = 256  # a smaller image is drawn enlarged, so its labels stay readable
_PALETTE = ((230, 25, 75), (60, 180, 75), (255, 225, 25), (0, 130, 200), (245, 130, 48),
            (145, 30, 180), (70, 240, 240), (240, 50, 230), (210, 245, 60), (250, 190, 212),
            (0, 128, 128), (220, 190, 255), (170, 110, 40), (128, 0, 0), (170, 255, 195))


def add_parser(subparsers):
    p = subparsers.add_parser(
        "predict", help="run a finished run's model on one image (boxes, a mask or classes)",
        description="Run a finished detection, segmentation or image-classification run on "
                    "one image: print what it finds and, for detection and segmentation, draw "
                    "it over the image into a PNG.")
    p.add_argument("run", metavar="RUN", help="a finished run directory (or its name under "
                                              "runs/)")
    p.add_argument("image", metavar="IMAGE", nargs="?", help="a PNG or JPEG file")
    p.add_argument("--scene", type=int_in_range(0, MAX_EXAMPLES - 1), metavar="N",
                   help="instead of IMAGE: the run's own test example N (a scene it never "
                        "trained on)")
    p.add_argument("--out", metavar="PATH",
                   help="the PNG to write (default: RUN/predictions/IMAGE_NAME.png)")
    p.add_argument("--score", type=float_in_range(0, 1), default=DRAWN_SCORE, metavar="S",
                   help=f"detection: print and draw objects scored at least S "
                        f"(default: {DRAWN_SCORE})")
    p.add_argument("--force", action="store_true", help="replace an existing file at the path")
    p.set_defaults(handler=run)
    return p


def run(args):
    from layerwise.cli.audit import resolve_run
    from layerwise.cli.export import check_output
    from layerwise.data.image_folder import read_image
    from layerwise.train.finished import load_finished_run, load_model_only

    if (args.image is None) == (args.scene is None):
        raise LayerwiseError("give either IMAGE (a PNG or JPEG file) or --scene N (the run's "
                             "test example N), not " + ("both" if args.image else "neither"))
    run_dir = resolve_run(args.run, "runs")
    if args.image is not None and not os.path.isfile(args.image):
        what = "is a folder" if os.path.isdir(args.image) else "does not exist"
        raise LayerwiseError(f"IMAGE {args.image!r} {what}; give a PNG or JPEG file")
    loaded = (load_model_only if args.scene is None else load_finished_run)(run_dir)
    if loaded.kind not in ("detect", "segment", "image"):
        raise LayerwiseError(f"predict takes detection, segmentation and image-classifier runs; "
                             f"{run_dir} is a {loaded.recipe.name!r} run of kind "
                             f"{loaded.kind!r}")
    if args.scene is not None:
        pixels, name = _test_example(loaded, args.scene), f"test-{args.scene}"
        width, height = pixels.shape[-1], pixels.shape[-2]
    else:
        channels, size = loaded.info["input_shape"][0], loaded.info["input_shape"][-1]
        pixels, (width, height) = read_image(args.image, channels, size)  # (C, S, S)
        name = os.path.splitext(os.path.basename(args.image))[0]
    classes = loaded.info["classes"]
    if loaded.kind == "image":
        return _classify(loaded.model, pixels, classes)
    out = args.out or os.path.join(run_dir, "predictions", name + ".png")
    check_output(out, run_dir, args.force)
    picture = _picture(args.image, pixels)
    size = pixels.shape[-1]
    if loaded.kind == "detect":
        drawn = _detections(loaded.model, pixels, classes, args.score,
                            (width / size, height / size), picture)
    else:
        drawn = _segmentation(loaded.model, pixels, classes, picture)
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    drawn.save(out, format="PNG")
    print(f"wrote {out}")
    return 0


def _test_example(loaded, index):
    """(C, S, S) pixels of the run's test example ``index``."""
    test = loaded.splits["test"]
    if index >= len(test):
        raise LayerwiseError(f"--scene {index}: the run's test split has {len(test)} examples "
                             f"(0 to {len(test) - 1})")
    return test.tensors[0].data[index]


def _picture(path, pixels):
    """The image as RGB at its own size (``pixels`` (C, S, S) when there is no file),
    enlarged when small: a 96 px scene is hard to read."""
    import numpy as np
    from PIL import Image, ImageOps

    if path is None:
        rgb = np.repeat(pixels, 3, axis=0) if pixels.shape[0] == 1 else pixels
        picture = Image.fromarray((np.clip(rgb.transpose(1, 2, 0), 0, 1) * 255).astype(np.uint8))
    else:
        with Image.open(path) as im:
            picture = ImageOps.exif_transpose(im).convert("RGB")
    scale = max(1, -(-MIN_DRAWN_SIDE // max(picture.size)))  # ceil
    if scale > 1:
        picture = picture.resize((picture.width * scale, picture.height * scale),
                                 Image.Resampling.NEAREST)
    return picture


def _classify(model, pixels, classes):
    from layerwise.audit.calibration import softmax
    from layerwise.train.recipes.scenes import predict_in_batches

    logits = predict_in_batches(model, pixels[None], lambda out: out.data)[0][0]
    probs = softmax(logits[None].astype("float64"))[0]
    for k in probs.argsort()[::-1][:TOP_CLASSES]:
        print(f"{classes[k]}  {probs[k]:.3f}")
    return 0


def _detections(model, pixels, classes, min_score, scale, picture):
    from PIL import ImageDraw

    from layerwise.train.recipes.scenes import detect

    boxes, scores, labels = detect(model, pixels[None])[0]
    keep = scores >= min_score
    boxes, scores, labels = boxes[keep], scores[keep], labels[keep]
    sx, sy = scale  # the run's input pixels -> the file's pixels
    zoom = picture.width / (pixels.shape[-1] * sx)  # the file's pixels -> the picture's
    draw = ImageDraw.Draw(picture)
    print(f"{len(boxes)} object(s) scored at least {min_score}")
    for box, score, label in zip(boxes, scores, labels):
        x1, y1, x2, y2 = (float(v) for v in box * (sx, sy, sx, sy))
        colour = _PALETTE[int(label) % len(_PALETTE)]
        name = classes[int(label)]
        print(f"{name}  {score:.3f}  ({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f})")
        corners = [v * zoom for v in (x1, y1, x2, y2)]
        draw.rectangle(corners, outline=colour, width=2)
        draw.text((corners[0] + 2, corners[1] + 1), f"{name} {score:.2f}", fill=colour)
    return picture


def _segmentation(model, pixels, classes, picture):
    import numpy as np
    from PIL import Image

    from layerwise.train.recipes.scenes import segment

    mask = segment(model, pixels[None])[0]  # (S, S): 0 background, class + 1
    names = ["background"] + list(classes)
    counts = np.bincount(mask.ravel(), minlength=len(names))
    for value in np.flatnonzero(counts):
        print(f"{names[value]}  {counts[value] / mask.size:.3f} of the image")
    colours = np.array([(0, 0, 0)] + [_PALETTE[i % len(_PALETTE)] for i in range(len(classes))],
                       dtype=np.float32)
    overlay = Image.fromarray(colours[mask].astype(np.uint8)).resize(
        picture.size, Image.Resampling.NEAREST)
    alpha = Image.fromarray(((mask > 0) * int(255 * MASK_OPACITY)).astype(np.uint8)).resize(
        picture.size, Image.Resampling.NEAREST)
    return Image.composite(overlay, picture, alpha)
