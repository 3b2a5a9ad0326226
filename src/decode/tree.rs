//! The decoding tree and each model's cache of it.
//!
//! Every token of a user's decode (prompt tokens, drafted tokens, verified beams) is a node of one
//! logical tree. A model caches some of the nodes (their keys and values); a pass feeds nodes it
//! has not seen yet, and the additive mask lets each fed token attend to its ancestors and itself
//! and to nothing else. Position ids follow depth, so tokens on different branches at the same
//! depth share a position. Target-only beam search, drafting and tree verification all go through
//! [`ModelState::feed`]; only the choice of which nodes to feed differs.

use candle_core::Tensor;

use crate::model::{KvCache, Llm};
use crate::Result;

pub type NodeId = u32;

#[derive(Clone, Debug)]
pub struct Node {
    pub token: u32,
    pub parent: Option<NodeId>,
    /// Position id: index in the prompt for prompt tokens, prompt_len - 1 + depth after it.
    pub position: u32,
    /// Generated depth: 0 for prompt tokens, 1..=L for identifier tokens.
    pub depth: usize,
    /// Constraint automaton state after this token (only meaningful for depth >= 0 from the root).
    pub state: u32,
}

/// All tokens of one user's decode.
#[derive(Clone, Debug, Default)]
pub struct Tree {
    nodes: Vec<Node>,
}

impl Tree {
    /// A tree holding the prompt as a chain; returns it with the id of the last prompt token.
    pub fn with_prompt(prompt: &[u32]) -> (Tree, NodeId) {
        let nodes = prompt
            .iter()
            .enumerate()
            .map(|(i, &token)| Node {
                token,
                parent: i.checked_sub(1).map(|p| p as NodeId),
                position: i as u32,
                depth: 0,
                state: crate::ids::PrefixAutomaton::ROOT,
            })
            .collect();
        (Tree { nodes }, prompt.len() as NodeId - 1)
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.nodes[id as usize]
    }

    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Adds a child of `parent`; position and depth follow from the parent.
    pub fn push(&mut self, parent: NodeId, token: u32, state: u32) -> NodeId {
        let p = &self.nodes[parent as usize];
        let node = Node {
            token,
            parent: Some(parent),
            position: p.position + 1,
            depth: p.depth + 1,
            state,
        };
        self.nodes.push(node);
        self.nodes.len() as NodeId - 1
    }

    /// Identifier tokens from the root of generation down to `id` (empty for prompt nodes).
    pub fn path(&self, id: NodeId) -> Vec<u32> {
        let mut out = Vec::with_capacity(self.node(id).depth);
        let mut cur = Some(id);
        while let Some(c) = cur {
            let n = self.node(c);
            if n.depth == 0 {
                break;
            }
            out.push(n.token);
            cur = n.parent;
        }
        out.reverse();
        out
    }
}

/// One model's cache of the tree: which nodes it holds, in cache order.
#[derive(Debug)]
pub struct ModelState {
    pub cache: KvCache,
    /// Node held by each cache entry.
    entries: Vec<NodeId>,
    /// Cache entry of each node, indexed by node id (grown on demand).
    entry_of: Vec<Option<u32>>,
}

/// What one pass fed and used, read back for traces.
#[derive(Clone, Debug, Default)]
pub struct PassLayout {
    /// Cache entries before the pass.
    pub context_len: usize,
    /// Fed nodes in order.
    pub fed: Vec<NodeId>,
    pub positions: Vec<u32>,
    /// For each fed token, the fed tokens (indices into `fed`) the mask lets it see.
    pub visible_fed: Vec<Vec<u32>>,
}

impl ModelState {
    pub fn new(llm: &Llm) -> Self {
        ModelState {
            cache: KvCache::new(llm.config().num_hidden_layers),
            entries: Vec::new(),
            entry_of: Vec::new(),
        }
    }

    pub fn is_cached(&self, id: NodeId) -> bool {
        matches!(self.entry_of.get(id as usize), Some(Some(_)))
    }

    pub fn cached_len(&self) -> usize {
        self.entries.len()
    }

    /// The nodes among `targets` and their ancestors that are not cached yet, parents first.
    pub fn missing(&self, tree: &Tree, targets: &[NodeId]) -> Vec<NodeId> {
        let mut seen = vec![false; tree.len()];
        let mut out = Vec::new();
        for &t in targets {
            let mut chain = Vec::new();
            let mut cur = Some(t);
            while let Some(c) = cur {
                if self.is_cached(c) || seen[c as usize] {
                    break;
                }
                seen[c as usize] = true;
                chain.push(c);
                cur = tree.node(c).parent;
            }
            out.extend(chain.into_iter().rev());
        }
        out
    }

