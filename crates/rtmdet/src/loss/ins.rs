//! RTMDet-Ins's `loss_by_feat` (spec §10.4): the detection loss (QFL + GIoU on the same
//! assignment) plus DiceLoss on the masks of the positive priors: their dynamic convs on the
//! image's prototypes (as at inference, differentiable in kernels and prototypes), logits
//! upsampled ×2 to stride 4, against the ground-truth masks subsampled at `[2::4, 2::4]`.

use burn::tensor::module::interpolate;
use burn::tensor::ops::{InterpolateMode, InterpolateOptions};
use burn::tensor::{Int, Tensor, TensorData, activation};

use super::dense::{BoxKind, DetectionLoss, dense_loss};
use super::detection::Horizontal;
use crate::assign::DynamicSoftLabelAssigner;
use crate::assign::dynamic_soft::AssignBox;
use crate::model::LevelTensors;
use crate::model::head::{DYCONV_CHANNELS as DYCONV, KERNEL_PARAMS, MASK_FEAT_STRIDE as PROTO_STRIDE, NUM_PROTOTYPES};
use crate::priors::{grid_priors, mask_relative_coords};
use crate::structures::Instances;
use crate::structures::boxes::Bbox;
use crate::structures::mask::{Rle, decode};

/// `loss_mask.loss_weight` and `eps` of the Ins configs.
const DICE_WEIGHT: f32 = 2.0;
const DICE_EPS: f32 = 5e-6;
/// Stride of the mask loss (`mask_loss_stride`).
const MASK_LOSS_STRIDE: usize = 4;

/// An axis-aligned ground truth whose soft centre prior is measured from its mask's centre of
/// mass (mmdet's DynamicSoftLabelAssigner does so whenever the instances have masks).
#[derive(Clone, Copy, Debug)]
pub(crate) struct MassCentred {
    bbox: Bbox,
    centre: [f32; 2],
}

impl AssignBox for MassCentred {
    fn centre(&self) -> [f32; 2] {
        self.centre
    }

    fn holds(&self, p: [f32; 2]) -> bool {
        self.bbox.holds(p)
    }

    fn iou(&self, gt: &Self) -> f32 {
        self.bbox.iou(&gt.bbox)
    }
}

/// mmdet's `center_of_mass`: `(Σx, Σy) / count` over the foreground pixels, the integer sums
/// converted to float32 before the float32 division (as torch promotes them); an empty mask
/// divides by `eps` = 1e-7.
pub fn centre_of_mass(mask: &Rle) -> [f32; 2] {
    let (mut sx, mut sy, mut n) = (0u64, 0u64, 0u64);
    let mut k = 0u64;
    let h = mask.height as u64;
    for (r, &run) in mask.counts.iter().enumerate() {
        if r % 2 == 1 {
            for p in k..k + run as u64 {
                sx += p / h;
                sy += p % h;
            }
            n += run as u64;
        }
        k += run as u64;
    }
    let norm = (n as f32).max(1e-7);
    [sx as f32 / norm, sy as f32 / norm]
}

/// Axis-aligned boxes with mask-centred ground truth (RTMDet-Ins).
struct Masked;

impl BoxKind for Masked {
    type Box = MassCentred;
    const WIDTH: usize = 4;

    fn decode(level: &LevelTensors, points: &[[f32; 2]]) -> Tensor<3> {
        Horizontal::decode(level, points)
    }

    fn host_box(row: &[f32]) -> MassCentred {
        let bbox = Horizontal::host_box(row);
        MassCentred { bbox, centre: bbox.centre() }
    }

    fn gt_boxes(t: &Instances) -> Vec<MassCentred> {
        t.boxes
            .iter()
            .enumerate()
            .map(|(i, b)| MassCentred { bbox: *b, centre: t.masks.get(i).map_or(b.centre(), centre_of_mass) })
            .collect()
    }

    fn target(gt: &MassCentred) -> Vec<f32> {
        Horizontal::target(&gt.bbox)
    }

    fn box_loss(pred: Tensor<2>, target: Tensor<2>) -> Tensor<1> {
        Horizontal::box_loss(pred, target)
    }
}

/// The Ins loss of a batch: the detection terms and the mask term.
pub struct InsLoss {
    pub detection: DetectionLoss,
    /// `loss_mask` (weighted, averaged over positives).
    pub mask: Tensor<1>,
    /// Per-positive weighted dice losses `2·(1 − dice)` before averaging (images in order,
    /// positives by prior index).
    pub dice: Tensor<1>,
    /// Stride-4 mask logits of the positives `[K, H/4, W/4]`.
    pub logits_s4: Tensor<3>,
    /// `detection.total + mask`.
    pub total: Tensor<1>,
}

