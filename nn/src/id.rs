//! IRRA's identity classifier and ID loss, used in fine-tuning only (docs/method.md
//! §5.3; IRRA `model/build.py`: `self.classifier = nn.Linear(embed_dim, num_classes)`,
//! weight ~ N(0, 0.001²), bias 0; `objectives.compute_id`).
//!
//! ```text
//! logits_v = v_cls · Wᵀ + b          [B, C]   v_cls: image CLS feature  [B, EMBED] (projected, not normalised)
//! logits_t = t_eos · Wᵀ + b          [B, C]   t_eos: text EOS feature   [B, EMBED]
//! L_id = ( CE(logits_v, pid) + CE(logits_t, pid) ) / 2,   CE = mean over the batch of −log softmax[pid]
//! ```
//!
//! # Why the classifier is not a dfdx module
//!
//! The class count `C` is the number of training identities (CUHK-PEDES 11,003, ICFG 3,102,
//! RSTPReid 3,701, the embedded synthetic set 350), known only at run time, and dfdx 0.13
//! registers only compile-time-shaped parameters (`TensorOptions` requires `ConstShape`,
//! docs/dfdx.md §1.3). So `W` [C, EMBED] and `b` [C] are plain run-time-shaped tensors
//! outside the model's `TensorCollection`:
//!
//! * the **forward** runs on the features' tape (`W`, `b` enter as constants), so the
//!   gradient of `L_id` reaches the features and through them the towers;
//! * the gradient w.r.t. `W` and `b` is the closed form of softmax cross-entropy, computed on
//!   the host in f64 from the same logits: with `G = (softmax(logits) − onehot(pid)) / (2B)`
//!   per branch, `dW = G_vᵀ v + G_tᵀ t` and `db = Σ_rows (G_v + G_t)` ([`IdClassifier::grads`]).
//!
//! `ckpt/tests/reference/id_loss.rs` checks the loss, the feature gradients (through dfdx) and `dW`, `db`
//! against PyTorch autograd (`fixtures/id/make.py`).
//!
//! The log-softmax sees a contiguous `[B, C]` matmul output (no permuted input: the dfdx
//! gradient bug of docs/dfdx.md §1.4 does not apply).

use crate::layers::Float;
use dfdx::prelude::*;

/// The identity classifier `Linear(EMBED, C)` with a run-time class count.
#[derive(Clone, Debug)]
pub struct IdClassifier<const EMBED: usize, E: Dtype, D: Storage<E>> {
    /// `classifier.weight` [C, EMBED].
    pub weight: Tensor<(usize, Const<EMBED>), E, D>,
    /// `classifier.bias` [C].
    pub bias: Tensor<(usize,), E, D>,
}

/// Host gradients of `L_id` w.r.t. the classifier.
#[derive(Clone, Debug, PartialEq)]
pub struct IdGrads {
    /// dL/dW, [C, EMBED] row-major.
    pub weight: Vec<f32>,
    /// dL/db, [C].
    pub bias: Vec<f32>,
}

impl<const EMBED: usize, E: Float, D: Device<E>> IdClassifier<EMBED, E, D> {
    /// IRRA's initialisation: weight ~ N(0, 0.001²) from `dev`'s RNG, bias 0.
    pub fn new(dev: &D, classes: usize) -> Self
    where
        rand_distr::StandardNormal: rand_distr::Distribution<E>,
    {
        let w: Tensor<(usize, Const<EMBED>), E, D> =
            dev.sample_normal_like(&(classes, Const::<EMBED>));
        IdClassifier {
            weight: w * E::from_f64(0.001).unwrap(),
            bias: dev.zeros_like(&(classes,)),
        }
    }

    /// From host data: `weight` [C·EMBED] row-major, `bias` [C].
    pub fn from_vecs(dev: &D, weight: Vec<E>, bias: Vec<E>) -> Self {
        let c = bias.len();
        assert_eq!(
            weight.len(),
            c * EMBED,
            "IdClassifier: weight is [C, EMBED]"
        );
        IdClassifier {
            weight: dev.tensor_from_vec(weight, (c, Const::<EMBED>)),
            bias: dev.tensor_from_vec(bias, (c,)),
        }
    }

    /// Number of classes `C`.
    pub fn classes(&self) -> usize {
        self.bias.shape().0
    }

