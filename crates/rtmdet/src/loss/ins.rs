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
use crate::structures::mask::{Bitmap, Rle, decode};

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
    /// Stride-4 mask logits of the positives `[K, H/4, W/4]`, when asked for
    /// ([`MaskLossOptions::keep_logits`]).
    pub logits_s4: Option<Tensor<3>>,
    /// `detection.total + mask`; its backward pass gives the gradients of both.
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

/// How the mask term is computed; the defaults are what training uses.
#[derive(Clone, Copy, Debug, Default)]
pub struct MaskLossOptions {
    /// Positives per chunk; `None`: as many as [`CHUNK_PROTOTYPE_PIXELS`] allows.
    pub chunk: Option<usize>,
    /// Keep the stride-4 logits of every positive in [`InsLoss::logits_s4`] (for parity tests:
    /// they take `H/4·W/4` floats per positive).
    pub keep_logits: bool,
}

/// The mask term runs over the positives in chunks of at most this many prototype pixels
/// (64 positives at 640×640). Each chunk's dynamic convs, upsampled logits and dice are built,
/// differentiated and freed before the next, so the memory of the term is that of one chunk
/// however crowded the images are; built in one piece it took 1.4 MB per positive, 3.1 GB for
/// two 640×640 images with 196 objects each (mmdetection issue #9616).
pub const CHUNK_PROTOTYPE_PIXELS: usize = 64 * 80 * 80;