impl InsLoss {
    /// `loss_cls`, `loss_bbox`, `loss_mask` as numbers.
    pub fn terms(&self) -> Vec<f64> {
        let mut t = self.detection.terms();
        t.push(crate::model::params::to_vec(&self.mask)[0] as f64);
        t
    }
}

/// Mask logits `[K, H, W]` at stride 8 of the positives `pos` (flattened prior index, prior
/// `(x, y, stride)`) of one image: kernels `[P, 169]` and prototypes `[8, H, W]`.
fn positive_mask_logits(kernels: Tensor<2>, proto: Tensor<3>, pos: &[(usize, [f32; 3])]) -> Tensor<3> {
    let device = kernels.device();
    let [_, h, w] = proto.dims();
    let (k, hw) = (pos.len(), h * w);
    let idx: Vec<i64> = pos.iter().map(|p| p.0 as i64).collect();
    let kernels = kernels.select(0, Tensor::<1, Int>::from_data(TensorData::new(idx, [k]), &device));
    // Relative coordinates (prior − location) / (8·stride), constant.
    let rel: Vec<f32> = pos.iter().flat_map(|(_, p)| mask_relative_coords(*p, (h, w), PROTO_STRIDE)).collect();
    let rel = Tensor::<3>::from_data(TensorData::new(rel, [k, 2, hw]), &device);
    let protos = proto.reshape([1, NUM_PROTOTYPES, hw]).expand([k, NUM_PROTOTYPES, hw]);
    let x = Tensor::cat(vec![rel, protos], 1); // [K, 10, HW]
    let n_in = NUM_PROTOTYPES + 2;
    let part = |from: usize, len: usize| kernels.clone().narrow(1, from, len);
    let (w0_len, w1_len) = (DYCONV * n_in, DYCONV * DYCONV);
    let w0 = part(0, w0_len).reshape([k, DYCONV, n_in]);
    let w1 = part(w0_len, w1_len).reshape([k, DYCONV, DYCONV]);
    let w2 = part(w0_len + w1_len, DYCONV).reshape([k, 1, DYCONV]);
    let b_at = w0_len + w1_len + DYCONV;
    let b0 = part(b_at, DYCONV).reshape([k, DYCONV, 1]);
    let b1 = part(b_at + DYCONV, DYCONV).reshape([k, DYCONV, 1]);
    let b2 = part(b_at + 2 * DYCONV, 1).reshape([k, 1, 1]);
    debug_assert_eq!(b_at + 2 * DYCONV + 1, KERNEL_PARAMS);
    let h1 = activation::relu(w0.matmul(x) + b0);
    let h2 = activation::relu(w1.matmul(h1) + b1);
    (w2.matmul(h2) + b2).reshape([k, h, w])
}

/// The ground-truth masks of the positives subsampled at `[2::4, 2::4]` `[K, H/4, W/4]`:
/// `masks` are the image's objects' masks in input pixels.
fn positive_targets(t: &Instances, gt_of: &[usize], (h, w): (usize, usize)) -> Vec<f32> {
    let off = MASK_LOSS_STRIDE / 2;
    let (th, tw) = (h / MASK_LOSS_STRIDE, w / MASK_LOSS_STRIDE);
    let bitmaps: Vec<_> = t.masks.iter().map(|m| decode(m).ok()).collect();
    let mut out = vec![0f32; gt_of.len() * th * tw];
    for (n, &g) in gt_of.iter().enumerate() {
        let Some(Some(b)) = bitmaps.get(g) else { continue };
        for y in 0..th {
            for x in 0..tw {
                out[(n * th + y) * tw + x] = b.get(off + y * MASK_LOSS_STRIDE, off + x * MASK_LOSS_STRIDE) as u8 as f32;
            }
        }
    }
    out
}

