"""Writes backend/data/imagenet_labels.tsv: for each of the 1000 ImageNet classes, in the classifier's
output order, its WordNet synset, the label shown to users, and the words that find it (its own names
and those of all its WordNet hypernyms, singular and plural). Run once; the table is kept as data.

    apt-get install wordnet-base                       # WordNet 3.0 (Debian)
    pip download --no-deps timm==1.0.31 -d /tmp/timm   # the ImageNet synset ids, in class order
    python scripts/label_table.py --timm-wheel /tmp/timm/timm-1.0.31-py3-none-any.whl

WordNet's licence asks its notice to go with every copy: it heads the table.
"""
from __future__ import annotations

import argparse
import sys
import zipfile
from pathlib import Path

from backend.stores.base import search_words   # the words every store matches (the project installed)

SYNSETS = "timm/data/_info/imagenet_synsets.txt"
OUT = Path(__file__).resolve().parent.parent / "backend" / "data" / "imagenet_labels.tsv"
# Words too broad to search by: the top of WordNet's noun hierarchy, which every label reaches.
TOO_BROAD = {"entity", "physical entity", "abstraction", "abstract entity", "object", "physical object",
             "whole", "unit", "thing", "matter", "living thing", "animate thing", "organism", "being",
             "artifact", "artefact", "instrumentality", "instrumentation", "causal agent", "cause",
             "causal agency", "group", "grouping", "relation", "attribute", "measure", "quantity", "amount"}
# Where WordNet 3.0 files a class beside the word a user types rather than under it: a bus is filed under
# "public transport", a sibling of "vehicle" under "conveyance" (cars are vehicles); a beach is a part of
# a shore, not a kind of seashore or sandbar, ImageNet's two classes for photos of beaches.
ADDED_HYPERNYMS = {"02924116": ["04524313"],                  # bus -> vehicle
                   "09428293": ["09217230"],                  # seashore -> beach
                   "09421951": ["09217230"]}                  # sandbar -> beach
NOTICE = """\
# The ImageNet-1k classes with WordNet 3.0's names for them and for their hypernyms, written by
# scripts/label_table.py. Columns: class index, WordNet noun offset, label, the words that find it ("|").
#
# WordNet 3.0 Copyright 2006 by Princeton University. All rights reserved.
# THIS SOFTWARE AND DATABASE IS PROVIDED "AS IS" AND PRINCETON UNIVERSITY MAKES NO REPRESENTATIONS OR
# WARRANTIES, EXPRESS OR IMPLIED. BY WAY OF EXAMPLE, BUT NOT LIMITATION, PRINCETON UNIVERSITY MAKES NO
# REPRESENTATIONS OR WARRANTIES OF MERCHANTABILITY OR FITNESS FOR ANY PARTICULAR PURPOSE OR THAT THE USE OF
# THE LICENSED SOFTWARE, DATABASE OR DOCUMENTATION WILL NOT INFRINGE ANY THIRD PARTY PATENTS, COPYRIGHTS,
# TRADEMARKS OR OTHER RIGHTS. The name of Princeton University or Princeton may not be used in advertising
# or publicity pertaining to distribution of the software and/or database. Title to copyright in this
# software, database and any associated documentation shall at all times remain with Princeton University
# and LICENSEE agrees to preserve same. (The full licence: https://wordnet.princeton.edu/license-and-commercial-use)
"""


def read_nouns(folder: Path) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Lemmas and hypernym offsets (@ and @i pointers) of every noun synset in data.noun."""
    lemmas, hypernyms = {}, {}
    with open(folder / "data.noun", encoding="latin-1") as f:
        for line in f:
            if line.startswith(" "):
                continue   # the licence at the top of the file
            fields = line.split(" | ")[0].split()
            offset, count = fields[0], int(fields[3], 16)
            lemmas[offset] = [fields[4 + 2 * i].replace("_", " ") for i in range(count)]
            rest = fields[4 + 2 * count:]
            pointers = int(rest[0])
            hypernyms[offset] = [rest[1 + 4 * i + 1] for i in range(pointers)
                                 if rest[1 + 4 * i] in ("@", "@i") and rest[1 + 4 * i + 2] == "n"]
    return lemmas, hypernyms


def plurals(folder: Path) -> dict[str, list[str]]:
    """Irregular plurals by singular (noun.exc)."""
    out: dict[str, list[str]] = {}
    with open(folder / "noun.exc", encoding="latin-1") as f:
        for line in f:
            plural, *singulars = line.split()
            for singular in singulars:
                out.setdefault(singular.replace("_", " "), []).append(plural.replace("_", " "))
    return out


def plural_of(word: str, irregular: dict[str, list[str]]) -> list[str]:
    if word in irregular:
        return irregular[word]
    if word.endswith(("s", "x", "z", "ch", "sh")):
        return [word + "es"]
    if word.endswith("y") and word[-2:-1] not in "aeiou":
        return [word[:-1] + "ies"]
    return [word + "s"]


def words_of(phrase: str, irregular: dict[str, list[str]]) -> set[str]:
    """The phrase as search words, and its plural (its last word made plural)."""
    words = search_words(phrase)
    if not words:
        return set()
    out = {" ".join(words)}
    for plural in plural_of(words[-1], irregular):
        out.add(" ".join(words[:-1] + search_words(plural)))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--timm-wheel", type=Path, required=True, help="timm's wheel (its ImageNet synset list)")
    parser.add_argument("--wordnet", type=Path, default=Path("/usr/share/wordnet"), help="WordNet 3.0's dict folder")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    with zipfile.ZipFile(args.timm_wheel) as wheel:
        wnids = wheel.read(SYNSETS).decode().split()
    if len(wnids) != 1000 or wnids != sorted(wnids):
        raise SystemExit(f"{SYNSETS}: expected the 1000 ImageNet synsets in order")
    lemmas, hypernyms = read_nouns(args.wordnet)
    for offset, extra in ADDED_HYPERNYMS.items():
        hypernyms[offset] = hypernyms[offset] + extra
    irregular = plurals(args.wordnet)

    def ancestors(offset: str) -> list[str]:
        seen, todo = [], list(hypernyms[offset])
        while todo:
            parent = todo.pop(0)
            if parent not in seen:
                seen.append(parent)
                todo.extend(hypernyms[parent])
        return seen

    names = [lemmas[w[1:]][0] for w in wnids]
    rows = []
    for index, wnid in enumerate(wnids):
        offset = wnid[1:]
        name = names[index]
        if names.count(name) > 1:   # crane the bird and crane the machine; two kinds of maillot
            name = f"{name} ({lemmas[hypernyms[offset][0]][0]})"
        terms: set[str] = set()
        for synset in [offset, *ancestors(offset)]:
            for lemma in lemmas[synset]:
                if lemma.lower() not in TOO_BROAD:
                    terms |= words_of(lemma, irregular)
        rows.append(f"{index}\t{offset}\t{name}\t{'|'.join(sorted(terms))}\n")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(NOTICE + "".join(rows), encoding="utf-8")
    print(f"{args.out}: {len(rows)} classes", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
