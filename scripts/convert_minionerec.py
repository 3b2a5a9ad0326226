#!/usr/bin/env python3
"""Turn a MiniOneRec dataset (its data/Amazon layout) into the dataset folder atspeed reads.

MiniOneRec keeps, per category: index/<Cat>.index.json (item id -> its SID tokens, 3 levels),
index/<Cat>.item.json (item id -> title, ...), and train/valid/test/<Cat>*.csv with one sample
per row (user_id, history_item_id as a Python list of at most 10 items, item_id, ...). atspeed
reads sequential_{train,valid,test}.txt (one line per user, `uid item item ...`, 1-based), one
identifier index JSON keyed by 0-based item id, and titles.json.

Each user's lines are rebuilt from its test row: the test item is the test split, the history
before it is train + valid (the valid item being the last of it when the user's valid row says
so). So atspeed's test prompt with `--history 10` holds exactly the items MiniOneRec's
evaluation prompt holds; the script checks this for every user and says how many it checked.

usage: python scripts/convert_minionerec.py MINIONEREC/data/Amazon CATEGORY OUT
       e.g. ... data/Amazon Industrial_and_Scientific /tmp/industrial
(stdlib only; CSV names are matched by the category prefix)
"""
import ast
import csv
import json
import sys
from pathlib import Path


def one_csv(folder, category):
    found = sorted(p for p in folder.glob(f"{category}*.csv"))
    if len(found) != 1:
        sys.exit(f"{folder}: expected one {category}*.csv, found {[p.name for p in found]}")
    return found[0]


def rows(path):
    csv.field_size_limit(1 << 30)
    with open(path, newline="", encoding="utf-8") as f:
        for r in csv.DictReader(f):
            yield r["user_id"], [int(x) for x in ast.literal_eval(r["history_item_id"])], int(r["item_id"])


def main():
    if len(sys.argv) != 4:
        sys.exit(__doc__)
    root, category, out = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
    index = json.loads((root / "index" / f"{category}.index.json").read_text())
    items = json.loads((root / "index" / f"{category}.item.json").read_text())
    n = len(index)
    assert sorted(int(k) for k in index) == list(range(n)), "index.json keys are not 0..n-1"
    valid = {u: (h, t) for u, h, t in rows(one_csv(root / "valid", category))}
    users = []
    for u, hist, target in rows(one_csv(root / "test", category)):
        v = valid.get(u)
        if v is not None and hist and hist[-1] == v[1]:
            train, val = hist[:-1], [v[1]]
        else:
            train, val = hist, []
        assert (train + val)[-len(hist):] == hist
        users.append((train, val, [target]))
    out.mkdir(parents=True, exist_ok=False)
    for i, name in enumerate(("train", "valid", "test")):
        lines = [" ".join([str(uid)] + [str(x + 1) for x in split[i]]) for uid, split in enumerate(users, start=1)]
        (out / f"sequential_{name}.txt").write_text("\n".join(lines) + "\n")
    (out / f"{category}.index.json").write_text(json.dumps({k: index[k] for k in sorted(index, key=int)}))
    titles = {k: v.get("title") for k, v in items.items() if isinstance(v, dict) and v.get("title")}
    (out / "titles.json").write_text(json.dumps(titles, ensure_ascii=False))
    print(f"wrote {out}: {len(users)} users (every test prompt's history checked), {n} items, {len(titles)} titles")
    print(f"run e.g.: atspeed recommend --data {out} --target MODEL --history 10 --user 1")


if __name__ == "__main__":
    main()
