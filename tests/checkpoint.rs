//! Checkpoint folders: what `Llm::save` writes loads back to the same model (bit for bit in f32,
//! within rounding in f16/bf16), sharded weights load like a single file, `tokenizer.json` is a
//! real Hugging Face tokenizer over the compact vocabulary, and `config.json` round-trips.

mod fixtures;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use atspeed::ids::{Vocab, BOS, SEP, SPECIALS};
use atspeed::model::{checkpoint, Llm, ModelConfig};
use atspeed::synth::{self, Catalogue};
use candle_core::{DType, Device, Tensor};
use fixtures::all_log_probs;
use rand::SeedableRng;

fn catalogue() -> Catalogue {
    synth::catalogue([5, 6, 6, 6], 80, 21)
}

/// A small random model (2 layers, hidden 32, 4 heads over 2 key/value heads).
fn model(cat: &Catalogue, tied: bool, seed: u64) -> Llm {
    let mut cfg = ModelConfig::compact(cat.vocab.len(), 2, 32, 4, 2);
    cfg.tie_word_embeddings = tied;
    Llm::random(&cfg, cat.vocab.tokens().to_vec(), 0.15, seed, &Device::Cpu).unwrap()
}

/// A few prompts of different lengths over the catalogue.
fn prompts(cat: &Catalogue) -> Vec<Vec<u32>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    [0, 1, 4, 12]
        .iter()
        .map(|&n| {
            let mut p = synth::prompt(cat, n, &mut rng);
            // Part of a generated identifier after the separator, as during decoding.
            p.extend_from_slice(&cat.items[n][..2]);
            p
        })
        .collect()
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn tensors(m: &Llm) -> HashMap<String, Tensor> {
    m.model.named_tensors().unwrap().into_iter().collect()
}

