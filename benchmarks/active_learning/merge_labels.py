"""Merge label caches: rows of SRC (structure, settings) missing from DST are copied into DST.

    python merge_labels.py SRC.db [DST.db=labels.db]
"""
import sys
from pathlib import Path

from ase.db import connect

src = connect(sys.argv[1])
dst = connect(sys.argv[2] if len(sys.argv) > 2 else str(Path(__file__).parent / "labels.db"))
have = {(r.structure, r.settings_hash) for r in dst.select()}
added = 0
for row in src.select():
    if (row.structure, row.settings_hash) not in have:
        dst.write(row, data=row.data, structure=row.structure, settings_hash=row.settings_hash)
        have.add((row.structure, row.settings_hash))
        added += 1
print(f"added {added} labels; {dst.count()} in {dst.filename if hasattr(dst, 'filename') else ''}")
