//! LLM recommenders made by Python transformers (tests/fixtures/reference, built by
//! scripts/make_reference_fixtures.py; no Python here): a LLaMA with a SentencePiece-style BPE
//! tokenizer, a Qwen2 and a Qwen3 with byte-level BPE, and a PEFT LoRA adapter that resized the
//! vocabulary. Their config.json has no `prompt_style`: the style must be detected.
//!
//! Checked against transformers' own numbers: prompt ids, last-position logits, and the
//! constrained beam-search lists; strict speculative decoding must give the same lists.

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
            let logp = last_logits(&m, &prompt);
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

/// Raw logits at the prompt's last position (log-softmax undone is not needed: compare logits).
fn last_logits(m: &Llm, prompt: &[u32]) -> Vec<f32> {
    use atspeed::model::KvCache;
    let t = prompt.len();
    let mask = atspeed::model::causal_mask(t);
    let pos: Vec<u32> = (0..t as u32).collect();
    let dev = m.device();
    let tok = candle_core::Tensor::from_slice(prompt, (1, t), dev).unwrap();
    let pos_t = candle_core::Tensor::from_slice(&pos, (1, t), dev).unwrap();
    let mask_t = candle_core::Tensor::from_slice(&mask, (1, t, t), dev).unwrap();
    let rotary = m.model.rotary(&pos_t).unwrap();
    let mut cache = KvCache::new(m.config().num_hidden_layers);
    let hidden = m
        .model
        .hidden(&tok, &rotary, &mask_t, Some(&mut cache), false)
        .unwrap();
    let last = hidden.squeeze(0).unwrap().narrow(0, t - 1, 1).unwrap();
    m.model
        .logits(&last)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
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
