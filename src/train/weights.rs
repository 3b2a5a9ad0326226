//! Trainable weights: a `VarMap` of f32 variables in Hugging Face naming, the differentiable
//! model built on them, and detached snapshots for inference (beam search) and saving.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{VarBuilder, VarMap};

use crate::model::{Llama, Llm, ModelConfig};
use crate::{Error, Result};

/// Std of the random initialisation (Hugging Face's `initializer_range`).
pub const INIT_STD: f32 = 0.02;

pub(crate) struct Weights {
    pub vars: VarMap,
    pub cfg: ModelConfig,
    pub vocab: Vec<String>,
    pub device: Device,
    /// Built on the variables, so autograd reaches them through its forward pass.
    model: Llama,
}

impl Weights {
    /// Random weights from the same initialiser as [`Llm::random`] (normal(0, 0.02), unit norms),
    /// so a trained model and a random baseline start from the same distribution.
    pub fn random(
        cfg: &ModelConfig,
        vocab: Vec<String>,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        let llm = Llm::random(cfg, vocab, INIT_STD, seed, device)?;
        Self::from_llm(&llm, device)
    }

    /// Trainable f32 copies of `llm`'s weights on `device` (e.g. to continue from a checkpoint).
    pub fn from_llm(llm: &Llm, device: &Device) -> Result<Self> {
        let vars = VarMap::new();
        {
            let mut data = vars.data().lock().expect("varmap lock");
            for (name, t) in llm.model.named_tensors()? {
                let t = t.to_dtype(DType::F32)?.to_device(device)?;
                data.insert(name, Var::from_tensor(&t)?);
            }
        }
        let cfg = llm.config().clone();
        let vb = VarBuilder::from_varmap(&vars, DType::F32, device);
        let model = Llama::new(&cfg, vb)?;
        Ok(Weights {
            vars,
            cfg,
            vocab: llm.vocab.clone(),
            device: device.clone(),
            model,
        })
    }

    /// The differentiable model (its tensors are the variables).
    pub fn model(&self) -> &Llama {
        &self.model
    }

    /// Variables sorted by name: a stable order for the optimizer and its saved moments.
    pub fn sorted_vars(&self) -> Vec<(String, Var)> {
        let data = self.vars.data().lock().expect("varmap lock");
        let mut out: Vec<(String, Var)> =
            data.iter().map(|(n, v)| (n.clone(), v.clone())).collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }

    pub fn num_params(&self) -> usize {
        self.sorted_vars().iter().map(|(_, v)| v.elem_count()).sum()
    }

    /// An inference model over the current values, outside the autograd graph. It shares
    /// storage with the variables, so use it before the next optimizer step (or save it).
    pub fn snapshot(&self, name: &str) -> Result<Llm> {
        let tensors: HashMap<String, Tensor> = self
            .sorted_vars()
            .into_iter()
            .map(|(n, v)| (n, v.as_tensor().detach()))
            .collect();
        let vb = VarBuilder::from_tensors(tensors, DType::F32, &self.device);
        Ok(Llm {
            model: Llama::new(&self.cfg, vb)?,
            vocab: self.vocab.clone(),
            tokenizer: crate::model::ModelTokenizer::word_level(&self.vocab),
            tokenizer_dir: None,
            style: crate::model::PromptStyle::Compact,
            adapter: None,
            name: name.to_string(),
            dir: None,
        })
    }

    /// Overwrites the variables with the weights of checkpoint folder `dir` (resume).
    pub fn load_from(&self, dir: &Path) -> Result<()> {
        let loaded = crate::model::weights::read_weights(dir, DType::F32, &self.device)?;
        for (name, var) in self.sorted_vars() {
            let t = loaded
                .get(&name)
                .ok_or_else(|| Error::model(dir, format!("checkpoint lacks tensor {name}")))?;
            if t.dims() != var.dims() {
                return Err(Error::model(
                    dir,
                    format!(
                        "tensor {name} is {:?}, the run expects {:?}",
                        t.dims(),
                        var.dims()
                    ),
                ));
            }
            var.set(t)?;
        }
        Ok(())
    }
}
