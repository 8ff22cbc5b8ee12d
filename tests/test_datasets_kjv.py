"""``utils.datasets.load_kjv``: the King James Bible shipped as package data, hash-checked, each verse
labelled with its division (the fine-tuning chapter's classification task)."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest

from utils.datasets import DATA_DIR, KJV_DIVISIONS, KJV_SHA256, kjv_division, load_kjv
from utils.integrity import IntegrityError, sha256_file

#: Verses per division in the shipped file (printed by the test that checks them).
DIVISION_COUNTS = {"Law": 5852, "History": 7018, "Wisdom": 4785, "Major Prophets": 4440,
                   "Minor Prophets": 1050, "Gospels": 3779, "Acts": 1007, "Pauline Epistles": 2033,
                   "General Epistles": 735, "Revelation": 404}


@pytest.fixture(scope="module")
def verses():
    return load_kjv()


def test_31103_verses_in_66_books_in_canonical_order(verses):
    assert len(verses) == 31_103
    assert list(verses.columns) == ["citation", "text", "book", "chapter", "verse", "division"]
    canonical = [book for books in KJV_DIVISIONS.values() for book in books]
    assert len(canonical) == len(set(canonical)) == 66  # no book in two divisions
    assert list(verses["book"].unique()) == canonical
    first, last = verses.iloc[0], verses.iloc[-1]
    assert first["citation"] == "Genesis 1:1" and first["text"].startswith("In the beginning God created")
    assert (last["book"], last["chapter"], last["verse"]) == ("Revelation", 22, 21)
    rebuilt = verses["book"] + " " + verses["chapter"].astype(str) + ":" + verses["verse"].astype(str)
    assert (rebuilt == verses["citation"]).all()


def test_every_verse_has_a_division_and_the_counts_are_pinned(verses):
    assert verses["division"].notna().all()
    assert set(verses["division"]) == set(KJV_DIVISIONS)
    counts = verses["division"].value_counts().to_dict()
    total = len(verses)
    for division in KJV_DIVISIONS:
        print(f"{division:17s} {counts[division]:6,d} verses {counts[division] / total:6.1%}")
    assert counts == DIVISION_COUNTS
    testament_old = sum(counts[d] for d in list(KJV_DIVISIONS)[:5])
    assert (testament_old, total - testament_old) == (23_145, 7_958)
    for single in ("Acts", "Revelation"):  # one-book divisions: the count is the book's verse count
        assert counts[single] == (verses["book"] == single).sum()


def test_the_shipped_file_has_the_recorded_hash():
    assert sha256_file(DATA_DIR / "kjv.jsonl.gz") == KJV_SHA256


def test_a_modified_file_raises_integrity_error_with_the_remedy(tmp_path):
    copy = tmp_path / "kjv.jsonl.gz"
    shutil.copyfile(DATA_DIR / "kjv.jsonl.gz", copy)
    with open(copy, "ab") as handle:
        handle.write(b"\0")
    with pytest.raises(IntegrityError, match=r"git checkout -- utils/data/kjv\.jsonl\.gz"):
        load_kjv(copy)
    with pytest.raises(FileNotFoundError, match="restore the file with git"):
        load_kjv(tmp_path / "absent.jsonl.gz")


def test_a_book_outside_the_table_is_a_clear_error(tmp_path):
    path = tmp_path / "apocrypha.jsonl.gz"
    row = {"citation": "Tobit 1:1", "text": "The book of the words of Tobit", "book": "Tobit", "chapter": 1,
           "verse": 1}
    with gzip.open(path, "wt", encoding="utf-8") as handle:
        handle.write(json.dumps(row) + "\n")
    with pytest.raises(KeyError, match="'Tobit' is not one of the 66 books"):
        load_kjv(path, expected_sha256=sha256_file(path))
    assert kjv_division("Hebrews") == "General Epistles" and kjv_division("Lamentations") == "Major Prophets"