/// Mask logits `[K, H, W]` at stride 8 of positives with kernels `[K, 169]` at priors
/// `(x, y, stride)` on one image's prototypes `[8, H, W]`.
fn positive_mask_logits(kernels: Tensor<2>, proto: Tensor<3>, priors: &[[f32; 3]]) -> Tensor<3> {
    let device = kernels.device();
    let [_, h, w] = proto.dims();
    let (k, hw) = (priors.len(), h * w);
    // Relative coordinates (prior − location) / (8·stride), constant.
    let rel: Vec<f32> = priors.iter().flat_map(|p| mask_relative_coords(*p, (h, w), PROTO_STRIDE)).collect();
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

/// One image's object masks subsampled at `[2::4, 2::4]` (`H/4·W/4` each; `None` for an
/// object without a decodable mask, whose target is empty), from masks of `(h, w)` pixels.
fn subsampled_targets(t: &Instances, (h, w): (usize, usize)) -> Vec<Option<Vec<u8>>> {
    let off = MASK_LOSS_STRIDE / 2;
    let (th, tw) = (h / MASK_LOSS_STRIDE, w / MASK_LOSS_STRIDE);
    let sample = |b: Bitmap| -> Vec<u8> {
        (0..th * tw)
            .map(|i| b.get(off + (i / tw) * MASK_LOSS_STRIDE, off + (i % tw) * MASK_LOSS_STRIDE) as u8)
            .collect()
    };
    t.masks.iter().map(|m| decode(m).ok().map(sample)).collect()
}

/// Stride-4 logits `[K, 2H, 2W]` (bilinear ×2 of the stride-8 `logits` `[K, H, W]`) and the
/// non-naive dice loss `1 − 2·Σpg / ((Σp² + eps) + (Σg² + eps))` `[K]` against `target`
/// `[K, 2H·2W]`.
fn dice_losses(logits: Tensor<3>, target: Tensor<2>) -> (Tensor<3>, Tensor<1>) {
    let [k, h, w] = logits.dims();
    let scale = PROTO_STRIDE / MASK_LOSS_STRIDE;
    let (h4, w4) = (h * scale, w * scale);
    let opts = InterpolateOptions::new(InterpolateMode::Bilinear).with_align_corners(false).with_output_size([h4, w4]);
    let logits_s4 = interpolate(logits.reshape([1, k, h, w]), opts).reshape([k, h4, w4]);
    let p = activation::sigmoid(logits_s4.clone()).reshape([k, h4 * w4]);
    let a = (p.clone() * target.clone()).sum_dim(1);
    let b = (p.clone() * p).sum_dim(1).add_scalar(DICE_EPS);
    let c = (target.clone() * target).sum_dim(1).add_scalar(DICE_EPS);
    (logits_s4, (a.mul_scalar(2.0) / (b + c)).neg().add_scalar(1.0).reshape([k]))
}

/// A positive prior of the batch.
struct Positive {
    image: usize,
    /// Flattened prior index over the levels.
    prior: usize,
    /// Index of its object in the image's targets.
    gt: usize,
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
    ins_loss_with(outputs, proto, targets, assigner, MaskLossOptions::default())
}

/// [`ins_loss`] with the mask term's options.
///
/// The mask term is differentiated chunk by chunk (see [`CHUNK_PROTOTYPE_PIXELS`]): each
/// chunk's kernels and its image's prototypes enter as fresh leaves, the chunk's share of
/// `loss_mask` is back-propagated to them at once, and the summed gradients `G` come back into
/// the batch's graph through `Σ kernels·G_k + Σ prototypes·G_p`, whose gradient is exactly `G`.
/// `total` carries that sum minus its detached value (zero), so its value is
/// `detection + loss_mask` and its backward pass reaches the head and neck as before.
pub fn ins_loss_with(
    outputs: &[LevelTensors],
    proto: Tensor<4>,
    targets: &[Instances],
    assigner: &DynamicSoftLabelAssigner,
    opts: MaskLossOptions,
) -> InsLoss {
    let detection = dense_loss::<Masked>(outputs, targets, assigner);
    let device = proto.device();
    let [n, _, ph, pw] = proto.dims();
    let sizes: Vec<(usize, usize)> = outputs.iter().map(|o| (o.cls.dims()[2], o.cls.dims()[3])).collect();
    let strides: Vec<usize> = outputs.iter().map(|o| o.stride).collect();
    let priors = grid_priors(&sizes, &strides);
    let p = priors.len();
    // [N·P, 169] kernels of all levels.
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
    )
    .reshape([n * p, KERNEL_PARAMS]);
    let positives: Vec<Positive> = detection
        .assignments
        .iter()
        .enumerate()
        .flat_map(|(image, r)| {
            (0..p).filter(|&i| r.gt_inds[i] > 0).map(move |prior| Positive {
                image,
                prior,
                gt: (r.gt_inds[prior] - 1) as usize,
            })
        })
        .collect();
    let k = positives.len();
    if k == 0 {
        // mmdet's `mask_feats.sum() * 0`: every prototype gets a (zero) gradient.
        let mask = proto.sum().mul_scalar(0.0);
        let logits_s4 = opts.keep_logits.then(|| Tensor::<3>::zeros([0, ph * 2, pw * 2], &device));
        let total = detection.total.clone() + mask.clone();
        return InsLoss { detection, dice: Tensor::zeros([0], &device), mask, logits_s4, total };
    }
    // loss_mask = weight · Σ dice / (K + eps); every chunk back-propagates its share.
    let share = DICE_WEIGHT / (k as f32 + super::AVG_EPS);
    let per_chunk = opts.chunk.unwrap_or(CHUNK_PROTOTYPE_PIXELS / (ph * pw)).max(1);
    let (fixed_kernels, fixed_proto) = (kernels.clone().detach(), proto.clone().detach());
    let (mut kernel_grads, mut proto_grads) = (Vec::new(), vec![None; n]);
    let (mut dice, mut logits) = (Vec::new(), Vec::new());
    let (th, tw) = (ph * 2, pw * 2);
    // Each positive's row in `kernels`.
    let rows: Vec<i64> = positives.iter().map(|q| (q.image * p + q.prior) as i64).collect();
    let rows_tensor = |r: &[i64]| Tensor::<1, Int>::from_data(TensorData::new(r.to_vec(), [r.len()]), &device);
    let mut first = 0;
    while first < k {
        let image = positives[first].image;
        let end = (first..k).find(|&i| positives[i].image != image).unwrap_or(k);
        let goals = subsampled_targets(&targets[image], (ph * PROTO_STRIDE, pw * PROTO_STRIDE));
        for (chunk, chunk_rows) in positives[first..end].chunks(per_chunk).zip(rows[first..end].chunks(per_chunk)) {
            let c = chunk.len();
            let leaf_kernels = fixed_kernels.clone().select(0, rows_tensor(chunk_rows)).require_grad();
            let leaf_proto = fixed_proto.clone().narrow(0, image, 1).reshape([NUM_PROTOTYPES, ph, pw]).require_grad();
            let at: Vec<[f32; 3]> =
                chunk.iter().map(|q| [priors[q.prior][0], priors[q.prior][1], priors[q.prior][2]]).collect();
            let mut goal = vec![0f32; c * th * tw];
            for (row, q) in goal.chunks_mut(th * tw).zip(chunk) {
                if let Some(Some(g)) = goals.get(q.gt) {
                    row.iter_mut().zip(g).for_each(|(o, &v)| *o = v as f32);
                }
            }
            let goal = Tensor::<2>::from_data(TensorData::new(goal, [c, th * tw]), &device);
            let mask_logits = positive_mask_logits(leaf_kernels.clone(), leaf_proto.clone(), &at);
            let (logits_s4, chunk_dice) = dice_losses(mask_logits, goal);
            dice.push(chunk_dice.clone().without_autodiff());
            if opts.keep_logits {
                logits.push(logits_s4.clone().without_autodiff());
            }
            let grads = chunk_dice.sum().mul_scalar(share).backward();
            kernel_grads.push(leaf_kernels.grad(&grads).expect("the chunk's kernels are a leaf"));
            let g = leaf_proto.grad(&grads).expect("the chunk's prototypes are a leaf");
            proto_grads[image] = Some(match proto_grads[image].take() {
                Some(sum) => sum + g,
                None => g,
            });
        }
        first = end;
    }
    let dice = Tensor::cat(dice, 0);
    let mask = dice.clone().sum().div_scalar(k as f32 + super::AVG_EPS).mul_scalar(DICE_WEIGHT);
    // Σ kernels·G_k + Σ prototypes·G_p: its gradient is the chunks' summed gradients.
    let kernel_grads = Tensor::cat(kernel_grads, 0);
    let zero = || Tensor::<3>::zeros([NUM_PROTOTYPES, ph, pw], &device).without_autodiff();
    let proto_grads = Tensor::stack(proto_grads.into_iter().map(|g| g.unwrap_or_else(zero)).collect(), 0);
    let carrier = (kernels.select(0, rows_tensor(&rows)) * kernel_grads).sum() + (proto * proto_grads).sum();
    let total = detection.total.clone() + mask.clone() + (carrier.clone() - carrier.detach());
    let logits_s4 = opts.keep_logits.then(|| Tensor::cat(logits, 0));
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