/// Computes the RTMDet-Ins training loss of head `outputs` and prototypes `proto`
/// `[N, 8, H/8, W/8]` against the `N` images' objects, whose `masks` (COCO RLE of the network
/// input's size, one per object) give the mask targets.
pub fn ins_loss(
    outputs: &[LevelTensors],
    proto: Tensor<4>,
    targets: &[Instances],
    assigner: &DynamicSoftLabelAssigner,
) -> InsLoss {
    let detection = dense_loss::<Masked>(outputs, targets, assigner);
    let device = proto.device();
    let [n, _, ph, pw] = proto.dims();
    let sizes: Vec<(usize, usize)> = outputs.iter().map(|o| (o.cls.dims()[2], o.cls.dims()[3])).collect();
    let strides: Vec<usize> = outputs.iter().map(|o| o.stride).collect();
    let priors = grid_priors(&sizes, &strides);
    // [N, P, 169] kernels of all levels.
    let kernels = Tensor::cat(
        outputs
            .iter()
            .map(|o| {
                let k = o.kernel.clone().expect("RTMDet-Ins outputs carry kernels");
                let [_, c, h, w] = k.dims();
                k.reshape([n, c, h * w]).swap_dims(1, 2)
            })
            .collect(),
        1,
    );
    let (mut logits, mut gt) = (Vec::new(), Vec::new());
    for (b, (r, t)) in detection.assignments.iter().zip(targets).enumerate() {
        let pos: Vec<(usize, [f32; 3])> = (0..priors.len())
            .filter(|&i| r.gt_inds[i] > 0)
            .map(|i| (i, [priors[i][0], priors[i][1], priors[i][2]]))
            .collect();
        if pos.is_empty() {
            continue;
        }
        let gt_of: Vec<usize> = pos.iter().map(|&(i, _)| (r.gt_inds[i] - 1) as usize).collect();
        let p = priors.len();
        let image_kernels = kernels.clone().narrow(0, b, 1).reshape([p, KERNEL_PARAMS]);
        let image_proto = proto.clone().narrow(0, b, 1).reshape([NUM_PROTOTYPES, ph, pw]);
        logits.push(positive_mask_logits(image_kernels, image_proto, &pos));
        gt.extend(positive_targets(t, &gt_of, (ph * PROTO_STRIDE, pw * PROTO_STRIDE)));
    }
    let k: usize = logits.iter().map(|l| l.dims()[0]).sum();
    if k == 0 {
        // mmdet's `mask_feats.sum() * 0`: every prototype gets a (zero) gradient.
        let mask = proto.sum().mul_scalar(0.0);
        let (h4, w4) = (ph * 2, pw * 2);
        let logits_s4 = Tensor::<3>::zeros([0, h4, w4], &device);
        let total = detection.total.clone() + mask.clone();
        return InsLoss { detection, dice: Tensor::zeros([0], &device), mask, logits_s4, total };
    }
    let scale = PROTO_STRIDE / MASK_LOSS_STRIDE;
    let logits = Tensor::cat(logits, 0).reshape([1, k, ph, pw]);
    let opts = InterpolateOptions::new(InterpolateMode::Bilinear)
        .with_align_corners(false)
        .with_output_size([ph * scale, pw * scale]);
    let logits_s4 = interpolate(logits, opts).reshape([k, ph * scale, pw * scale]);
    let target = Tensor::<2>::from_data(TensorData::new(gt, [k, ph * scale * pw * scale]), &device);
    let p = activation::sigmoid(logits_s4.clone()).reshape([k, ph * scale * pw * scale]);
    // Non-naive dice: 1 − 2·Σpg / ((Σp² + eps) + (Σg² + eps)).
    let a = (p.clone() * target.clone()).sum_dim(1);
    let b = (p.clone() * p).sum_dim(1).add_scalar(DICE_EPS);
    let c = (target.clone() * target).sum_dim(1).add_scalar(DICE_EPS);
    let dice = (a.mul_scalar(2.0) / (b + c)).neg().add_scalar(1.0).reshape([k]);
    let mask = dice.clone().sum().div_scalar(k as f32 + super::AVG_EPS).mul_scalar(DICE_WEIGHT);
    let total = detection.total.clone() + mask.clone();
    InsLoss { detection, mask, dice: dice.mul_scalar(DICE_WEIGHT), logits_s4, total }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::structures::mask::{Bitmap, encode};

    #[test]
    fn centre_of_mass_is_the_mean_pixel_position() {
        // Pixels (y, x) = (1, 2), (1, 3), (2, 3) of a 4×5 mask.
        let mut data = vec![0u8; 20];
        for (y, x) in [(1, 2), (1, 3), (2, 3)] {
            data[y * 5 + x] = 1;
        }
        let c = centre_of_mass(&encode(&Bitmap { height: 4, width: 5, data }));
        assert_eq!(c, [8.0 / 3.0, 4.0 / 3.0]);
        // An empty mask divides zero sums by eps, as mmdet does.
        assert_eq!(centre_of_mass(&encode(&Bitmap::zeros(4, 5))), [0.0, 0.0]);
    }
}
