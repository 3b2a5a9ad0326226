#!/usr/bin/env python3
"""Build tiny reference-style LLM recommender checkpoints and transformers' outputs for them.

Writes `tests/fixtures/reference/` (see the README written there):

- `data/`: a small subset of `assets/beauty` in the reference layout;
- `llama/`, `qwen2/`, `qwen3/`: tiny random checkpoints (float32 safetensors) whose tokenizers
  carry the dataset's code tokens the way LC-Rec adds them, each with an `expected.json` holding
  transformers' prompt ids, last-position logits and trie-constrained beam search results;
- `lora/`: a LLaMA base without code tokens, a PEFT LoRA adapter (with the resized
  embed_tokens / lm_head rows as modules_to_save), the same adapter without those rows, and the
  expected outputs of the merged model.

Deterministic: fixed seeds, single-threaded torch; rerunning it rewrites the same files
(given the same library versions). CI never runs it; its outputs are checked in.

Usage: python scripts/make_reference_fixtures.py [--out DIR]
"""

import argparse
import json
import os
import re
import shutil
import sys
from collections import defaultdict
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
SRC = ROOT / "assets" / "beauty"
SRC_INDEX = "beauty.LCRec-1e-3lr.json"
INDEX = "sub.LCRec-1e-3lr.json"
SPLITS = ("sequential_train.txt", "sequential_valid.txt", "sequential_test.txt")

N_USERS = 60  # first users (file order) that have a test item
H = 20  # history length
L = 4  # identifier length
KS = (1, 5, 10)
N_EXPECTED_USERS = 3
MIN_GAP = 5e-2  # every beam list's score margin must be at least this (no near-ties)

TEMPLATE = (
    "Below is an instruction that describes a task. Write a response that appropriately "
    "completes the request.\n\n### Instruction:\nThe user has interacted with items {history} "
    "in chronological order. Can you predict the next possible item that the user may "
    "expect?\n\n### Response:"
)

LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]

# Qwen2's pre-tokenizer split pattern (as in Qwen2/Qwen2.5/Qwen3 tokenizer.json).
QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)


# ----------------------------------------------------------------------------------------------
# data


def read_split(path):
    rows = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if parts:
            rows.append((int(parts[0]), [int(x) for x in parts[1:]]))
    return rows


def make_data(out):
    """Subset of assets/beauty: the first N_USERS users with a test item, their items only."""
    train, valid, test = (read_split(SRC / s) for s in SPLITS)
    assert [u for u, _ in train] == [u for u, _ in valid] == [u for u, _ in test]
    chosen = [i for i, (_, items) in enumerate(test) if items][:N_USERS]
    old_items = sorted({x for i in chosen for sp in (train, valid, test) for x in sp[i][1]})
    new_of = {old: new for new, old in enumerate(old_items)}  # 1-based old -> 0-based new
    src_index = json.loads((SRC / SRC_INDEX).read_text())
    src_titles = json.loads((SRC / "titles.json").read_text())
    index = {str(new_of[o]): src_index[str(o - 1)] for o in old_items}
    titles = {str(new_of[o]): src_titles[str(o - 1)] for o in old_items if str(o - 1) in src_titles}
    users = []
    for uid, i in enumerate(chosen, start=1):
        users.append(
            {
                "uid": uid,
                "source_uid": train[i][0],
                "train": [new_of[x] for x in train[i][1]],
                "valid": [new_of[x] for x in valid[i][1]],
                "test": [new_of[x] for x in test[i][1]],
            }
        )
    d = out / "data"
    d.mkdir(parents=True)
    for split, name in zip(("train", "valid", "test"), SPLITS):
        lines = [" ".join([str(u["uid"])] + [str(x + 1) for x in u[split]]) for u in users]
        (d / name).write_text("\n".join(lines) + "\n")
    (d / INDEX).write_text(json.dumps(index))
    (d / "titles.json").write_text(json.dumps(titles, ensure_ascii=False, indent=0) + "\n")
    codes = [index[str(i)] for i in range(len(index))]
    return users, codes, titles, {"source_users": [u["source_uid"] for u in users]}


def history(user):
    return (user["train"] + user["valid"])[-H:]


def prompt_text(hist, codes):
    return TEMPLATE.format(history=", ".join("".join(codes[i]) for i in hist))


def code_tokens(codes):
    # LC-Rec: collect every code string, sorted(set(...)) (string sort), tokenizer.add_tokens.
    return sorted({c for ident in codes for c in ident})


# ----------------------------------------------------------------------------------------------
# tokenizers


def corpus(titles):
    base = TEMPLATE.replace(" {history}", "")
    return [base] * 20 + [titles[k] for k in sorted(titles, key=int)]


