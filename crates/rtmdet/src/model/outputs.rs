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
}

/// Head outputs of a batch on the host: what every inference engine returns.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct HeadOutputs {
    pub levels: Vec<LevelOutputs>,
}

impl HeadOutputs {
    /// Images in the batch.
    pub fn batch(&self) -> usize {
        self.levels.first().map_or(0, |l| l.dims[0])
    }

    /// Copies burn head tensors to the host.
    pub fn from_tensors(outputs: &[LevelTensors]) -> Self {
        let levels = outputs
            .iter()
            .map(|o| LevelOutputs {
                cls: super::params::to_vec(&o.cls),
                reg: super::params::to_vec(&o.reg),
                angle: o.angle.as_ref().map(super::params::to_vec).unwrap_or_default(),
                dims: o.cls.dims(),
                stride: o.stride,
            })
            .collect();
        HeadOutputs { levels }
    }
}