fn to_f32(t: &Tensor) -> Vec<f32> {
    t.to_dtype(DType::F32)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// Dtype of every tensor stored in a safetensors file, by name.
fn stored_dtypes(file: &Path) -> HashMap<String, safetensors::Dtype> {
    let bytes = std::fs::read(file).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensors()
        .into_iter()
        .map(|(name, view)| (name, view.dtype()))
        .collect()
}

fn read_json(path: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn f32_save_then_load_gives_identical_logits() {
    let cat = catalogue();
    for tied in [false, true] {
        let m = model(&cat, tied, 5);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ckpt");
        m.save(&path, DType::F32).unwrap();
        for f in [
            checkpoint::CONFIG,
            checkpoint::WEIGHTS,
            checkpoint::TOKENIZER,
        ] {
            assert!(path.join(f).is_file(), "{f} not written");
        }
        // Only the three files: the temporary files were renamed or removed.
        assert_eq!(std::fs::read_dir(&path).unwrap().count(), 3);
        let stored = stored_dtypes(&path.join(checkpoint::WEIGHTS));
        assert!(stored.values().all(|d| *d == safetensors::Dtype::F32));
        assert_eq!(stored.contains_key("lm_head.weight"), !tied);

        let back = Llm::load(&path, &Device::Cpu).unwrap();
        assert_eq!(back.name, "ckpt");
        assert_eq!(back.dir.as_deref(), Some(path.as_path()));
        assert_eq!(back.vocab, m.vocab);
        assert_eq!(back.config(), m.config());
        assert_eq!(back.num_params(), m.num_params());
        let (a, b) = (tensors(&m), tensors(&back));
        assert_eq!(a.len(), b.len());
        for (name, t) in &a {
            assert_eq!(
                bits(&to_f32(t)),
                bits(&to_f32(&b[name])),
                "tensor {name} changed"
            );
        }
        for p in prompts(&cat) {
            let (x, y) = (all_log_probs(&m, &p), all_log_probs(&back, &p));
            assert_eq!(bits(&x), bits(&y), "log-probs differ (tied {tied})");
        }
    }
}

#[test]
fn half_precision_checkpoints_load_into_f32() {
    let cat = catalogue();
    let m = model(&cat, false, 6);
    // (dtype, config name, safetensors dtype, bound on |log-prob difference|). Observed with
    // these models: 2.4e-2 for bf16 and 5.4e-3 for f16 (8 significand bits vs 11).
    let cases = [
        (DType::BF16, "bfloat16", safetensors::Dtype::BF16, 0.1f32),
        (DType::F16, "float16", safetensors::Dtype::F16, 0.02),
    ];
    for (dtype, name, st_dtype, bound) in cases {
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path(), dtype).unwrap();
        assert_eq!(
            read_json(&dir.path().join(checkpoint::CONFIG))["torch_dtype"],
            name
        );
        let file = dir.path().join(checkpoint::WEIGHTS);
        assert!(stored_dtypes(&file).values().all(|d| *d == st_dtype));

        let back = Llm::load(dir.path(), &Device::Cpu).unwrap();
        assert_eq!(back.config().torch_dtype, name);
        assert_eq!(back.model.dtype(), DType::F32);
        // The weights are the f32 weights rounded once to the stored type.
        let (a, b) = (tensors(&m), tensors(&back));
        for (tname, t) in &a {
            let rounded = t.to_dtype(dtype).unwrap();
            assert_eq!(
                bits(&to_f32(&rounded)),
                bits(&to_f32(&b[tname])),
                "{name}: tensor {tname}"
            );
        }
        let mut worst = 0.0f32;
        for p in prompts(&cat) {
            let (x, y) = (all_log_probs(&m, &p), all_log_probs(&back, &p));
            assert!(y.iter().all(|v| v.is_finite()));
            worst = worst.max(max_abs_diff(&x, &y));
        }
        eprintln!("{name}: max |log-prob difference| vs f32 = {worst:.2e}");
        assert!(worst > 0.0, "{name}: rounding had no effect?");
        assert!(worst < bound, "{name}: log-probs differ by {worst}");
    }
}

#[test]
fn half_precision_file_is_half_the_size() {
    let cat = catalogue();
    let m = model(&cat, false, 7);
    let size = |dtype| {
        let dir = tempfile::tempdir().unwrap();
        m.save(dir.path(), dtype).unwrap();
        std::fs::metadata(dir.path().join(checkpoint::WEIGHTS))
            .unwrap()
            .len() as f64
    };
    let (f32_size, bf16_size, f16_size) = (size(DType::F32), size(DType::BF16), size(DType::F16));
    for half in [bf16_size, f16_size] {
        let ratio = half / f32_size;
        assert!((0.45..0.6).contains(&ratio), "size ratio {ratio}");
    }
}

/// Rewrites the single-file checkpoint at `dir` as two shards and an index; returns the shard
/// paths and the names in each.
fn shard(dir: &Path) -> Vec<(PathBuf, Vec<String>)> {
    let single = dir.join(checkpoint::WEIGHTS);
    let all = candle_core::safetensors::load(&single, &Device::Cpu).unwrap();
    std::fs::remove_file(&single).unwrap();
    let mut names: Vec<String> = all.keys().cloned().collect();
    names.sort();
    // Embeddings and layer 0 in the first shard, everything else in the second.
    let (first, second): (Vec<String>, Vec<String>) = names
        .into_iter()
        .partition(|n| n.starts_with("model.embed_tokens") || n.starts_with("model.layers.0."));
    let mut weight_map = serde_json::Map::new();
    let mut total = 0;
    let mut out = Vec::new();
    for (i, part) in [first, second].into_iter().enumerate() {
        let file = format!("model-{:05}-of-00002.safetensors", i + 1);
        let map: HashMap<String, Tensor> =
            part.iter().map(|n| (n.clone(), all[n].clone())).collect();
        for (n, t) in &map {
            total += t.elem_count() * t.dtype().size_in_bytes();
            weight_map.insert(n.clone(), serde_json::json!(file));
        }
        candle_core::safetensors::save(&map, dir.join(&file)).unwrap();
        out.push((dir.join(&file), part));
    }
    let index = serde_json::json!({"metadata": {"total_size": total}, "weight_map": weight_map});
    std::fs::write(
        dir.join(checkpoint::WEIGHTS_INDEX),
        serde_json::to_string_pretty(&index).unwrap(),
    )
    .unwrap();
    out
}

#[test]
fn sharded_checkpoint_loads_and_matches() {
    let cat = catalogue();
    let m = model(&cat, false, 8);
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path(), DType::F32).unwrap();
    let shards = shard(dir.path());
    assert!(shards.iter().all(|(_, names)| !names.is_empty()));
    assert!(!dir.path().join(checkpoint::WEIGHTS).exists());

    let back = Llm::load(dir.path(), &Device::Cpu).unwrap();
    assert_eq!(back.num_params(), m.num_params());
    for p in prompts(&cat) {
        assert_eq!(
            bits(&all_log_probs(&m, &p)),
            bits(&all_log_probs(&back, &p))
        );
    }

    // Half precision shards load too.
    let dir16 = tempfile::tempdir().unwrap();
    m.save(dir16.path(), DType::BF16).unwrap();
    let single = Llm::load(dir16.path(), &Device::Cpu).unwrap();
    shard(dir16.path());
    let sharded = Llm::load(dir16.path(), &Device::Cpu).unwrap();
    let p = &prompts(&cat)[2];
    assert_eq!(
        bits(&all_log_probs(&single, p)),
        bits(&all_log_probs(&sharded, p))
    );
}

