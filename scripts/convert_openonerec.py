#!/usr/bin/env python3
"""Turn OpenOneRec's RecIF data (Hugging Face dataset OpenOneRec/OpenOneRec-RecIF) into the
dataset folder atspeed reads.

OpenOneRec keeps user sequences in onerec_bench_release.parquet (one row per user: `uid`,
`split` 0 = train / 1 = test, `hist_video_pid` a list of item ids oldest first, `target_video_pid`
the next item(s)), item SIDs in *_pid2sid.parquet (`pid`, `sid` = three codes) and captions in
pid2caption.parquet. atspeed reads sequential_{train,valid,test}.txt (`uid item ...`, 1-based),
an index JSON keyed by 0-based item id ({"0": ["<s_a_12>", "<s_b_7>", "<s_c_901>"], ...}: the
codes alone; the openonerec profile writes the `<|sid_begin|>`/`<|sid_end|>` markers around them)
and titles.json.

Items are renumbered 0..n-1 over the pids that have a SID; sequence items without one are
dropped (and counted). A test user's targets are its test split; train users' history is train.
Column names can be changed with flags (the files differ between releases).

usage: python scripts/convert_openonerec.py --sequences onerec_bench_release.parquet \
           --pid2sid video_ad_pid2sid.parquet [--captions pid2caption.parquet] --out DIR
(needs pandas and pyarrow: pip install pandas pyarrow)
"""
import argparse
import json
from pathlib import Path


def as_list(x):
    if x is None:
        return []
    if isinstance(x, (list, tuple)):
        return list(x)
    if hasattr(x, "tolist"):
        v = x.tolist()
        return v if isinstance(v, list) else [v]
    return [x]


def main():
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sequences", required=True)
    ap.add_argument("--pid2sid", required=True)
    ap.add_argument("--captions")
    ap.add_argument("--out", required=True)
    ap.add_argument("--history-column", default="hist_video_pid")
    ap.add_argument("--target-column", default="target_video_pid")
    ap.add_argument("--caption-column", default="caption")
    args = ap.parse_args()
    out = Path(args.out)
    seq = pd.read_parquet(args.sequences)
    sid = pd.read_parquet(args.pid2sid)
    for df, cols, name in ((seq, ["uid", "split", args.history_column, args.target_column], args.sequences),
                           (sid, ["pid", "sid"], args.pid2sid)):
        missing = [c for c in cols if c not in df.columns]
        if missing:
            raise SystemExit(f"{name}: no column {missing} (has {list(df.columns)}); see --help for the flags")
    pid_sid = {}
    for pid, codes in zip(sid["pid"], sid["sid"]):
        codes = as_list(codes)
        if len(codes) != 3:
            raise SystemExit(f"{args.pid2sid}: pid {pid} has {len(codes)} codes, not 3")
        pid_sid[int(pid)] = [f"<s_a_{int(codes[0])}>", f"<s_b_{int(codes[1])}>", f"<s_c_{int(codes[2])}>"]
    pids = sorted(pid_sid)
    item_of = {p: i for i, p in enumerate(pids)}
    dropped = 0

    def items(v):
        nonlocal dropped
        kept = [item_of[int(p)] for p in as_list(v) if int(p) in item_of]
        dropped += len(as_list(v)) - len(kept)
        return kept

    users = []
    for uid, split, hist, target in zip(seq["uid"], seq["split"], seq[args.history_column], seq[args.target_column]):
        h, t = items(hist), items(target)
        users.append((h, [], t) if int(split) == 1 else (h + t, [], []))
    out.mkdir(parents=True, exist_ok=False)
    for i, name in enumerate(("train", "valid", "test")):
        lines = [" ".join([str(u)] + [str(x + 1) for x in s[i]]) for u, s in enumerate(users, start=1)]
        (out / f"sequential_{name}.txt").write_text("\n".join(lines) + "\n")
    (out / "openonerec.index.json").write_text(json.dumps({str(i): pid_sid[p] for i, p in enumerate(pids)}))
    titles = 0
    if args.captions:
        cap = pd.read_parquet(args.captions)
        if args.caption_column not in cap.columns or "pid" not in cap.columns:
            raise SystemExit(f"{args.captions}: needs pid and {args.caption_column} (has {list(cap.columns)})")
        t = {str(item_of[int(p)]): str(c) for p, c in zip(cap["pid"], cap[args.caption_column]) if int(p) in item_of and c}
        (out / "titles.json").write_text(json.dumps(t, ensure_ascii=False))
        titles = len(t)
    tests = sum(1 for u in users if u[2])
    print(f"wrote {out}: {len(users)} users ({tests} with test items), {len(pids)} items, {titles} titles; "
          f"{dropped} sequence items without a SID dropped")


if __name__ == "__main__":
    main()
