#!/usr/bin/env python3
import sys, re, collections
# Buckets `perf script` samples of a forward pass by op kind. Record one thread with DWARF call
# graphs so that every sample carries its caller (gemm workers on other threads would not):
#   RAYON_NUM_THREADS=1 perf record -D 13000 -F 200 --call-graph dwarf,16384 -o p.data \
#     target/release/deps/passes-HASH CHECKPOINT --spin 12
#   perf script -i p.data > p.txt && python3 scripts/perf_op_kinds.py p.txt
txt = open(sys.argv[1]).read().split('\n\n')
c = collections.Counter(); n = 0
for s in txt:
    lines = s.strip().split('\n')
    if len(lines) < 2: continue
    fr = ' | '.join(lines[1:])
    if 'log_probs' not in fr and 'Llama::hidden' not in fr: 
        c['outside pass (setup)'] += 1; n += 1; continue
    n += 1
    upcast = ('to_f32_vec' in fr or 'from_f32_slice' in fr or 'to_dtype' in fr)
    if 'kernels::Packed' in fr:
        where = 'lm_head' if 'Llama::logits' in fr else ('attn q/k/v/o proj' if 'Attention::forward' in fr else 'mlp proj')
        k = f'linear {where}: packed kernel' + ('' if ('f32_kernel' in fr or 'bf16_dp_kernel' in fr or 'widen_kernel' in fr) else ' (outside tiles)')
    elif 'Linear as candle_core::Module>::forward' in fr:
        where = 'lm_head' if 'Llama::logits' in fr else ('attn q/k/v/o proj' if 'Attention::forward' in fr else 'mlp proj')
        if upcast: k = f'linear {where}: bf16<->f32 widen/narrow'
        elif 'pack_lhs' in fr or 'pack_rhs' in fr: k = f'linear {where}: gemm packing'
        else: k = f'linear {where}: gemm kernel+other'
    elif 'Attention::forward' in fr:
        if upcast: k = 'attention: dtype casts'
        elif 'Tensor::matmul' in fr: k = 'attention: q.k^T and p.v matmuls'
        elif 'softmax' in fr: k = 'attention: softmax'
        elif 'rope' in fr or 'apply_rope' in fr: k = 'attention: rope'
        elif 'KvCache' in fr or 'extend' in fr: k = 'attention: cache write'
        else: k = 'attention: copies/other'
    elif upcast: k = 'other: dtype casts'
    elif 'rms_norm' in fr or 'RmsNorm' in fr: k = 'other: rms_norm'
    elif 'silu' in fr or 'Silu' in fr: k = 'other: silu'
    elif 'log_softmax' in fr: k = 'other: log_softmax'
    else: k = 'other: adds/mul/embed/alloc/rest'
    c[k] += 1
for k, v in sorted(c.items(), key=lambda kv: -kv[1]):
    print(f'{100*v/n:6.1f}%  {k}')
print(f'{n} samples')
