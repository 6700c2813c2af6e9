//! The model's bias-free convolutions (every conv followed by BatchNorm): burn's forward and
//! input gradient, and on the CPU our own weight gradient (`rtmdet_kernels::conv_grad`).
//!
//! burn's CPU backend computes a weight gradient as a convolution whose kernel is the whole
//! output gradient, its slowest path: 43 % of an rtmdet-tiny training step on one thread.
//! burn's backend-extension mechanism routes [`ConvGradOps::conv2d_own_grad`] to the CPU
//! backend and to its autodiff wrapper, whose backward node below calls
//! [`ConvGradOps::conv2d_weight_grad`]; the CPU backend implements that with one matrix
//! product per image (the default, for other backends, is burn's own).

use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{Backend, Dispatch, Flex, backend_extension};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, Tensor, TensorData};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_autodiff::{Autodiff, NodeId};
use burn_flex::FlexTensor;
use rtmdet_kernels::conv_grad::{ConvShape, conv2d_weight_grad};

/// A bias-free convolution whose weight gradient a backend may compute its own way.
#[backend_extension(Flex, Autodiff)]
pub trait ConvGradOps: Backend {
    /// `conv2d(x, weight)` without a bias.
    fn conv2d_own_grad(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self>;

    /// The gradient of `conv2d(x, weight)` with respect to `weight`, given the output gradient.
    fn conv2d_weight_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_weight_backward(x, weight, output_grad, options)
    }
}

impl ConvGradOps for Flex {
    fn conv2d_own_grad(x: FlexTensor, weight: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
        Flex::conv2d(x, weight, None, options)
    }

    fn conv2d_weight_grad(
        x: FlexTensor,
        weight: FlexTensor,
        output_grad: FlexTensor,
        options: ConvOptions<2>,
    ) -> FlexTensor {
        let (xd, wd) = (x.layout().shape().to_vec(), weight.layout().shape().to_vec());
        let f32s = [&x, &weight, &output_grad].iter().all(|t| t.dtype() == DType::F32);
        let symmetric = options.padding.iter().all(|(before, after)| before == after);
        if !f32s || !symmetric || xd.len() != 4 || wd.len() != 4 {
            return Flex::conv2d_weight_backward(x, weight, output_grad, options);
        }
        let shape = ConvShape {
            batch: xd[0],
            in_channels: xd[1],
            input: [xd[2], xd[3]],
            out_channels: wd[0],
            kernel: [wd[2], wd[3]],
            stride: options.stride,
            padding: options.padding.map(|(before, _)| before),
            dilation: options.dilation,
            groups: options.groups,
        };
        let (x, grad) = (x.to_contiguous(), output_grad.to_contiguous());
        let (Some(xs), Some(gs)) = (x.as_slice::<f32>(), grad.as_slice::<f32>()) else {
            unreachable!("contiguous f32 tensors have a slice");
        };
        FlexTensor::from_data(TensorData::new(conv2d_weight_grad(&shape, xs, gs), wd))
    }
}

impl<B: Backend + ConvGradOps, C: CheckpointStrategy> ConvGradOps for Autodiff<B, C> {
    fn conv2d_own_grad(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct OwnGrad;

        impl<B: Backend + ConvGradOps> Backward<B, 2> for OwnGrad {
            type State = (NodeId, NodeId, ConvOptions<2>);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                let [node_x, node_weight] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x_state, weight_state, options) = ops.state;
                let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
                let weight = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(weight_state);
                if let Some(node) = node_x {
                    let dx = B::conv2d_x_backward(x.clone(), weight.clone(), grad.clone(), options.clone());
                    grads.register::<B>(node.id, dx);
                }
                if let Some(node) = node_weight {
                    grads.register::<B>(node.id, B::conv2d_weight_grad(x, weight, grad, options));
                }
            }
        }

        match OwnGrad.prepare::<C>([x.node(), weight.node()]).compute_bound().stateful() {
            OpsKind::Tracked(mut prep) => {
                let (x_state, weight_state) = (prep.checkpoint(&x), prep.checkpoint(&weight));
                let y = B::conv2d_own_grad(x.into_primitive(), weight.into_primitive(), options.clone());
                prep.finish((x_state, weight_state, options), y)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::conv2d_own_grad(x.into_primitive(), weight.into_primitive(), options))
            }
        }
    }
}

/// `conv2d(x, weight)` without a bias: through [`ConvGradOps`] on the CPU, burn's own
/// convolution on other devices (the extension is implemented for the CPU backend only).
pub fn conv2d_no_bias(x: Tensor<4>, weight: Tensor<4>, options: ConvOptions<2>) -> Tensor<4> {
    if x.device() != Device::flex() {
        return burn::tensor::module::conv2d(x, weight, None, options);
    }
    Tensor::from_dispatch(Dispatch::conv2d_own_grad(x.into_dispatch(), weight.into_dispatch(), options))
}