    /// Runs one pass over `fed` (parents before children; each parent cached or fed earlier)
    /// and returns log-probabilities at the `want` nodes (each must be in `fed`), as a [want,
    /// vocab] tensor, together with the layout the pass used.
    pub fn feed(
        &mut self,
        llm: &Llm,
        tree: &Tree,
        fed: &[NodeId],
        want: &[NodeId],
    ) -> Result<(Tensor, PassLayout)> {
        let ctx = self.entries.len();
        let t = fed.len();
        let width = ctx + t;
        // Position of each node in `fed` (u32::MAX: not fed in this pass).
        let mut fed_pos = vec![u32::MAX; tree.len()];
        for (i, &n) in fed.iter().enumerate() {
            fed_pos[n as usize] = i as u32;
        }
        let mut mask = vec![f32::NEG_INFINITY; t * width];
        let mut visible_fed: Vec<Vec<u32>> = Vec::with_capacity(t);
        for (i, &n) in fed.iter().enumerate() {
            let parent = tree.node(n).parent;
            match parent
                .map(|p| fed_pos[p as usize])
                .filter(|&j| j != u32::MAX)
            {
                // Parent fed earlier in this pass: its row already holds every ancestor.
                Some(j) => {
                    let (done, rest) = mask.split_at_mut(i * width);
                    let j = j as usize;
                    rest[..width].copy_from_slice(&done[j * width..(j + 1) * width]);
                    let mut vis = visible_fed[j].clone();
                    vis.push(i as u32);
                    visible_fed.push(vis);
                }
                // Parent cached (or none): the ancestors are all cached entries.
                None => {
                    let row = &mut mask[i * width..(i + 1) * width];
                    let mut cur = parent;
                    while let Some(c) = cur {
                        let e = self.entry_of.get(c as usize).copied().flatten();
                        debug_assert!(e.is_some(), "feed: parent {c} neither cached nor fed");
                        if let Some(e) = e {
                            row[e as usize] = 0.0;
                        }
                        cur = tree.node(c).parent;
                    }
                    visible_fed.push(vec![i as u32]);
                }
            }
            mask[i * width + ctx + i] = 0.0;
        }
        let tokens: Vec<u32> = fed.iter().map(|&n| tree.node(n).token).collect();
        let positions: Vec<u32> = fed.iter().map(|&n| tree.node(n).position).collect();
        let rows: Vec<u32> = want
            .iter()
            .map(|&w| {
                let r = fed_pos[w as usize];
                assert!(
                    r != u32::MAX,
                    "feed: wanted node {w} is not fed in this pass"
                );
                r
            })
            .collect();
        let logp = llm.log_probs(&tokens, &positions, &mask, &mut self.cache, &rows)?;
        for (i, &n) in fed.iter().enumerate() {
            self.set_entry(n, (ctx + i) as u32);
        }
        self.entries.extend_from_slice(fed);
        Ok((
            logp,
            PassLayout {
                context_len: ctx,
                fed: fed.to_vec(),
                positions,
                visible_fed,
            },
        ))
    }

    fn set_entry(&mut self, n: NodeId, e: u32) {
        if self.entry_of.len() <= n as usize {
            self.entry_of.resize(n as usize + 1, None);
        }
        self.entry_of[n as usize] = Some(e);
    }

    /// Compacts the cache to the strict ancestors of `beams`: the beams' own tokens are fed
    /// again next time (that pass needs their logits anyway), everything else is dead.
    pub fn retain_ancestors_of(&mut self, tree: &Tree, beams: &[NodeId]) -> Result<()> {
        let mut keep = vec![false; tree.len()];
        for &b in beams {
            let mut cur = tree.node(b).parent;
            while let Some(c) = cur {
                if keep[c as usize] {
                    break;
                }
                keep[c as usize] = true;
                cur = tree.node(c).parent;
            }
        }
        let mut kept_entries = Vec::new();
        let mut new_entries = Vec::new();
        for (e, &n) in self.entries.iter().enumerate() {
            if keep[n as usize] {
                kept_entries.push(e as u32);
                new_entries.push(n);
            }
        }
        self.cache.keep(&kept_entries)?;
        for slot in self.entry_of.iter_mut() {
            *slot = None;
        }
        for (e, &n) in new_entries.iter().enumerate() {
            self.set_entry(n, e as u32);
        }
        self.entries = new_entries;
        Ok(())
    }
}

/// Host copy of a [rows, vocab] log-probability tensor.
pub struct Rows {
    data: Vec<f32>,
    vocab: usize,
}

impl Rows {
    /// The host copy; a NaN (broken weights, an overflow in a reduced dtype) is an error, so
    /// it can never be ranked or printed as a score.
    pub fn from_tensor(t: &Tensor) -> Result<Rows> {
        let (_, vocab) = t.dims2()?;
        let data = t.flatten_all()?.to_vec1::<f32>()?;
        if data.iter().any(|x| x.is_nan()) {
            return Err(crate::Error::Failed(
                "the model produced NaN log-probabilities (non-finite activations: try --dtype f32 or bf16)".into(),
            ));
        }
        Ok(Rows { data, vocab })
    }
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.vocab..(i + 1) * self.vocab]
    }
}
