//! LLM recommenders made by Python transformers (tests/fixtures/reference, built by
//! scripts/make_reference_fixtures.py; no Python here): a LLaMA with a SentencePiece-style BPE
//! tokenizer, a Qwen2 and a Qwen3 with byte-level BPE, and a PEFT LoRA adapter that resized the
//! vocabulary. Their config.json has no `prompt_style`: the style must be detected.
//!
//! Checked against transformers' own numbers: prompt ids, last-position logits, and the
//! constrained beam-search lists; strict speculative decoding must give the same lists.

mod common;

use std::path::{Path, PathBuf};

use assert_cmd::Command;
use atspeed::data::Dataset;
use atspeed::decode::{beam_search, speculative, DecodeParams, Mode};
use atspeed::load::{load_draft, load_target, Placement};
use atspeed::model::{Llm, LoadOptions, PromptStyle};
use atspeed::space::TokenSpace;
use candle_core::{DType, Device};
use rand::SeedableRng;
use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/reference")
}

/// The folder a fixture model loads from (the LoRA one is its adapter, merged over its base).
fn model_dir(name: &str) -> PathBuf {
    match name {
        "lora" => root().join("lora/adapter"),
        n => root().join(n),
    }
}

fn expected(name: &str) -> Value {
    let text = std::fs::read_to_string(root().join(name).join("expected.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

fn data() -> Dataset {
    Dataset::load(&root().join("data")).unwrap()
}

fn f32_cpu() -> Placement {
    Placement::cpu_f32()
}

fn load(name: &str, data: &Dataset) -> (Llm, TokenSpace) {
    load_target(&model_dir(name), None, data, &f32_cpu()).unwrap()
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// (token ids, score) of transformers' list for one user and K.
fn hf_list(user: &Value, k: usize) -> Vec<(Vec<u32>, f32)> {
    user["beams"][k.to_string()]["beams"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| (ids(&b["token_ids"]), b["score"].as_f64().unwrap() as f32))
        .collect()
}

const MODELS: [&str; 4] = ["llama", "qwen2", "qwen3", "lora"];

/// Largest difference allowed between our f32 numbers and PyTorch's (different kernels and
/// summation orders; measured below 1e-4 on these models).
const F32_TOL: f32 = 5e-4;

#[test]
fn prompt_style_is_detected_as_reference() {
    let data = data();
    for name in MODELS {
        let (m, _) = load(name, &data);
        assert_eq!(m.style, PromptStyle::Reference, "{name}");
        assert!(m.config().prompt_style.is_none(), "{name}");
    }
    // The shipped compact models stay compact.
    let compact = Llm::load(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/target"),
        &Device::Cpu,
    )
    .unwrap();
    assert_eq!(compact.style, PromptStyle::Compact);
}

#[test]
fn prompts_and_logits_equal_transformers() {
    let data = data();
    for name in MODELS {
        let (m, space) = load(name, &data);
        let exp = expected(name);
        let mut worst = 0f32;
        for u in exp["users"].as_array().unwrap() {
            let history = ids(&u["history"]);
            let prompt = space.prompt(&data, &history).unwrap();
            assert_eq!(prompt, ids(&u["prompt_ids"]), "{name} user {}", u["user"]);
            let logp = common::last_logits(&m, &prompt);
            let hf: Vec<f32> = u["last_logits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_f64().unwrap() as f32)
                .collect();
            assert_eq!(logp.len(), hf.len(), "{name}");
            for (a, b) in logp.iter().zip(&hf) {
                worst = worst.max((a - b).abs());
            }
        }
        eprintln!("{name}: largest logit difference from transformers {worst:.2e}");
        assert!(worst <= F32_TOL, "{name}: logits differ by {worst}");
    }
}

fn assert_same_list(got: &[atspeed::decode::BeamView], want: &[(Vec<u32>, f32)], what: &str) {
    let got_tokens: Vec<&Vec<u32>> = got.iter().map(|b| &b.tokens).collect();
    let want_tokens: Vec<&Vec<u32>> = want.iter().map(|w| &w.0).collect();
    assert_eq!(got_tokens, want_tokens, "{what}");
    for (b, (_, s)) in got.iter().zip(want) {
        assert!(
            (b.score - s).abs() <= F32_TOL,
            "{what}: score {} vs transformers' {s}",
            b.score
        );
    }
}

#[test]
fn target_only_and_strict_lists_equal_transformers() {
    let data = data();
    // Drafts sharing each target's token space: the LoRA model shares LLaMA's tokenizer, and
    // the two Qwen models share theirs. Each is also its own draft.
    let pairs = [
        ("llama", "lora"),
        ("lora", "llama"),
        ("qwen2", "qwen3"),
        ("qwen3", "qwen2"),
    ];
    for (name, other) in pairs {
        let (target, space) = load(name, &data);
        let draft = load_draft(&model_dir(other), None, &data, &f32_cpu(), &space).unwrap();
        let exp = expected(name);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
        for u in exp["users"].as_array().unwrap() {
            let prompt = space.prompt(&data, &ids(&u["history"])).unwrap();
            for k in [1usize, 5, 10] {
                let want = hf_list(u, k);
                let what = |how: &str| format!("{name} user {} K {k} {how}", u["user"]);
                let base = beam_search(&target, &space.trie, &prompt, k).unwrap();
                assert_same_list(&base.beams, &want, &what("target-only"));
                for (d, n, gamma) in [(&draft, k * 3, 3), (&draft, k, 1), (&target, k, 3)] {
                    let params = DecodeParams {
                        mode: Mode::Strict,
                        n,
                        k,
                        gamma,
                        draft_mass: None,
                    };
                    let t =
                        speculative(&target, d, &space.trie, &prompt, &params, &mut rng).unwrap();
                    assert_same_list(
                        &t.beams,
                        &want,
                        &what(&format!("strict N {n} gamma {gamma}")),
                    );
                }
            }
        }
    }
}

#[test]
fn lora_merge_equals_peft_merged_and_unmerged() {
    // The merged model's logits are covered above; here the adapter's own record says PEFT's
    // unmerged forward agrees with its merged one, so the merge formula is the one PEFT runs.
    let exp = expected("lora");
    let floats = |v: &Value| -> Vec<f64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect()
    };
    let recorded = exp["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u.get("unmerged_last_logits").is_some())
        .expect("the fixture records PEFT's unmerged logits for one user");
    let merged = floats(&recorded["last_logits"]);
    let unmerged = floats(&recorded["unmerged_last_logits"]);
    let worst = unmerged
        .iter()
        .zip(&merged)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-3, "PEFT merged vs unmerged: {worst}");
    let data = data();
    let (m, _) = load("lora", &data);
    let a = m.adapter.as_ref().expect("an adapter was merged");
    assert_eq!((a.r, a.alpha), (4, 16.0));
    assert_eq!(a.merged, 2 * 7, "7 modules in each of 2 layers");
    assert_eq!(a.replaced.len(), 2, "{:?}", a.replaced);
    assert_eq!(m.config().vocab_size, 1339);
}

#[test]
fn bad_models_get_clear_errors() {
    let data = data();
    let at = f32_cpu();
    let err = |r: atspeed::Result<(Llm, TokenSpace)>| r.map(|_| ()).unwrap_err().to_string();
    // A base LLM without the code tokens.
    let e = err(load_target(&root().join("lora/base"), None, &data, &at));
    assert!(
        e.contains("lora/base") && e.contains("no token \"<a_"),
        "{e}"
    );
    // An adapter whose resized rows were not saved.
    let e = err(load_target(
        &root().join("lora/adapter-no-rows"),
        None,
        &data,
        &at,
    ));
    assert!(
        e.contains("1339 tokens") && e.contains("512 rows") && e.contains("export"),
        "{e}"
    );
    // An adapter over another base model.
    let e = err(load_target(
        &root().join("lora/adapter"),
        Some(&root().join("qwen3")),
        &data,
        &at,
    ));
    assert!(e.contains("does not fit the base model"), "{e}");
    // An architecture this decoder does not implement.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("llama"), dir.path());
    edit_config(dir.path(), |c| c["model_type"] = "mistral".into());
    let e = err(load_target(dir.path(), None, &data, &at));
    assert!(
        e.contains("config.json") && e.contains("\"mistral\""),
        "{e}"
    );
    // A scaled rotary embedding.
    copy_dir(&root().join("llama"), dir.path());
    edit_config(dir.path(), |c| {
        c["rope_parameters"] = serde_json::json!({"rope_type": "llama3", "factor": 8.0})
    });
    let e = err(load_target(dir.path(), None, &data, &at));
    assert!(e.contains("rope_type \"llama3\""), "{e}");
    // A draft in another token space than the target's.
    let (_, space) = load("llama", &data);
    let e = load_draft(&root().join("qwen2"), None, &data, &at, &space)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("disagree on the token space"), "{e}");
}

#[test]
fn bf16_keeps_the_weights_in_bf16() {
    let data = data();
    let opts = LoadOptions::new(&Device::Cpu, Some(DType::BF16));
    let m = Llm::load_with(&model_dir("llama"), &opts).unwrap();
    assert_eq!(m.model.dtype(), DType::BF16);
    let space = TokenSpace::new(&data, &m).unwrap();
    let exp = expected("llama");
    let u = &exp["users"][0];
    let prompt = space.prompt(&data, &ids(&u["history"])).unwrap();
    // bf16 keeps about 3 significant digits: the best item stays the best.
    let b = beam_search(&m, &space.trie, &prompt, 5).unwrap();
    assert_eq!(b.beams[0].tokens, hf_list(u, 5)[0].0);
}

fn copy_dir(from: &Path, to: &Path) {
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}

fn edit_config(dir: &Path, f: impl FnOnce(&mut Value)) {
    let p = dir.join("config.json");
    let mut v: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    f(&mut v);
    std::fs::write(&p, v.to_string()).unwrap();
}

fn atspeed() -> Command {
    Command::cargo_bin("atspeed").unwrap()
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

#[test]
fn cli_inspect_recommend_and_bench_run_on_reference_checkpoints() {
    let data = root().join("data");
    for (name, draft) in [("llama", "lora"), ("qwen2", "qwen3")] {
        let dir = model_dir(name);
        let out = atspeed().args(["inspect", &s(&dir)]).output().unwrap();
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("prompt style   reference"), "{text}");
        // recommend: target-only and strict speculative lists equal transformers'.
        let exp = expected(name);
        let u = &exp["users"][0];
        let want: Vec<String> = u["beams"]["10"]["beams"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                b["tokens"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|t| t.as_str().unwrap())
                    .collect::<String>()
            })
            .collect();
        for extra in [vec![], vec!["--draft".to_string(), s(&model_dir(draft))]] {
            let out = atspeed()
                .args(["recommend", "--data", &s(&data), "--target", &s(&dir)])
                .args(["--user", &u["user"].to_string(), "--k", "10"])
                .args(&extra)
                .output()
                .unwrap();
            let text = String::from_utf8_lossy(&out.stdout);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let got: Vec<&str> = text
                .lines()
                .skip_while(|l| !l.starts_with("top 10"))
                .skip(1)
                .filter_map(|l| l.split_whitespace().find(|w| w.starts_with("<a_")))
                .collect();
            assert_eq!(got, want, "{name} {extra:?}:\n{text}");
        }
        let out = atspeed()
            .args(["bench", "--data", &s(&data), "--target", &s(&dir)])
            .args(["--draft", &s(&model_dir(draft))])
            .args([
                "--k", "1,5", "--users", "4", "--warmup", "1", "--tune-n", "3",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("| 5 |"), "{text}");
    }
}

/// Writes `tensors` (f32) as a safetensors file.
fn save_tensors(path: &Path, tensors: Vec<(&str, candle_core::Tensor)>) {
    let map: std::collections::HashMap<String, candle_core::Tensor> = tensors
        .into_iter()
        .map(|(n, t)| (n.to_string(), t))
        .collect();
    candle_core::safetensors::save(&map, path).unwrap();
}

fn randn(shape: &[usize], seed: u64) -> candle_core::Tensor {
    use rand::Rng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let n: usize = shape.iter().product();
    let v: Vec<f32> = (0..n).map(|_| rng.random_range(-0.5..0.5)).collect();
    candle_core::Tensor::from_vec(v, shape, &Device::Cpu).unwrap()
}

fn weight(m: &Llm, name: &str) -> Vec<f32> {
    m.model
        .named_tensors()
        .unwrap()
        .into_iter()
        .find(|(n, _)| n == name)
        .unwrap_or_else(|| panic!("no {name}"))
        .1
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// LC-Rec writes the base's config.json beside its adapter: still an adapter. (Review finding.)
#[test]
fn lcrec_adapter_folder_with_a_config_json_is_an_adapter() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("lora/adapter"), dir.path());
    std::fs::copy(
        root().join("lora/base/config.json"),
        dir.path().join("config.json"),
    )
    .unwrap();
    let data = data();
    let (m, space) = load_target(
        dir.path(),
        Some(&root().join("lora/base")),
        &data,
        &f32_cpu(),
    )
    .unwrap();
    assert!(m.adapter.is_some());
    let u = &expected("lora")["users"][0];
    let prompt = space.prompt(&data, &ids(&u["history"])).unwrap();
    let b = beam_search(&m, &space.trie, &prompt, 5).unwrap();
    assert_same_list(&b.beams, &hf_list(u, 5), "LC-Rec layout");
    // A base given for a full checkpoint is a mistake, not silently ignored.
    let e = load_target(
        &root().join("llama"),
        Some(&root().join("lora/base")),
        &data,
        &f32_cpu(),
    )
    .map(|_| ())
    .unwrap_err()
    .to_string();
    assert!(e.contains("not a LoRA adapter"), "{e}");
}

/// The Hugging Face hub cache links a snapshot's shards into a blob store outside the folder.
#[test]
fn hub_cache_symlinked_shards_load() {
    let root_dir = tempfile::tempdir().unwrap();
    let snap = root_dir.path().join("snapshots/abc");
    let blobs = root_dir.path().join("blobs");
    std::fs::create_dir_all(&snap).unwrap();
    std::fs::create_dir_all(&blobs).unwrap();
    for f in ["config.json", "tokenizer.json"] {
        std::fs::copy(root().join("llama").join(f), blobs.join(f)).unwrap();
        std::os::unix::fs::symlink(blobs.join(f), snap.join(f)).unwrap();
    }
    std::fs::copy(
        root().join("llama/model.safetensors"),
        blobs.join("0123abcd"),
    )
    .unwrap();
    let shard = "model-00001-of-00001.safetensors";
    std::os::unix::fs::symlink(blobs.join("0123abcd"), snap.join(shard)).unwrap();
    let names = atspeed::model::tensor_shapes(
        &atspeed::model::checkpoint::read_config(&root().join("llama")).unwrap(),
    );
    let map: serde_json::Map<String, Value> = names
        .iter()
        .map(|(n, _)| (n.clone(), Value::from(shard)))
        .collect();
    std::fs::write(
        snap.join("model.safetensors.index.json"),
        serde_json::json!({ "weight_map": map }).to_string(),
    )
    .unwrap();
    let data = data();
    load_target(&snap, None, &data, &f32_cpu()).unwrap();
}

/// An adapter over a tied base (Qwen3 small models tie lm_head to the embedding) that saves its
/// own lm_head unties it; alpha_pattern scales a module as PEFT does; r is the matrices' rank.
#[test]
fn adapter_over_a_tied_base_with_patterns() {
    let base = root().join("qwen3");
    let cfg = atspeed::model::checkpoint::read_config(&base).unwrap();
    assert!(cfg.tie_word_embeddings);
    let (v, h) = (cfg.vocab_size, cfg.hidden_size);
    let q_out = cfg.num_attention_heads * cfg.head_dim();
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        base.join("tokenizer.json"),
        dir.path().join("tokenizer.json"),
    )
    .unwrap();
    std::fs::write(
        dir.path().join("adapter_config.json"),
        serde_json::json!({
            "peft_type": "LORA", "r": 4, "lora_alpha": 16, "base_model_name_or_path": s(&base),
            "target_modules": ["q_proj", "v_proj"], "modules_to_save": ["embed_tokens", "lm_head"],
            "alpha_pattern": {"nothing_matches": 1, "layers.0.self_attn.q_proj": 2}
        })
        .to_string(),
    )
    .unwrap();
    let (a, b) = (randn(&[2, h], 1), randn(&[q_out, 2], 2));
    let head = randn(&[v, h], 3);
    let embed = randn(&[v, h], 4);
    let p = "base_model.model.model.layers";
    save_tensors(
        &dir.path().join("adapter_model.safetensors"),
        vec![
            (&format!("{p}.0.self_attn.q_proj.lora_A.weight"), a.clone()),
            (&format!("{p}.0.self_attn.q_proj.lora_B.weight"), b.clone()),
            (&format!("{p}.1.self_attn.q_proj.lora_A.weight"), a.clone()),
            (&format!("{p}.1.self_attn.q_proj.lora_B.weight"), b.clone()),
            ("base_model.model.lm_head.weight", head.clone()),
            ("base_model.model.model.embed_tokens.weight", embed.clone()),
        ],
    );
    let m = Llm::load_with(
        dir.path(),
        &LoadOptions::new(&Device::Cpu, Some(DType::F32)),
    )
    .unwrap();
    assert!(
        !m.config().tie_word_embeddings,
        "the adapter's lm_head unties the model"
    );
    let want: Vec<f32> = head.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(weight(&m, "lm_head.weight"), want);
    // Layer 0's q_proj matches the second pattern key: alpha 2, rank 2 (from the matrices,
    // not the config's r = 4): scale 1. Layer 1 uses lora_alpha: 16 / 2 = 8.
    let plain = Llm::load(&base, &Device::Cpu).unwrap();
    let delta = b.matmul(&a).unwrap();
    for (layer, scale) in [(0, 1.0), (1, 8.0)] {
        let name = format!("model.layers.{layer}.self_attn.q_proj.weight");
        let expect: Vec<f32> = ((delta.clone() * scale).unwrap()
            + candle_core::Tensor::from_vec(weight(&plain, &name), (q_out, h), &Device::Cpu)
                .unwrap())
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap();
        let got = weight(&m, &name);
        let worst = got
            .iter()
            .zip(&expect)
            .map(|(x, y)| (x - y).abs())
            .fold(0f32, f32::max);
        assert!(worst < 1e-5, "layer {layer}: {worst}");
    }
}

#[test]
fn adapters_and_checkpoints_that_do_not_add_up_are_refused() {
    let data = data();
    let at = f32_cpu();
    let err = |dir: &Path| {
        load_target(dir, None, &data, &at)
            .map(|_| ())
            .unwrap_err()
            .to_string()
    };
    // lora_bias and unknown LoRA tensors.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("lora/adapter"), dir.path());
    let cfg_path = dir.path().join("adapter_config.json");
    let mut c: Value = serde_json::from_str(&std::fs::read_to_string(&cfg_path).unwrap()).unwrap();
    c["base_model_name_or_path"] = s(&root().join("lora/base")).into();
    c["lora_bias"] = true.into();
    std::fs::write(&cfg_path, c.to_string()).unwrap();
    assert!(err(dir.path()).contains("lora_bias"), "{}", err(dir.path()));
    // A checkpoint holding more layers than its config says.
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("llama"), dir.path());
    edit_config(dir.path(), |c| c["num_hidden_layers"] = 1.into());
    let e = err(dir.path());
    assert!(
        e.contains("model.layers.1") && e.contains("not part of"),
        "{e}"
    );
    // Qwen3 with attention_bias has an o_proj bias too (transformers builds one).
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("qwen3"), dir.path());
    edit_config(dir.path(), |c| c["attention_bias"] = true.into());
    let e = err(dir.path());
    assert!(
        e.contains("o_proj.bias") || e.contains("q_proj.bias"),
        "{e}"
    );
    // A config asking for the reference prompt on a compact vocabulary.
    let mut at_ref = f32_cpu();
    at_ref.prompt = Some(PromptStyle::Reference);
    let compact = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/target");
    let e = atspeed::load::load_model(&compact, None, &at_ref)
        .map(|_| ())
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot encode the reference prompt"), "{e}");
}

