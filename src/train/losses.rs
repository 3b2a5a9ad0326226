//! The training objectives, one function each.
//!
//! Every alignment loss takes the logits of one identifier level restricted to the tokens allowed
//! at that level, A_t, shaped `[rows, |A_t|]`: `p_logits` from the frozen target, `q_logits` from
//! the draft. Distributions are `softmax(logits / t)` over A_t. Each function returns the mean over
//! rows as a scalar tensor; callers average the levels, which have equal row counts, so the result
//! is the paper's average over samples, sequences and levels. The target's logits are detached
//! here, so no gradient can reach the target whichever tensor the caller passes.

use candle_core::{Tensor, D};
use candle_nn::ops::{log_softmax, softmax};

use crate::Result;

/// Recommendation loss L_rec (and the whole of SFT): mean of `-log softmax(logits)[label]` over
/// the full vocabulary at temperature 1, like decoding, which takes log-softmax over the full
/// vocabulary and only then masks, see [`crate::decode::select::extensions`]: mass the model puts outside the level's
/// tokens is lost at decoding time, so the loss must see it too. `labels`: `[rows]` u32.
pub fn rec_loss(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    cross_entropy(logits, labels)
}

/// WordKD: forward KL(p || q) at the ground truth's positions.
pub fn word_kd(p_logits: &Tensor, q_logits: &Tensor, t: f64) -> Result<Tensor> {
    let lp = log_softmax(&scaled(&p_logits.detach(), t)?, D::Minus1)?;
    let lq = log_softmax(&scaled(q_logits, t)?, D::Minus1)?;
    Ok((lp.exp()? * (lp - lq)?)?.sum(1)?.mean_all()?)
}

/// TVDKD: total variation 1/2 * sum |p - q| at the ground truth's positions.
pub fn tvd_kd(p_logits: &Tensor, q_logits: &Tensor, t: f64) -> Result<Tensor> {
    let p = softmax(&scaled(&p_logits.detach(), t)?, D::Minus1)?;
    let q = softmax(&scaled(q_logits, t)?, D::Minus1)?;
    Ok(((p - q)?.abs()?.sum(1)? * 0.5)?.mean_all()?)
}

/// SeqKD: `-log q(y_t)` for the teacher beams' tokens; `labels` are indices into A_t.
pub fn seq_kd(q_logits: &Tensor, labels: &Tensor, t: f64) -> Result<Tensor> {
    cross_entropy(&scaled(q_logits, t)?, labels)
}

/// AtSpeed-R: total variation at every teacher beam's positions (relaxed verification accepts
/// a drafted beam with probability min(1, p/q), whose expectation is 1 - TVD).
pub fn atspeed_r(p_logits: &Tensor, q_logits: &Tensor, t: f64) -> Result<Tensor> {
    tvd_kd(p_logits, q_logits, t)
}

/// AtSpeed-S: with S the draft's top-`k` tokens of each row (by the draft's logits), and q~, p~
/// both distributions restricted to S and renormalised,
/// `KL(q~ || p~) + p~(s_K) * H(q~)`, s_K the draft's k-th token. The reverse KL pulls the
/// draft's top-k towards the target's mass; the entropy term is weighted by how much the target
/// likes the draft's weakest candidate (the reference's form of the paper's Eq. 3). The
/// selection itself is not differentiated. `k` is capped at the row width.
pub fn atspeed_s(p_logits: &Tensor, q_logits: &Tensor, k: usize, t: f64) -> Result<Tensor> {
    let k = k.clamp(1, q_logits.dim(1)?);
    let top = q_logits
        .detach()
        .arg_sort_last_dim(false)?
        .narrow(1, 0, k)?
        .contiguous()?;
    let lq = log_softmax(&scaled(&q_logits.gather(&top, 1)?, t)?, D::Minus1)?;
    let lp = log_softmax(&scaled(&p_logits.detach().gather(&top, 1)?, t)?, D::Minus1)?;
    let q = lq.exp()?;
    let kl = (&q * (&lq - &lp)?)?.sum(1)?;
    let entropy = (&q * &lq)?.sum(1)?.neg()?;
    let p_last = lp.exp()?.narrow(1, k - 1, 1)?.squeeze(1)?;
    Ok((kl + (p_last * entropy)?)?.mean_all()?)
}