#[test]
fn broken_shards_name_the_file() {
    let cat = catalogue();
    let m = model(&cat, false, 9);
    let err = |dir: &Path| Llm::load(dir, &Device::Cpu).unwrap_err().to_string();

    // A shard listed in the index is missing.
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path(), DType::F32).unwrap();
    let shards = shard(dir.path());
    std::fs::remove_file(&shards[1].0).unwrap();
    let e = err(dir.path());
    assert!(e.contains(&shards[1].0.display().to_string()), "{e}");

    // A corrupt shard.
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path(), DType::F32).unwrap();
    let shards = shard(dir.path());
    std::fs::write(&shards[0].0, b"garbage").unwrap();
    let e = err(dir.path());
    assert!(
        e.contains(&shards[0].0.display().to_string()) && e.contains("corrupt safetensors"),
        "{e}"
    );

    // The index omits the second shard: a tensor is missing.
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path(), DType::F32).unwrap();
    let shards = shard(dir.path());
    let index_path = dir.path().join(checkpoint::WEIGHTS_INDEX);
    let mut index = read_json(&index_path);
    for n in &shards[1].1 {
        index["weight_map"].as_object_mut().unwrap().remove(n);
    }
    std::fs::write(&index_path, index.to_string()).unwrap();
    let e = err(dir.path());
    assert!(e.contains("weights do not fit config.json"), "{e}");
    assert!(e.contains(&dir.path().display().to_string()), "{e}");

    // A malformed index.
    std::fs::write(&index_path, "{\"weight_map\": [").unwrap();
    let e = err(dir.path());
    assert!(
        e.contains(&index_path.display().to_string()) && e.contains("malformed index"),
        "{e}"
    );
    std::fs::write(&index_path, "{\"metadata\": {}}").unwrap();
    let e = err(dir.path());
    assert!(
        e.contains(&index_path.display().to_string()) && e.contains("weight_map"),
        "{e}"
    );
}

#[test]
fn tokenizer_json_loads_with_tokenizers_crate() {
    let cat = catalogue();
    let m = model(&cat, false, 10);
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path(), DType::F32).unwrap();
    let tok = tokenizers::Tokenizer::from_file(dir.path().join(checkpoint::TOKENIZER)).unwrap();
    let vocab = cat.vocab.tokens();
    assert_eq!(tok.get_vocab_size(true), vocab.len());
    for (id, t) in vocab.iter().enumerate() {
        assert_eq!(tok.token_to_id(t), Some(id as u32), "{t}");
        assert_eq!(tok.id_to_token(id as u32).as_deref(), Some(t.as_str()));
    }
    // The specials are registered as special added tokens, in order.
    let added = tok.get_added_tokens_decoder();
    for (id, s) in SPECIALS.iter().enumerate() {
        let a = &added[&(id as u32)];
        assert_eq!(a.content, *s);
        assert!(a.special);
    }

    // Compact prompts: `<bos><a_..><b_..><c_..><d_..>...<sep>` encodes to the vocabulary ids.
    let mut checked = 0;
    for p in prompts(&cat) {
        let text = cat.vocab.render(&p);
        assert!(
            text.starts_with("<bos>") && text.contains("<sep>"),
            "{text}"
        );
        for special in [false, true] {
            let enc = tok.encode(text.as_str(), special).unwrap();
            assert_eq!(enc.get_ids(), p.as_slice(), "{text}");
            let toks: Vec<String> = p.iter().map(|&i| vocab[i as usize].clone()).collect();
            assert_eq!(enc.get_tokens(), toks.as_slice());
        }
        checked += 1;
    }
    assert_eq!(checked, 4);
    // Every item's identifier, framed as a one-item prompt.
    for ident in &cat.items {
        let mut ids = vec![BOS];
        ids.extend_from_slice(ident);
        ids.push(SEP);
        let text = cat.vocab.render(&ids);
        assert_eq!(tok.encode(text.as_str(), false).unwrap().get_ids(), ids);
    }
    // A token outside the vocabulary falls back to the unknown token, <pad>.
    let enc = tok.encode("<bos><z_999><sep>", false).unwrap();
    assert_eq!(enc.get_ids(), [BOS, 0, SEP]);

    // The crate's own reader gives the same order, and it is a valid compact vocabulary.
    let read = checkpoint::read_tokenizer_vocab(dir.path()).unwrap();
    assert_eq!(read, vocab);
    assert_eq!(Vocab::from_tokens(read).unwrap(), cat.vocab);
}

