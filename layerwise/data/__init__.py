"""Datasets, splits and loaders, plus the data sets layerwise can read without a download.

    from layerwise.data import DataLoader, digits_splits
    splits = digits_splits(seed=0)                       # {'train', 'val', 'test'}
    loader = DataLoader(splits["train"], batch_size=64, shuffle=True, seed=0)
    for images, labels in loader: ...                    # (64, 1, 28, 28), (64,)

    tables = table_splits(adult_path(), target="income", groups=["sex", "race"])
    tables.summary(); tables.groups["test"]["sex"]       # the task in one line; the audit's groups

    photos = image_folder_splits("photos/", image_size=32)  # one subfolder per class
    corpus = TextFiles("novel.txt").text                # a text file, or a folder of them

Needs only the backend and Tensor; nothing here knows about nn or training.
"""

from layerwise.data.dataset import (
    Dataset,
    Subset,
    TensorDataset,
    random_split,
    stratified_split,
)
from layerwise.data.loader import DataLoader, default_collate
from layerwise.data.samplers import DistributedSampler, ShardSampler
from layerwise.data.digits import digits_csv_path, digits_splits, load_digits_5k
from layerwise.data.scenes import digit_scenes
from layerwise.data.coco import read_coco
from layerwise.data.mnist import load_mnist, mnist_file_names, mnist_splits, read_idx
from layerwise.data.text import (
    BPETokenizer, CharTokenizer, lm_splits, load_tokenizer, python_docs_corpus, save_tokenizer,
)
from layerwise.data.table_encoding import MISSING_TOKENS, TableError
from layerwise.data.tables import (
    MissingDependencyError, Table, TableSplits, read_table, table_splits,
)
from layerwise.data.image_folder import (
    ImageFolder, ImageFolderSplits, folder_fingerprint, image_folder_splits,
)
from layerwise.data.text_files import TextFiles
from layerwise.data.catalog import (
    adult_path, breast_cancer_path, diabetes_path, shipped_table_path, shipped_tables,
)

__all__ = [
    "Dataset", "TensorDataset", "Subset", "random_split", "stratified_split",
    "DataLoader", "default_collate", "DistributedSampler", "ShardSampler",
    "load_digits_5k", "digits_splits", "digits_csv_path", "digit_scenes",
    "read_coco",
    "read_idx", "load_mnist", "mnist_splits", "mnist_file_names",
    "python_docs_corpus", "CharTokenizer", "BPETokenizer", "load_tokenizer", "save_tokenizer",
    "lm_splits",
    "read_table", "table_splits", "Table", "TableSplits", "TableError", "MissingDependencyError",
    "MISSING_TOKENS",
    "ImageFolder", "ImageFolderSplits", "image_folder_splits", "folder_fingerprint", "TextFiles",
    "shipped_tables", "shipped_table_path", "adult_path", "diabetes_path", "breast_cancer_path",
]