/// Mean of `-log softmax(logits)[label]` over rows.
fn cross_entropy(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let lp = log_softmax(logits, D::Minus1)?;
    let picked = lp.gather(&labels.unsqueeze(1)?, 1)?;
    Ok(picked.mean_all()?.neg()?)
}

fn scaled(logits: &Tensor, t: f64) -> Result<Tensor> {
    Ok(logits.affine(1.0 / t, 0.0)?)
}

#[cfg(test)]
mod tests {
    use candle_core::{Device, Var};

    use super::*;

    const CPU: Device = Device::Cpu;

    fn t2(rows: &[&[f64]]) -> Tensor {
        let flat: Vec<f32> = rows
            .iter()
            .flat_map(|r| r.iter().map(|&x| x as f32))
            .collect();
        Tensor::from_vec(flat, (rows.len(), rows[0].len()), &CPU).unwrap()
    }

    fn labels(v: &[u32]) -> Tensor {
        Tensor::new(v, &CPU).unwrap()
    }

    fn scalar(t: Tensor) -> f64 {
        t.to_scalar::<f32>().unwrap() as f64
    }

    fn ln(x: f64) -> f64 {
        x.ln()
    }

    /// p = [0.25, 0.75], q = [0.5, 0.5] at T = 1 (and the same at T = 0.5 with halved logits).
    fn pq(t: f64) -> (Tensor, Tensor) {
        (t2(&[&[0.0, ln(3.0) * t]]), t2(&[&[0.0, 0.0]]))
    }

    #[test]
    fn word_kd_by_hand() {
        let want = 0.25 * ln(0.5) + 0.75 * ln(1.5);
        assert!((want - 0.130_812_03).abs() < 1e-8);
        for t in [1.0, 0.5] {
            let (p, q) = pq(t);
            assert!((scalar(word_kd(&p, &q, t).unwrap()) - want).abs() < 1e-6);
        }
        let (p, _) = pq(1.0);
        assert!(scalar(word_kd(&p, &p, 1.0).unwrap()).abs() < 1e-6);
    }

    #[test]
    fn tvd_by_hand() {
        for t in [1.0, 0.5] {
            let (p, q) = pq(t);
            assert!((scalar(tvd_kd(&p, &q, t).unwrap()) - 0.25).abs() < 1e-6);
            assert!((scalar(atspeed_r(&p, &q, t).unwrap()) - 0.25).abs() < 1e-6);
        }
    }

    #[test]
    fn cross_entropies_by_hand() {
        // Rows q = [0.25, 0.75] and [0.5, 0.5], labels 1 and 0.
        let q = t2(&[&[0.0, ln(3.0)], &[2.0, 2.0]]);
        let want = -(ln(0.75) + ln(0.5)) / 2.0;
        let l = labels(&[1, 0]);
        assert!((scalar(rec_loss(&q, &l).unwrap()) - want).abs() < 1e-6);
        let half = (q.clone() * 0.001).unwrap();
        assert!((scalar(seq_kd(&half, &l, 0.001).unwrap()) - want).abs() < 1e-5);
    }

