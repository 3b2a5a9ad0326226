"""Write tokenizer.json for an LC-Rec-style LLaMA folder saved with the slow SentencePiece
tokenizer (tokenizer.model + added_tokens.json), reproducing the slow tokenizer's ids exactly.

usage: python scripts/lcrec_tokenizer_json.py FOLDER      (run once, on the slow folder)

Why not simply AutoTokenizer.from_pretrained(d).save_pretrained(d): the conversion saves the added
code tokens as `normalized: true`, matched after the `▁` normalizer, so `<b_69>` right after
`<a_163>` is split into pieces and the prompt ids differ from the ones the model was fine-tuned on
(atspeed refuses such a tokenizer). Adding the codes with normalized=False reproduces the slow
tokenizer, which splits on them first. Verified against the slow LlamaTokenizer (legacy and not)
with transformers 4.41.0, 4.46.3, 4.57.6 and 5.24.0: the same ids on every LC-Rec prompt.
Transformers 5 writes a Metaspace pre-tokenizer where the legacy slow tokenizer prepends `▁` to
every piece; the last step restores the legacy normalizer (a no-op on 4.x). Transformers 5's
LlamaTokenizer would also rebuild that pipeline at load (Metaspace, scheme from `legacy`), so
tokenizer_config.json is set to `PreTrainedTokenizerFast`: transformers 5, and atspeed with its
default rules, then load this tokenizer.json as written, i.e. as the slow tokenizer encodes.
"""
import json
import os
import sys

from transformers import AddedToken, AutoTokenizer

d = sys.argv[1]
assert not os.path.exists(f"{d}/tokenizer.json"), "already has tokenizer.json (run once, on the slow folder)"
legacy = json.load(open(f"{d}/tokenizer_config.json")).get("legacy", True) is not False  # slow default: True
tok = AutoTokenizer.from_pretrained(d)  # converts the slow tokenizer to a fast one
codes = [t for t in json.load(open(f"{d}/added_tokens.json")) if t not in tok.all_special_tokens]
tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in codes])  # match codes on raw text
tok.save_pretrained(d)
if legacy:
    p = f"{d}/tokenizer.json"
    j = json.load(open(p))
    j["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"}]}
    j["pre_tokenizer"] = None
    json.dump(j, open(p, "w"), ensure_ascii=False, indent=2)
c = f"{d}/tokenizer_config.json"
cfg = json.load(open(c))
cfg["tokenizer_class"] = "PreTrainedTokenizerFast"  # load the file as written (see above)
json.dump(cfg, open(c, "w"), ensure_ascii=False, indent=2)
print(f"wrote {d}/tokenizer.json (and tokenizer_class PreTrainedTokenizerFast)")