/// A tokenizer.json whose code tokens are normalized under a SentencePiece normalizer (what a
/// careless slow-to-fast conversion writes) splits `<b_69>` into characters. transformers
/// encodes them so too (this tokenizer class loads the file as written), and a model fine-tuned
/// with it saw them so: it loads, the prompt holds the pieces, and the space says so. The
/// generated codes are still the code tokens' own ids.
#[test]
fn a_tokenizer_that_splits_code_tokens_loads_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&root().join("llama"), dir.path());
    let p = dir.path().join("tokenizer.json");
    let mut t: Value = serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap();
    t["normalizer"] = serde_json::json!({"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u{2581}"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u{2581}"}]});
    t["pre_tokenizer"] = Value::Null;
    for a in t["added_tokens"].as_array_mut().unwrap() {
        if a["content"].as_str().unwrap().starts_with("<b_") {
            a["normalized"] = true.into();
        }
    }
    std::fs::write(&p, t.to_string()).unwrap();
    let data = data();
    let (m, space) = load_target(dir.path(), None, &data, &f32_cpu()).unwrap();
    let note = space.notes.iter().find(|n| n.contains("encode in pieces"));
    assert!(note.is_some(), "{:?}", space.notes);
    // The prompt is what the tokenizers library gives for the text, pieces and all.
    let hist = [0u32, 1, 2];
    let text = space.prompt_pieces(&data, &hist).unwrap()[0].0.clone();
    let raw: tokenizers::Tokenizer = std::fs::read_to_string(&p).unwrap().parse().unwrap();
    let want = raw.encode(text.as_str(), true).unwrap().get_ids().to_vec();
    assert_eq!(space.prompt(&data, &hist).unwrap(), want);
    let b = m
        .tokenizer
        .token_to_id(&data.vocab.render(&data.items[0][1..2]))
        .unwrap();
    assert!(
        !want.contains(&b),
        "the history's <b_*> tokens are in pieces"
    );
    // Decoding still generates the code tokens' own ids.
    let out = atspeed::decode::beam_search(&m, &space.trie, &want, 3).unwrap();
    assert!(out
        .beams
        .iter()
        .all(|x| space.identifier(&x.tokens).is_some()));
}