#[test]
fn config_json_round_trips() {
    let cat = catalogue();
    let m = model(&cat, false, 11);
    let dir = tempfile::tempdir().unwrap();
    m.save(dir.path(), DType::F32).unwrap();
    let cfg = checkpoint::read_config(dir.path()).unwrap();
    assert_eq!(&cfg, m.config());
    // What Python's transformers reads.
    let v = read_json(&dir.path().join(checkpoint::CONFIG));
    assert_eq!(v["architectures"], serde_json::json!(["LlamaForCausalLM"]));
    assert_eq!(v["model_type"], "llama");
    assert_eq!(v["vocab_size"], cat.vocab.len());
    assert_eq!(v["hidden_size"], 32);
    assert_eq!(v["num_hidden_layers"], 2);
    assert_eq!(v["num_attention_heads"], 4);
    assert_eq!(v["num_key_value_heads"], 2);
    assert_eq!(v["tie_word_embeddings"], false);
    assert_eq!(v["torch_dtype"], "float32");
    assert_eq!(v["bos_token_id"], BOS);
    assert_eq!(v["sep_token_id"], SEP);
    assert_eq!(v["prompt_style"], "compact");

    // Saving again from the loaded model writes the same config, byte for byte.
    let back = Llm::load(dir.path(), &Device::Cpu).unwrap();
    let again = tempfile::tempdir().unwrap();
    back.save(again.path(), DType::F32).unwrap();
    assert_eq!(
        std::fs::read(dir.path().join(checkpoint::CONFIG)).unwrap(),
        std::fs::read(again.path().join(checkpoint::CONFIG)).unwrap()
    );
    // And the same weights and tokenizer.
    for f in [checkpoint::WEIGHTS, checkpoint::TOKENIZER] {
        let (a, b) = (
            std::fs::read(dir.path().join(f)).unwrap(),
            std::fs::read(again.path().join(f)).unwrap(),
        );
        if f == checkpoint::WEIGHTS {
            // Tensor order in the file may differ (hash map); compare contents.
            let (a, b) = (
                safetensors::SafeTensors::deserialize(&a).unwrap(),
                safetensors::SafeTensors::deserialize(&b).unwrap(),
            );
            let mut names = a.names();
            names.sort();
            let mut names_b = b.names();
            names_b.sort();
            assert_eq!(names, names_b);
            for n in names {
                let (x, y) = (a.tensor(n).unwrap(), b.tensor(n).unwrap());
                assert_eq!(x.shape(), y.shape());
                assert_eq!(x.data(), y.data(), "{n}");
            }
        } else {
            assert_eq!(a, b, "{f}");
        }
    }

    // A plain Hugging Face config (no project fields) gets the documented defaults.
    let minimal = serde_json::json!({
        "vocab_size": 10, "hidden_size": 8, "intermediate_size": 16,
        "num_hidden_layers": 1, "num_attention_heads": 2
    });
    let c: ModelConfig = serde_json::from_value(minimal).unwrap();
    assert_eq!(c.kv_heads(), 2);
    // No declared style: it is detected from the tokenizer at load.
    assert_eq!(c.prompt_style, None);
    assert_eq!(c.torch_dtype, "float32");
    assert_eq!(c.architectures, ["LlamaForCausalLM"]);
    assert_eq!(c.max_position_embeddings, 512);
    assert!(!c.tie_word_embeddings);
    // And any config survives serialise -> parse unchanged.
    let text = serde_json::to_string(&c).unwrap();
    assert_eq!(serde_json::from_str::<ModelConfig>(&text).unwrap(), c);
}