def sentencepiece_style_tokenizer(texts):
    """LLaMA-like tokenizer.json: BPE with byte fallback, <unk>=0 <s>=1 </s>=2, <0x00>..<0xFF>,
    metaspace handling as transformers' LlamaConverter writes it for legacy=False (Metaspace
    pre-tokenizer, prepend_scheme "first", split false; no normalizer), BOS template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    specials = ["<unk>", "<s>", "</s>"] + [f"<0x{b:02X}>" for b in range(256)]
    tok = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    # Training splits on metaspace-words so merges stay within words (like SentencePiece's
    # split_by_whitespace); the saved pre-tokenizer does not split (as LLaMA's).
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    trainer = trainers.BpeTrainer(
        vocab_size=512, special_tokens=specials, limit_alphabet=96, show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first", split=False)
    tok.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", 1)]
    )
    assert [tok.token_to_id(t) for t in ("<unk>", "<s>", "</s>", "<0x00>", "<0xFF>")] == [0, 1, 2, 3, 258]
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )


def byte_level_tokenizer(texts):
    """Qwen2-like tokenizer.json: NFC, Split(pattern) + ByteLevel(use_regex=false), byte-level
    BPE, <|endoftext|> <|im_start|> <|im_end|> as special added tokens after the BPE vocabulary,
    no BOS."""
    from tokenizers import (
        AddedToken,
        Regex,
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )

    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=512, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    tok.train_from_iterator(texts, trainer)
    tok.decoder = decoders.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.post_processor = processors.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False)
    tok.add_special_tokens(
        [AddedToken(t, normalized=False, special=True) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")]
    )
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|endoftext|>", pad_token="<|endoftext|>"
    )


# ----------------------------------------------------------------------------------------------
# models


def init_weights(model, seed, embed_std, lm_head_std, bias_std=0.3, norm_std=0.2):
    """Random but peaked weights: large stds so beam scores are well separated. Linear weights
    have std 0.3 at fan-in 64 (2.4 / sqrt(fan_in)); lm_head's std is given for hidden 64 and
    scaled the same way, so logits have the same spread at any width."""
    hidden = model.config.hidden_size
    lm_head_std = lm_head_std * (64 / hidden) ** 0.5
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters(), key=lambda kv: kv[0]):
            if name.endswith("norm.weight"):  # input/post_attention/final norm, q_norm, k_norm
                p.copy_(1.0 + norm_std * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(embed_std * torch.randn(p.shape, generator=g))
            elif name.startswith("lm_head"):
                p.copy_(lm_head_std * torch.randn(p.shape, generator=g))
            elif name.endswith(".bias"):
                p.copy_(bias_std * torch.randn(p.shape, generator=g))
            elif name.endswith(".weight"):
                p.copy_(2.4 / p.shape[1] ** 0.5 * torch.randn(p.shape, generator=g))
            else:
                raise ValueError(f"unexpected parameter {name}")


def llama_config(vocab, tok, hidden=64, intermediate=128):
    from transformers import LlamaConfig

    return LlamaConfig(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=intermediate,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
        tie_word_embeddings=False,
        bos_token_id=tok.bos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )


def qwen_config(kind, vocab, tok):
    from transformers import Qwen2Config, Qwen3Config

    # qwen3 is narrower (hidden 32, head_dim 16 != 32 / 4) to keep the fixtures small
    common = dict(
        vocab_size=vocab,
        hidden_size=64 if kind == "qwen2" else 32,
        intermediate_size=128 if kind == "qwen2" else 64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        rms_norm_eps=1e-6,
        rope_parameters={"rope_type": "default", "rope_theta": 1000000.0},
        tie_word_embeddings=True,
        use_sliding_window=False,
        bos_token_id=tok.eos_token_id,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
    )
    if kind == "qwen2":
        return Qwen2Config(**common)
    return Qwen3Config(head_dim=16, attention_bias=False, **common)


def save_tokenizer(tok, folder):
    """save_pretrained, then tokenizer.json rewritten without indentation (same content, as
    `tokenizers` serialises it with pretty=False) to keep the fixtures small."""
    tok.save_pretrained(folder)
    path = folder / "tokenizer.json"
    assert json.loads(path.read_text()) == json.loads(tok.backend_tokenizer.to_str())
    tok.backend_tokenizer.save(str(path), pretty=False)


def save_checkpoint(model, tok, folder):
    folder.mkdir(parents=True)
    model.save_pretrained(folder, safe_serialization=True)
    save_tokenizer(tok, folder)
    cfg = json.loads((folder / "config.json").read_text())
    assert "prompt_style" not in cfg


def tidy_adapter(folder):
    """PEFT stores target_modules as a set: sort it so reruns write the same file; drop the
    boilerplate model card PEFT writes (README.md)."""
    path = folder / "adapter_config.json"
    cfg = json.loads(path.read_text())
    cfg["target_modules"] = sorted(cfg["target_modules"])
    path.write_text(json.dumps(cfg, indent=2, sort_keys=True))
    card = folder / "README.md"
    if card.exists():
        card.unlink()


# ----------------------------------------------------------------------------------------------
# decoding


def allowed_map(codes, tok):
    """Prefix trie over the identifiers, as token ids: prefix tuple -> sorted allowed ids."""
    allowed = defaultdict(set)
    for ident in codes:
        ids = tok.convert_tokens_to_ids(list(ident))
        assert all(i is not None and i != tok.unk_token_id for i in ids), ident
        for d in range(L):
            allowed[tuple(ids[:d])].add(ids[d])
    return {k: sorted(v) for k, v in allowed.items()}


@torch.no_grad()
def last_logits(model, ids):
    return model(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long)).logits[0, -1]


@torch.no_grad()
def reference_beams(model, prompt_ids, K, allowed):
    """Plain beam search: log_softmax over the full vocabulary, trie mask, sum of log-probs,
    ties broken by (score desc, token sequence asc). Full forward per beam, float64 sums.
    Returns the final beams and the per-step boundary gaps (K-th kept vs best dropped)."""
    beams = [((), 0.0)]
    boundary = []
    for _ in range(L):
        cands = []
        for seq, s in beams:
            logp = torch.log_softmax(last_logits(model, prompt_ids + list(seq)).float(), -1).double()
            for t in allowed[seq]:
                cands.append((seq + (t,), s + logp[t].item()))
        cands.sort(key=lambda c: (-c[1], c[0]))
        if len(cands) > K:
            boundary.append(cands[K - 1][1] - cands[K][1])
        beams = cands[:K]
    return beams, boundary


@torch.no_grad()
def hf_beams(model, prompt_ids, K, allowed, tok):
    plen = len(prompt_ids)

    def prefix_fn(batch_id, sent):
        return allowed.get(tuple(sent[plen:].tolist()), [])

    out = model.generate(
        input_ids=torch.tensor([prompt_ids]),
        attention_mask=torch.ones(1, plen, dtype=torch.long),
        num_beams=K,
        num_return_sequences=K,
        max_new_tokens=L,
        min_new_tokens=L,
        do_sample=False,
        length_penalty=0.0,
        early_stopping=True,
        output_scores=True,
        output_logits=True,
        return_dict_in_generate=True,
        prefix_allowed_tokens_fn=prefix_fn,
        pad_token_id=tok.pad_token_id,
        eos_token_id=tok.eos_token_id,
        bos_token_id=None,
        top_k=None,
        top_p=None,
        temperature=None,
    )
    seqs = out.sequences[:, plen:].tolist()
    if K == 1:
        # num_beams = 1 is greedy search in transformers: no sequences_scores; the score is the
        # sum of log_softmax(raw logits) at the chosen tokens (output_logits).
        logp = [torch.log_softmax(lg[0].float(), -1) for lg in out.logits]
        scores = [float(sum(logp[d][seqs[0][d]] for d in range(L)))]
        how = "greedy; score = sum of log_softmax(output_logits) at the chosen tokens"
    else:
        scores = out.sequences_scores.tolist()
        how = "beam search; score = sequences_scores"
    return seqs, scores, how


def f32(x):
    """Shortest decimal that round-trips to the same float32."""
    return float(str(np.float32(x)))


def compute_expected(model, tok, folder, codes, users, allowed):
    """Expected outputs for the given users; returns (records, min gap) or raises."""
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer

    tok2 = AutoTokenizer.from_pretrained(folder)
    records = []
    for u in users:
        hist = history(u)
        text = prompt_text(hist, codes)
        ids = tok2(text, add_special_tokens=True).input_ids
        assert ids == tok(text, add_special_tokens=True).input_ids
        # what a Rust `tokenizers::Tokenizer::from_file` + encode(text, true) sees
        raw = Tokenizer.from_file(str(folder / "tokenizer.json"))
        assert raw.encode(text, add_special_tokens=True).ids == ids
        logits = last_logits(model, ids)
        assert logits.dtype == torch.float32 and logits.shape[0] == model.config.vocab_size
        rec = {
            "user": u["uid"],
            "history": hist,
            "ground_truth": u["test"],
            "prompt_text": text,
            "prompt_ids": ids,
            "prompt_tokens": tok2.convert_ids_to_tokens(ids),
            "last_logits": [f32(x) for x in logits.tolist()],
            "beams": {},
        }
        for K in KS:
            seqs, scores, how = hf_beams(model, ids, K, allowed, tok2)
            ref, boundary = reference_beams(model, ids, K, allowed)
            assert [list(s) for s, _ in ref] == seqs, (u["uid"], K, seqs, ref)
            dev = max(abs(a - b) for a, b in zip(scores, (s for _, s in ref)))
            assert dev < 5e-4, dev  # f32 sums near -50: kv-cache vs full forward
            consec = [scores[i] - scores[i + 1] for i in range(K - 1)]
            ref_consec = [ref[i][1] - ref[i + 1][1] for i in range(K - 1)]
            margin = min(consec + ref_consec + boundary) if (consec or boundary) else None
            rec["beams"][str(K)] = {
                "generate": how,
                "beams": [
                    {
                        "token_ids": s,
                        "tokens": tok2.convert_ids_to_tokens(s),
                        "score": f32(sc),
                        "reference_score": r[1],
                    }
                    for s, sc, r in zip(seqs, scores, ref)
                ],
                "margin": margin,
                "min_consecutive_gap": min(consec + ref_consec) if consec else None,
                "boundary_gaps": boundary,
                "max_score_deviation": dev,
            }
        records.append(rec)
    gaps = [r["beams"][str(K)]["margin"] for r in records for K in KS]
    gaps = [g for g in gaps if g is not None]
    return records, min(gaps)


def pick_users(model, tok, folder, codes, users, allowed):
    """Three users with history >= 5, one of them with a full history of 20; the first in file
    order whose beam lists all have margin >= MIN_GAP."""
    long_ = [u for u in users if len(history(u)) == H]
    short = [u for u in users if 5 <= len(history(u)) < H]
    picked = []
    for pool, want in ((long_, 1), (short, N_EXPECTED_USERS - 1)):
        taken = 0
        for u in pool:
            if taken == want:
                break
            if any(len(history(u)) == len(history(p)) for p in picked):
                continue  # vary the history lengths
            _, gap = compute_expected(model, tok, folder, codes, [u], allowed)
            if gap >= MIN_GAP:
                picked.append(u)
                taken += 1
            else:
                print(f"  {folder.name}: skip user {u['uid']} (margin {gap:.2e})")
        assert taken == want
    picked.sort(key=lambda u: u["uid"])
    return compute_expected(model, tok, folder, codes, picked, allowed)


def config_summary(model, tok, codes):
    ctoks = code_tokens(codes)
    ids = tok.convert_tokens_to_ids(ctoks)
    assert ids == list(range(ids[0], ids[0] + len(ids)))
    return {
        "model_type": model.config.model_type,
        "vocab_size": model.config.vocab_size,
        "tokenizer_len": len(tok),
        "code_tokens": len(ctoks),
        "first_code_token": [ctoks[0], ids[0]],
        "last_code_token": [ctoks[-1], ids[-1]],
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "pad_token_id": tok.pad_token_id,
        "tie_word_embeddings": model.config.tie_word_embeddings,
    }


def write_json(path, obj):
    """Indented JSON with every list of numbers on one line."""
    text = json.dumps(obj, indent=1, ensure_ascii=False)
    text = re.sub(r"\[[-0-9.e+,\s]*\]", lambda m: re.sub(r"\s+", "", m.group(0)).replace(",", ", "), text)
    assert json.loads(text) == obj
    path.write_text(text + "\n")


def safetensors_names(path):
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        return {k: [str(f.get_slice(k).get_dtype()), list(f.get_slice(k).get_shape())] for k in sorted(f.keys())}


# ----------------------------------------------------------------------------------------------


def build_plain(kind, out, codes, users, titles, seed):
    from transformers import AutoModelForCausalLM, LlamaForCausalLM, Qwen2ForCausalLM, Qwen3ForCausalLM

    texts = corpus(titles)
    tok = sentencepiece_style_tokenizer(texts) if kind == "llama" else byte_level_tokenizer(texts)
    base_len = len(tok)
    tok.add_tokens(code_tokens(codes))
    torch.manual_seed(seed)
    if kind == "llama":
        model = LlamaForCausalLM(llama_config(len(tok), tok))
        init_weights(model, seed, embed_std=1.0, lm_head_std=0.6)
    else:
        cls = Qwen2ForCausalLM if kind == "qwen2" else Qwen3ForCausalLM
        model = cls(qwen_config(kind, len(tok), tok))
        # lm_head tied to embed_tokens: its std sets the logits' spread
        init_weights(model, seed, embed_std=0.6 * (64 / model.config.hidden_size) ** 0.5, lm_head_std=0.6)
    model.eval()
    folder = out / kind
    save_checkpoint(model, tok, folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    allowed = allowed_map(codes, tok)
    records, gap = pick_users(model, tok, folder, codes, users, allowed)
    summary = config_summary(model, tok, codes)
    summary["base_tokenizer_len"] = base_len
    write_json(folder / "expected.json", {"config_summary": summary, "min_margin": gap, "users": records})
    return {"min_margin": gap, "users": [r["user"] for r in records]}


def build_lora(out, codes, users, titles, seed):
    from peft import LoraConfig, PeftModel, TaskType, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lora = out / "lora"
    tok = sentencepiece_style_tokenizer(corpus(titles))
    torch.manual_seed(seed)
    from transformers import LlamaForCausalLM

    # narrower than llama/ (hidden 32, head_dim 8, intermediate 64) to keep the fixtures small
    base = LlamaForCausalLM(llama_config(len(tok), tok, hidden=32, intermediate=64))
    init_weights(base, seed, embed_std=1.0, lm_head_std=0.6)
    save_checkpoint(base.eval(), tok, lora / "base")
    base_len = len(tok)

    # LC-Rec's lora_finetune.py: add the code tokens, resize, LoRA with modules_to_save.
    tok.add_tokens(code_tokens(codes))
    torch.manual_seed(seed + 1)
    model = AutoModelForCausalLM.from_pretrained(lora / "base", dtype=torch.float32)
    model.resize_token_embeddings(len(tok))
    cfg = LoraConfig(
        r=4,
        lora_alpha=16,
        target_modules=LORA_TARGETS,
        modules_to_save=["embed_tokens", "lm_head"],
        lora_dropout=0.0,
        bias="none",
        task_type=TaskType.CAUSAL_LM,
    )
    cfg.base_model_name_or_path = "../base"
    peft_model = get_peft_model(model, cfg)
    g = torch.Generator().manual_seed(seed + 2)
    with torch.no_grad():
        for name, p in sorted(peft_model.named_parameters(), key=lambda kv: kv[0]):
            if "lora_A" in name or "lora_B" in name:
                p.copy_(0.2 * torch.randn(p.shape, generator=g))  # nonzero B: a trained adapter
            elif "modules_to_save" in name:
                # fine-tuned copies: base rows perturbed, new code rows random
                fresh = torch.randn(p.shape, generator=g)
                std = 1.0 if "embed_tokens" in name else 0.6 * (64 / p.shape[1]) ** 0.5
                p[:base_len] += 0.3 * std * fresh[:base_len]
                p[base_len:] = std * fresh[base_len:]
    peft_model.peft_config["default"].base_model_name_or_path = "../base"
    adapter = lora / "adapter"
    peft_model.save_pretrained(adapter, safe_serialization=True, save_embedding_layers=False)
    save_tokenizer(tok, adapter)

    # The same adapter as the reference saves it without modules_to_save: LoRA matrices only.
    cfg2 = LoraConfig(
        r=4,
        lora_alpha=16,
        target_modules=LORA_TARGETS,
        lora_dropout=0.0,
        bias="none",
        task_type=TaskType.CAUSAL_LM,
    )
    model2 = AutoModelForCausalLM.from_pretrained(lora / "base", dtype=torch.float32)
    model2.resize_token_embeddings(len(tok))
    peft2 = get_peft_model(model2, cfg2)
    src = dict(peft_model.named_parameters())
    with torch.no_grad():
        for name, p in peft2.named_parameters():
            if "lora_" in name:
                p.copy_(src[name])
    peft2.peft_config["default"].base_model_name_or_path = "../base"
    no_rows = lora / "adapter-no-rows"
    peft2.save_pretrained(no_rows, safe_serialization=True, save_embedding_layers=False)
    save_tokenizer(tok, no_rows)
    for d in (adapter, no_rows):
        tidy_adapter(d)

    # Expected values: the merged model, loaded the way LC-Rec's test.py does.
    tok2 = AutoTokenizer.from_pretrained(adapter)
    torch.manual_seed(seed + 3)
    resized = AutoModelForCausalLM.from_pretrained(lora / "base", dtype=torch.float32)
    resized.resize_token_embeddings(len(tok2))
    unmerged = PeftModel.from_pretrained(resized, adapter).eval()
    # the unmerged model's logits for every user (cheap); one is stored next to the merged ones
    unmerged_logits = {u["uid"]: last_logits(unmerged, tok2(prompt_text(history(u), codes)).input_ids) for u in users}
    merged = unmerged.merge_and_unload().eval()
    assert merged.config.vocab_size == len(tok2)
    allowed = allowed_map(codes, tok2)
    records, gap = pick_users(merged, tok2, adapter, codes, users, allowed)
    u0 = max(records, key=lambda r: len(r["history"]))
    ul = unmerged_logits[u0["user"]]
    u0["unmerged_last_logits"] = [f32(x) for x in ul.tolist()]
    u0["unmerged_max_abs_diff"] = float((ul - torch.tensor(u0["last_logits"])).abs().max())
    assert u0["unmerged_max_abs_diff"] < 1e-3
    summary = config_summary(merged, tok2, codes)
    summary["base_vocab_size"] = base_len
    summary["lora"] = {
        "r": 4,
        "lora_alpha": 16,
        "scaling": 16 / 4,
        "target_modules": LORA_TARGETS,
        "modules_to_save": ["embed_tokens", "lm_head"],
        "base_model_name_or_path": "../base",
    }
    write_json(
        lora / "expected.json",
        {
            "config_summary": summary,
            "merged": "PeftModel.from_pretrained(lora/base resized to len(adapter tokenizer), "
            "lora/adapter).merge_and_unload()",
            "min_margin": gap,
            "users": records,
        },
    )
    return {"min_margin": gap, "users": [r["user"] for r in records]}


# ----------------------------------------------------------------------------------------------
# README


def sizes(out):
    return {
        str(p.relative_to(out)): p.stat().st_size
        for p in sorted(out.rglob("*"))
        if p.is_file() and p.name != "README.md"
    }


def write_tensor_names(out):
    with open(out / "tensor_names.txt", "w") as f:
        for path in sorted(out.rglob("*.safetensors")):
            f.write(f"# {path.relative_to(out)}\n")
            for k, (dt, shape) in safetensors_names(path).items():
                f.write(f"{k}\t{dt}\t{shape}\n")


def tokenizer_types(path):
    t = json.loads(path.read_text())

    def desc(x):
        if x is None:
            return "null"
        if x["type"] == "Sequence":
            inner = x.get("normalizers") or x.get("pretokenizers") or x.get("decoders") or x.get("processors")
            return "Sequence[" + ", ".join(desc(i) for i in inner) + "]"
        extra = {k: v for k, v in x.items() if k != "type"}
        if x["type"] == "Split":
            extra = {"pattern": "the Qwen2 regex", "behavior": x["behavior"], "invert": x["invert"]}
        if x["type"] == "TemplateProcessing":
            piece = lambda p: p["SpecialToken"]["id"] if "SpecialToken" in p else "$" + p["Sequence"]["id"]
            extra = {
                "single": " ".join(piece(p) for p in x["single"]),
                "pair": " ".join(piece(p) for p in x["pair"]),
                "special_tokens": {k: v["ids"] for k, v in x["special_tokens"].items()},
            }
        return x["type"] + ("(" + ", ".join(f"{k}={json.dumps(v, ensure_ascii=False)}" for k, v in extra.items()) + ")" if extra else "")

    m = t["model"]
    model = f'{m["type"]}(byte_fallback={json.dumps(m.get("byte_fallback"))}, unk_token={json.dumps(m.get("unk_token"))}, ' \
        f'vocab={len(m["vocab"])}, merges={len(m["merges"])})'
    added = t["added_tokens"]
    special = [f'{a["content"]}={a["id"]}' for a in added if a["special"] and not a["content"].startswith("<0x")]
    nbytes = sum(1 for a in added if a["special"] and a["content"].startswith("<0x"))
    if nbytes:
        assert nbytes == 256
        first = next(a for a in added if a["content"] == "<0x00>")["id"]
        special.append(f"<0x00>..<0xFF>={first}..{first + 255}")
    normal = [a for a in added if not a["special"]]
    flags = sorted({(a["normalized"], a["lstrip"], a["rstrip"], a["single_word"]) for a in normal})
    return [
        f"model: {model}",
        f"normalizer: {desc(t['normalizer'])}",
        f"pre_tokenizer: {desc(t['pre_tokenizer'])}",
        f"post_processor: {desc(t['post_processor'])}",
        f"decoder: {desc(t['decoder'])}",
        f"added_tokens: special {', '.join(special)}; "
        + (f"{len(normal)} normal (code tokens) ids {normal[0]['id']}..{normal[-1]['id']}, "
           f"(normalized, lstrip, rstrip, single_word) = {flags}" if normal else "no normal added tokens"),
    ]


def write_readme(out, summary):
    v = summary["versions"]
    d = summary["data"]
    lines = []
    w = lines.append
    w("# Reference-style checkpoints and transformers' outputs")
    w("")
    w("Tiny random checkpoints in the layout of LLM recommenders fine-tuned with the reference code")
    w("(LC-Rec style: a LLaMA/Qwen tokenizer with the dataset's code tokens added), and what Hugging")
    w("Face transformers computes for them, so the Rust tests can check that `atspeed` loads such")
    w("models and computes exactly the same prompt ids, logits and beams. Generated by")
    w("")
    w("    python scripts/make_reference_fixtures.py")
    w("")
    w("(deterministic: fixed seeds, one torch thread; rerunning it rewrites identical files with the")
    w("versions below). CI never runs it; the files are checked in. This README is written by the")
    w("script too.")
    w("")
    w("Versions: " + ", ".join(f"{k} {x}" for k, x in v.items()) + " (CPU).")
    w("")
    w("## Folders")
    w("")
    w(f"- `data/`: the first {d['users']} users of `assets/beauty` that have a test item (renumbered")
    w(f"  1..{d['users']} in file order; original uids in `summary.json`), their train/valid/test lines, and")
    w(f"  only the {d['items']} items they touch, renumbered 0..{d['items'] - 1} in order of their original id")
    w("  (sequence files hold item + 1). `sub.LCRec-1e-3lr.json` maps the 0-based item id to its 4 code")
    w(f"  strings ({d['code_tokens']} distinct code tokens, no identifier collisions in this subset);")
    w("  `titles.json` the titles.")
    w("- `llama/`: LlamaForCausalLM, 2 layers, hidden 64, 4 heads, 2 kv heads (GQA), head_dim 16,")
    w("  intermediate 128, untied embeddings, rope_theta 1e4, rms_norm_eps 1e-6. SentencePiece-style")
    w("  BPE tokenizer (byte fallback, `<unk>`=0 `<s>`=1 `</s>`=2, `<0x00>`..`<0xFF>` = 3..258, BOS added).")
    w("- `qwen2/`: Qwen2ForCausalLM, 2 layers, hidden 64, 4 heads, 2 kv heads, intermediate 128, q/k/v")
    w("  biases (random, nonzero), tied embeddings (no `lm_head.weight` in the file), rope_theta 1e6.")
    w("  Byte-level BPE tokenizer like Qwen2's, no BOS.")
    w("- `qwen3/`: Qwen3ForCausalLM, 2 layers, hidden 32, 4 heads, 2 kv heads, intermediate 64,")
    w("  **head_dim 16** (explicit, != hidden/heads = 8: q_proj is 64x32, k/v_proj 32x32, o_proj 32x64),")
    w("  per-head q_norm/k_norm of size 16 (weights random around 1), no attention bias, tied")
    w("  embeddings, rope_theta 1e6. Same tokenizer files as qwen2. (Narrower than the others to keep")
    w("  the fixtures small.)")
    w("- `lora/base/`: a LLaMA checkpoint, 2 layers, hidden 32, 4 heads (head_dim 8), 2 kv heads,")
    w("  intermediate 64, untied, whose tokenizer has **no** code tokens: vocab_size 512.")
    w("- `lora/adapter/`: PEFT LoRA made as LC-Rec's `lora_finetune.py` does: code tokens added to the")
    w("  tokenizer, `resize_token_embeddings(len(tokenizer))`, LoraConfig(r=4, lora_alpha=16, dropout 0,")
    w("  bias none, target_modules q/k/v/o/gate/up/down_proj, modules_to_save [embed_tokens, lm_head]).")
    w("  lora_A and lora_B are random (std 0.2, both nonzero); the modules_to_save copies are the base")
    w("  rows perturbed plus random rows for the code tokens. The adapter file holds the full resized")
    w("  `embed_tokens` and `lm_head` (1339 rows). `tokenizer.json` with code tokens.")
    w("  `base_model_name_or_path` is `\"../base\"`: relative to the adapter folder (from either adapter")
    w("  folder it names `lora/base`). PEFT's boilerplate model card (README.md) is deleted;")
    w("  `target_modules` (a set in PEFT) is written sorted.")
    w("- `lora/adapter-no-rows/`: the same LoRA matrices saved as a plain LoRA after resizing (no")
    w("  modules_to_save, `save_embedding_layers=False`): no embedding or lm_head rows, while its")
    w("  tokenizer has 1339 tokens and the base only 512 rows. Loading it must fail with a clear error.")
    w("- `tensor_names.txt`: every tensor (name, dtype, shape) of every safetensors file here.")
    w("- `summary.json`: versions, source uids, chosen users and smallest margins.")
    w("")
    w("Every `model.safetensors` is float32. No config.json has a `prompt_style` key: the prompt style")
    w("must be detected from the tokenizer.")
    w("")
    w("## expected.json")
    w("")
    w("One per `llama/`, `qwen2/`, `qwen3/`, `lora/` (the merged model:")
    w("`PeftModel.from_pretrained(base resized to len(adapter tokenizer), adapter).merge_and_unload()`).")
    w("")
    w("- `config_summary`: model_type, vocab_size, tokenizer_len, code_tokens (count),")
    w("  first_code_token / last_code_token as [string, id], bos/eos/pad ids, tie_word_embeddings.")
    w("  Code tokens are added in `sorted(set(...))` string order (`<a_0>`, `<a_1>`, `<a_10>`, ...), so")
    w("  their ids are consecutive from the base tokenizer length.")
    w("- `min_margin`: smallest `margin` of the file.")
    w("- `users`: 3 users of `data/` with history >= 5, one with a full history of 20. Per user:")
    w("  - `user` (1-based uid), `history` (0-based item ids, oldest first: last 20 of train + valid),")
    w("    `ground_truth` (its test items, 0-based);")
    w("  - `prompt_text`: the reference template below, filled in; `prompt_ids`:")
    w("    `AutoTokenizer.from_pretrained(folder)(prompt_text, add_special_tokens=True).input_ids`;")
    w("    `prompt_tokens` the same as strings;")
    w("  - `last_logits`: float32 logits at the last prompt position, full vocabulary")
    w("    (`AutoModelForCausalLM.from_pretrained(folder)`, float32, eval, no cache), written as the")
    w("    shortest decimal that round-trips to the same f32;")
    w("  - lora only, one user: `unmerged_last_logits` (the PeftModel before merging) and")
    w("    `unmerged_max_abs_diff` against the merged ones;")
    w("  - `beams`: for K in 1, 5, 10, `beams` best first, each `token_ids` (4 generated ids), `tokens`,")
    w("    `score` (transformers' score, f32) and `reference_score` (this script's own beam search,")
    w("    float64 sums of f32 log_softmax); `margin` = the smallest of: the gaps between consecutive")
    w("    final beams and, at each of the 4 steps, the gap between the K-th kept candidate and the best")
    w("    dropped one (`boundary_gaps`, one per step that had more than K candidates);")
    w("    `max_score_deviation` |score - reference_score|.")
    w("")
    w("Prompt template (SPEC section 3, no trailing space or newline; `{history}` = each item's four")
    w("code strings concatenated, joined with `\", \"`):")
    w("")
    w("    " + TEMPLATE.replace("\n", "\\n"))
    w("")
    w("(shown on one line; each `\\n` is a newline character.)")
    w("")
    w("Beam search: `model.generate(input_ids, attention_mask, num_beams=K, num_return_sequences=K,")
    w("max_new_tokens=4, min_new_tokens=4, do_sample=False, length_penalty=0.0, early_stopping=True,")
    w("output_scores=True, output_logits=True, return_dict_in_generate=True,")
    w("prefix_allowed_tokens_fn=trie)`, the trie allowing after the prompt only prefixes of the")
    w("identifiers of `data/` (code strings -> ids with `convert_tokens_to_ids`). Scores are sums of")
    w("log_softmax over the full vocabulary, masked afterwards (no renormalisation). For K = 1")
    w("transformers runs greedy search (num_beams = 1), which returns no `sequences_scores` and warns that")
    w("`early_stopping` and `length_penalty` are ignored; its `score` is the sum of")
    w("log_softmax(`output_logits`) at the chosen tokens. For K > 1 `score` is `sequences_scores`")
    w("(length_penalty 0: the plain sum). The script asserts that its own beam search (full forward")
    w("per beam, ties by score then token sequence) gives the same lists for every K and user.")
    w("Users: the first user (file order) with a full history of 20, then the first two with")
    w("5 <= history < 20 (distinct lengths), skipping any user with a beam list of margin <")
    w(f"{MIN_GAP} (the script prints the skipped ones), so float near-ties cannot occur.")
    w("")
    w("## Smallest score gaps")
    w("")
    w("| model | users | K=1 | K=5 | K=10 | max score deviation generate vs reference |")
    w("|---|---|---|---|---|---|")
    for m in ("llama", "qwen2", "qwen3", "lora"):
        e = json.loads((out / m / "expected.json").read_text())
        cells = []
        for K in KS:
            gs = [r["beams"][str(K)]["margin"] for r in e["users"]]
            gs = [g for g in gs if g is not None]
            cells.append(f"{min(gs):.4f}" if gs else "-")
        dev = max(r["beams"][str(K)]["max_score_deviation"] for r in e["users"] for K in KS)
        users = ", ".join(f'{r["user"]} (h={len(r["history"])})' for r in e["users"])
        w(f"| {m} | {users} | " + " | ".join(cells) + f" | {dev:.1e} |")
    w("")
    w("Scores are around -30 to -70 (peaked random weights: embeddings std 1.0 (untied) / 0.6 x")
    w("sqrt(64/hidden) (tied), lm_head std 0.6 x sqrt(64/hidden), other matrices std 2.4/sqrt(fan_in)")
    w("(0.3 at fan-in 64), q/k/v biases std 0.3, norm weights 1 + 0.2 N(0,1)).")
    w("")
    w("## Tokenizers (tokenizer.json)")
    w("")
    for m in ("llama", "qwen2", "lora/base"):
        w(f"`{m}/`:")
        w("")
        for line in tokenizer_types(out / m / "tokenizer.json"):
            w(f"- {line}")
        w("")
    w("`qwen3/tokenizer.json` is byte-identical to `qwen2/`'s; `lora/adapter/` and `lora/adapter-no-rows/`")
    w("hold the same file as `llama/`; `lora/base/`'s is that file without the code tokens. All added")
    w("tokens are listed in `added_tokens`; byte tokens and `<unk>`/`<s>`/`</s>` are also in the model vocab")
    w("(ids 0..258), the qwen specials and all code tokens are not (they only exist as added tokens).")
    w("`tokenizer_config.json` says `\"tokenizer_class\": \"TokenizersBackend\"` (transformers 5's generic")
    w("class: tokenizer.json is used as is). All tokenizer.json files are written without indentation")
    w("(`tokenizers`' pretty=False serialisation of exactly what save_pretrained wrote) to save space.")
    w("")
    w("The LLaMA tokenizer is what transformers' LlamaConverter writes for `legacy=False`: no")
    w("normalizer, Metaspace pre-tokenizer with prepend_scheme `first` and split false. The older Llama-2")
    w("form (normalizer Sequence[Prepend(\"▁\"), Replace(\" \", \"▁\")], no pre-tokenizer) was tried")
    w("and rejected: added tokens are `normalized: true` (what `add_tokens` makes), and with the Prepend")
    w("normalizer `tokenizers` (Python and Rust alike) matches them against their normalized form")
    w("`▁<a_1>`, so only a code token preceded by a space is found and the next ones (`<b_2>` right after")
    w("`<a_1>`) fall apart into byte tokens. Real LC-Rec checkpoints were saved with the slow")
    w("sentencepiece `LlamaTokenizer` (tokenizer.model + added_tokens.json, no tokenizer.json), where code")
    w("tokens are always whole.")
    w("")
    w("## config.json keys")
    w("")
    for m in ("llama", "qwen2", "qwen3", "lora/base"):
        cfg = json.loads((out / m / "config.json").read_text())
        w(f"- `{m}`: " + ", ".join(f"`{k}`" for k in cfg))
    w("")
    w("transformers 5 writes `rope_parameters: {rope_theta, rope_type: \"default\"}` instead of a top-level")
    w("`rope_theta`, and `dtype` instead of `torch_dtype`; older checkpoints have the latter keys, so the")
    w("loader must accept both. Qwen2/Qwen3 configs carry `layer_types` (all `full_attention`),")
    w("`use_sliding_window: false`, `sliding_window: null`, `max_window_layers`.")
    present, absent = [], []
    for m in ("llama", "qwen2", "qwen3", "lora/base"):
        cfg = json.loads((out / m / "config.json").read_text())
        (present.append(f"{m} ({cfg['head_dim']})") if "head_dim" in cfg else absent.append(m))
    w("`head_dim` is present in " + ", ".join(present) + "; absent from " + ", ".join(absent))
    w("(hidden/heads = 16 there). qwen configs have `bos_token_id` =")
    w("`eos_token_id` = `pad_token_id` = `<|endoftext|>` (as Qwen2 base models); the tokenizer adds no BOS.")
    w("LLaMA configs: bos 1, eos 2, pad 0 (`<unk>`, as LC-Rec sets `pad_token_id = 0`).")
    w("")
    w("## Tensor names")
    w("")
    w("`tensor_names.txt` lists them all. Checkpoints: `model.embed_tokens.weight`,")
    w("`model.layers.{i}.{input_layernorm,post_attention_layernorm}.weight`,")
    w("`model.layers.{i}.self_attn.{q,k,v,o}_proj.weight` (+ `{q,k,v}_proj.bias` for qwen2,")
    w("+ `self_attn.{q,k}_norm.weight` for qwen3), `model.layers.{i}.mlp.{gate,up,down}_proj.weight`,")
    w("`model.norm.weight`, and `lm_head.weight` only when untied (llama, lora/base): tied checkpoints")
    w("(qwen2, qwen3) have no `lm_head.weight`. The safetensors header metadata is `{\"format\": \"pt\"}`.")
    w("")
    w("PEFT adapter (`adapter_model.safetensors`): `base_model.model.model.layers.{i}.self_attn.{q,k,v,o}_proj.lora_{A,B}.weight`,")
    w("`base_model.model.model.layers.{i}.mlp.{gate,up,down}_proj.lora_{A,B}.weight` (adapter name `default`")
    w("stripped; lora_A is [r, in], lora_B [out, r]; merged W = W + (lora_alpha / r) B A = W + 4 B A),")
    w("and, in `adapter/` only, the modules_to_save as `base_model.model.model.embed_tokens.weight` and")
    w("`base_model.model.lm_head.weight`, full resized matrices (no `modules_to_save.default` in the")
    w("name). `adapter-no-rows/` has the LoRA matrices only.")
    w("")
    w("## Sizes")
    w("")
    sz = sizes(out)
    w(f"Total {sum(sz.values())} bytes without this README:")
    w("")
    for k, n in sz.items():
        w(f"    {n:>9}  {k}")
    w("")
    (out / "README.md").write_text("\n".join(lines))


def main():
    if os.environ.get("PYTHONHASHSEED") != "0":  # set iteration order (PEFT's target_modules, ...)
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable] + sys.argv)
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "tests" / "fixtures" / "reference")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    out = args.out
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    users, codes, titles, meta = make_data(out)
    print(f"data: {len(users)} users, {len(codes)} items, {len(code_tokens(codes))} code tokens")
    summary = {"data": {"users": len(users), "items": len(codes), "code_tokens": len(code_tokens(codes)), **meta}}
    for i, kind in enumerate(("llama", "qwen2", "qwen3")):
        summary[kind] = build_plain(kind, out, codes, users, titles, seed=1000 + i)
        print(kind, summary[kind])
    summary["lora"] = build_lora(out, codes, users, titles, seed=2000)
    print("lora", summary["lora"])
    import peft
    import safetensors
    import tokenizers
    import transformers

    summary["versions"] = {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "tokenizers": tokenizers.__version__,
        "peft": peft.__version__,
        "safetensors": safetensors.__version__,
        "numpy": np.__version__,
    }
    write_json(out / "summary.json", summary)
    write_tensor_names(out)
    write_readme(out, summary)
    print(f"total {sum(sizes(out).values())} bytes (+ README.md)")


if __name__ == "__main__":
    main()