    #[test]
    fn atspeed_s_by_hand() {
        // q = [0.5, 0.3, 0.2], p = [0.2, 0.5, 0.3], K = 2: S = {0, 1},
        // q~ = [5/8, 3/8], p~ = [2/7, 5/7], s_K = token 1.
        let q = t2(&[&[ln(0.5), ln(0.3), ln(0.2)]]);
        let p = t2(&[&[ln(0.2), ln(0.5), ln(0.3)]]);
        let (q1, q2, p1, p2) = (5.0 / 8.0, 3.0 / 8.0, 2.0 / 7.0, 5.0 / 7.0);
        let kl = q1 * ln(q1 / p1) + q2 * ln(q2 / p2);
        let h = -(q1 * ln(q1) + q2 * ln(q2));
        let want = kl + p2 * h;
        assert!((want - 0.720_135_9).abs() < 1e-6);
        assert!((scalar(atspeed_s(&p, &q, 2, 1.0).unwrap()) - want).abs() < 1e-6);
        // K = 1: q~ = p~ = one-hot, KL = H = 0.
        assert!(scalar(atspeed_s(&p, &q, 1, 1.0).unwrap()).abs() < 1e-6);
        // K beyond the width is capped: the full distributions, s_K the draft's last token.
        let qs = [0.5, 0.3, 0.2];
        let ps = [0.2, 0.5, 0.3];
        let kl: f64 = (0..3).map(|i| qs[i] * ln(qs[i] / ps[i])).sum();
        let h: f64 = -(0..3).map(|i| qs[i] * ln(qs[i])).sum::<f64>();
        let got = scalar(atspeed_s(&p, &q, 9, 1.0).unwrap());
        assert!((got - (kl + 0.3 * h)).abs() < 1e-6);
    }

    /// One gradient step on the draft logits must lower every objective.
    #[test]
    fn one_descent_step_lowers_each_loss() {
        let p = t2(&[&[0.3, -1.2, 2.0, 0.1], &[1.5, 0.2, -0.4, 0.9]]);
        let q0 = t2(&[&[1.0, 0.5, -0.3, 0.2], &[-0.5, 1.1, 0.3, 0.0]]);
        let lab = labels(&[2, 0]);
        type LossFn = Box<dyn Fn(&Tensor) -> Result<Tensor>>;
        let cases: Vec<(&str, LossFn)> = vec![
            (
                "rec",
                Box::new(move |q: &Tensor| rec_loss(q, &labels(&[2, 0]))),
            ),
            (
                "word_kd",
                Box::new({
                    let p = p.clone();
                    move |q: &Tensor| word_kd(&p, q, 1.0)
                }),
            ),
            (
                "tvd_kd",
                Box::new({
                    let p = p.clone();
                    move |q: &Tensor| tvd_kd(&p, q, 1.0)
                }),
            ),
            ("seq_kd", Box::new(move |q: &Tensor| seq_kd(q, &lab, 1.0))),
            (
                "atspeed_r",
                Box::new({
                    let p = p.clone();
                    move |q: &Tensor| atspeed_r(&p, q, 2.0)
                }),
            ),
            (
                "atspeed_s",
                Box::new({
                    let p = p.clone();
                    move |q: &Tensor| atspeed_s(&p, q, 3, 1.0)
                }),
            ),
        ];
        for (name, f) in cases {
            let q = Var::from_tensor(&q0).unwrap();
            let before = f(q.as_tensor()).unwrap();
            let grads = before.backward().unwrap();
            let g = grads
                .get(q.as_tensor())
                .expect("gradient reaches the draft");
            let stepped = (q.as_tensor() - (g * 0.1).unwrap()).unwrap();
            let (b, a) = (scalar(before), scalar(f(&stepped).unwrap()));
            assert!(a < b, "{name}: {a} !< {b}");
        }
    }

    #[test]
    fn no_gradient_reaches_the_target() {
        let p = Var::from_tensor(&t2(&[&[0.3, -1.2, 2.0]])).unwrap();
        let q = Var::from_tensor(&t2(&[&[1.0, 0.5, -0.3]])).unwrap();
        let loss = (word_kd(p.as_tensor(), q.as_tensor(), 1.0).unwrap()
            + atspeed_s(p.as_tensor(), q.as_tensor(), 2, 1.0).unwrap())
        .unwrap();
        let grads = loss.backward().unwrap();
        assert!(grads.get(p.as_tensor()).is_none());
        assert!(grads.get(q.as_tensor()).is_some());
    }
}
