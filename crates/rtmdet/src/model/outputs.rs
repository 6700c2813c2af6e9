//! What the network produces, in the two forms the rest of the library uses: burn tensors for
//! training ([`HeadTensors`], gradients flow through them) and host arrays for inference
//! ([`HeadOutputs`], what every engine returns and post-processing reads).

use burn::tensor::Tensor;

/// Raw head outputs of one pyramid level as burn tensors (training).
#[derive(Clone, Debug)]
pub struct LevelTensors {
    /// Classification logits `[N, num_classes, H, W]`.
    pub cls: Tensor<4>,
    /// `rtm_reg` output before exp / stride scaling, `[N, 4, H, W]`.
    pub reg_raw: Tensor<4>,
    /// Distances (left, top, right, bottom) in input pixels, `[N, 4, H, W]`.
    pub reg: Tensor<4>,
    /// Raw angle in radians `[N, 1, H, W]` (RTMDet-R).
    pub angle: Option<Tensor<4>>,
    /// Dynamic-conv parameters `[N, 169, H, W]` (RTMDet-Ins).
    pub kernel: Option<Tensor<4>>,
    pub stride: usize,
}

/// Head outputs of a batch, per level (strides 8, 16, 32), as burn tensors.
pub type HeadTensors = Vec<LevelTensors>;

/// Head outputs of one level on the host, row-major NCHW.
#[derive(Clone, Debug, PartialEq)]
pub struct LevelOutputs {
    /// Logits `[N, C, H, W]`.
    pub cls: Vec<f32>,
    /// Distances in input pixels `[N, 4, H, W]` (`raw·stride` or `exp(raw)·stride`).
    pub reg: Vec<f32>,
    /// Raw angle in radians `[N, 1, H, W]` (RTMDet-R), empty otherwise.
    pub angle: Vec<f32>,
    /// Dynamic-conv parameters `[N, 169, H, W]` (RTMDet-Ins), empty otherwise.
    pub kernel: Vec<f32>,
    /// `[N, C, H, W]` of `cls`.
    pub dims: [usize; 4],
    pub stride: usize,
}

impl LevelOutputs {
    pub fn height(&self) -> usize {
        self.dims[2]
    }

    pub fn width(&self) -> usize {
        self.dims[3]
    }

    /// Logits `[C, H, W]` of image `b`.
    pub fn cls_of(&self, b: usize) -> &[f32] {
        let n = self.dims[1] * self.dims[2] * self.dims[3];
        &self.cls[b * n..(b + 1) * n]
    }

    /// Distances `[4, H, W]` of image `b`.
    pub fn reg_of(&self, b: usize) -> &[f32] {
        let n = 4 * self.dims[2] * self.dims[3];
        &self.reg[b * n..(b + 1) * n]
    }

    /// Angles `[H, W]` of image `b` (RTMDet-R; empty otherwise).
    pub fn angle_of(&self, b: usize) -> &[f32] {
        let n = self.dims[2] * self.dims[3];
        self.angle.get(b * n..(b + 1) * n).unwrap_or(&[])
    }

    /// Kernels `[169, H, W]` of image `b` (RTMDet-Ins; empty otherwise).
    pub fn kernel_of(&self, b: usize) -> &[f32] {
        let n = self.kernel.len() / self.dims[0].max(1);
        self.kernel.get(b * n..(b + 1) * n).unwrap_or(&[])
    }
}

/// RTMDet-Ins prototypes on the host, `[N, 8, H/8, W/8]` row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct MaskFeatures {
    pub data: Vec<f32>,
    pub dims: [usize; 4],
}

impl MaskFeatures {
    /// Prototypes `[8, h, w]` of image `b`.
    pub fn proto_of(&self, b: usize) -> &[f32] {
        let n = self.dims[1] * self.dims[2] * self.dims[3];
        &self.data[b * n..(b + 1) * n]
    }
}

/// Head outputs of a batch on the host: what every inference engine returns.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct HeadOutputs {
    pub levels: Vec<LevelOutputs>,
    /// RTMDet-Ins prototypes (`None` for the other tasks).
    pub mask_feat: Option<MaskFeatures>,
}

impl HeadOutputs {
    /// Images in the batch.
    pub fn batch(&self) -> usize {
        self.levels.first().map_or(0, |l| l.dims[0])
    }

    /// Copies burn head tensors (and RTMDet-Ins prototypes) to the host.
    pub fn from_tensors(outputs: &[LevelTensors], proto: Option<&Tensor<4>>) -> Self {
        let levels = outputs
            .iter()
            .map(|o| LevelOutputs {
                cls: super::params::to_vec(&o.cls),
                reg: super::params::to_vec(&o.reg),
                angle: o.angle.as_ref().map(super::params::to_vec).unwrap_or_default(),
                kernel: o.kernel.as_ref().map(super::params::to_vec).unwrap_or_default(),
                dims: o.cls.dims(),
                stride: o.stride,
            })
            .collect();
        let mask_feat = proto.map(|p| MaskFeatures { data: super::params::to_vec(p), dims: p.dims() });
        HeadOutputs { levels, mask_feat }
    }
}