    /// `feats · Wᵀ + b`: [B, EMBED] → [B, C], on the features' tape (W and b are constants).
    pub fn logits<T: Tape<E, D>>(
        &self,
        feats: Tensor<(usize, Const<EMBED>), E, D, T>,
    ) -> Tensor<(usize, usize), E, D, T> {
        let b = feats.shape().0;
        let c = self.classes();
        let w = self.weight.clone().permute::<_, Axes2<1, 0>>();
        feats.matmul(w) + self.bias.clone().broadcast_like::<_, Axis<0>>(&(b, c))
    }

    /// `L_id` of the image and text features with identities `pids` (each `< C`); see the
    /// module docs. Also returns the classifier's gradients (host, closed form).
    ///
    /// # Panics
    /// If the batch sizes disagree, the batch is empty or a pid is `≥ C`.
    pub fn loss<T: Tape<E, D>>(
        &self,
        image_feats: Tensor<(usize, Const<EMBED>), E, D, T>,
        text_feats: Tensor<(usize, Const<EMBED>), E, D, T>,
        pids: &[usize],
    ) -> (Tensor<Rank0, E, D, T>, IdGrads) {
        let b = image_feats.shape().0;
        assert!(b > 0, "id loss: empty batch");
        assert_eq!(text_feats.shape().0, b, "id loss: batch sizes differ");
        assert_eq!(pids.len(), b, "id loss: one pid per sample");
        let c = self.classes();
        assert!(
            pids.iter().all(|&p| p < c),
            "id loss: a pid is not below the class count {c}"
        );
        let host = |t: &Tensor<(usize, Const<EMBED>), E, D, T>| -> Vec<f64> {
            t.as_vec().iter().map(|x| x.to_f64().unwrap()).collect()
        };
        let (v, t) = (host(&image_feats), host(&text_feats));
        let lv = self.logits(image_feats);
        let lt = self.logits(text_feats);
        let mut grads = IdGrads {
            weight: vec![0.0; c * EMBED],
            bias: vec![0.0; c],
        };
        let mut gw = vec![0.0f64; c * EMBED];
        let mut gb = vec![0.0f64; c];
        for (logits, feats) in [(&lv, &v), (&lt, &t)] {
            let l: Vec<f64> = logits
                .as_vec()
                .iter()
                .map(|x| x.to_f64().unwrap())
                .collect();
            for i in 0..b {
                let row = &l[i * c..(i + 1) * c];
                let mx = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                let z: f64 = row.iter().map(|x| (x - mx).exp()).sum();
                for k in 0..c {
                    let p = (row[k] - mx).exp() / z;
                    let g = (p - if k == pids[i] { 1.0 } else { 0.0 }) / (2.0 * b as f64);
                    gb[k] += g;
                    let f = &feats[i * EMBED..(i + 1) * EMBED];
                    for (d, x) in f.iter().enumerate() {
                        gw[k * EMBED + d] += g * x;
                    }
                }
            }
        }
        grads.weight = gw.into_iter().map(|x| x as f32).collect();
        grads.bias = gb.into_iter().map(|x| x as f32).collect();
        let half = E::from_f64(0.5).unwrap();
        let loss = (ce_rows(lv, pids) + ce_rows(lt, pids)) * half;
        (loss, grads)
    }
}

/// Mean over rows of `−log softmax(logits)[label]`: PyTorch `F.cross_entropy(logits, labels)`
/// for contiguous logits [N, C] and labels [N] (each `< C`). On the CPU in f32/f64 this is the
/// fused [`crate::fast::cross_entropy`] with weights `1/N`; else a dfdx composition.
pub fn ce_rows<E: Float, D: Device<E>, T: Tape<E, D>>(
    logits: Tensor<(usize, usize), E, D, T>,
    labels: &[usize],
) -> Tensor<Rank0, E, D, T> {
    let n = logits.shape().0;
    assert_eq!(labels.len(), n, "ce_rows: one label per row");
    let logits = match crate::fast::cross_entropy(logits, labels, &vec![1.0 / n as f64; n]) {
        Ok(loss) => return loss,
        Err(logits) => logits,
    };
    let dev = logits.device().clone();
    let idx = dev.tensor_from_vec(labels.to_vec(), (n,));
    let log_p = logits.log_softmax::<Axis<1>>();
    let picked: Tensor<(usize,), E, D, T> = log_p.select(idx);
    picked.mean().negate()
}
