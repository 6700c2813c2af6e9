//! Quality Focal Loss (β = 2): binary cross-entropy with a soft IoU target at the assigned
//! class, scaled by `|target − σ(x)|^β`; negatives use target 0 (spec §9.2).

use burn::tensor::activation::{log_sigmoid, sigmoid};
use burn::tensor::{Int, Tensor};

/// Per-sample loss summed over classes, unweighted: `[N]`.
///
/// `logits`: `[N, C]`; `labels`: `[N]`, class index or `C` for background; `scores`: `[N]`
/// IoU targets of the positives (ignored for background).
pub fn quality_focal_loss(logits: Tensor<2>, labels: Tensor<1, Int>, scores: Tensor<1>, beta: f32) -> Tensor<1> {
    let [n, c] = logits.dims();
    let device = logits.device();
    // One-hot of the label (a background label C gives an all-zero row) times the IoU: for
    // negatives the target is 0 and |0 − σ|^β = σ^β, which is the negative term.
    let classes = Tensor::<1, Int>::arange(0..c as i64, &device).reshape([1, c]).expand([n, c]);
    let onehot = labels.reshape([n, 1]).expand([n, c]).equal(classes).float();
    let target = onehot * scores.reshape([n, 1]).expand([n, c]);
    let scale = (target.clone() - sigmoid(logits.clone())).abs().powf_scalar(beta);
    let bce = (target.neg() + 1.0) * logits.clone() - log_sigmoid(logits);
    (bce * scale).sum_dim(1).reshape([n])
}
