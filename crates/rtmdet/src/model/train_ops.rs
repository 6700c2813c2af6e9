//! The model's operations that train faster on the CPU with our own kernels, plugged into
//! burn by its backend-extension mechanism: [`TrainOps`] is routed to the CPU backend and to
//! its autodiff wrapper, whose backward nodes below call our gradients.
//!
//! * Bias-free convolutions (every conv followed by BatchNorm): burn's forward, our weight and
//!   input gradients (`rtmdet_kernels::conv_grad`). burn's CPU backend computes a weight
//!   gradient as a convolution whose kernel is the whole output gradient, its slowest path:
//!   43 % of an rtmdet-tiny training step on one thread.
//! * `SiLU(BatchNorm(x))` with batch statistics (every ConvModule in training):
//!   `rtmdet_kernels::bn_silu`, a few passes per plane forward and backward instead of burn's
//!   chain of elementwise operations, each with its autodiff node and scalar `exp`.
//!
//! Other devices keep burn's own operations (the extension is implemented for the CPU only).

use burn::backend::ops::ModuleOps;
use burn::backend::tensor::FloatTensor;
use burn::backend::{AutodiffBackend, Backend, Dispatch, Flex, backend_extension};
use burn::tensor::ops::ConvOptions;
use burn::tensor::{DType, Device, Tensor, TensorData};
use burn_autodiff::checkpoint::base::Checkpointer;
use burn_autodiff::checkpoint::strategy::CheckpointStrategy;
use burn_autodiff::grads::Gradients;
use burn_autodiff::ops::{Backward, Ops, OpsKind};
use burn_autodiff::{Autodiff, NodeId};
use burn_flex::FlexTensor;
use rtmdet_kernels::Isa;
use rtmdet_kernels::bn_silu::{Planes, bn_silu_backward, bn_silu_forward};
use rtmdet_kernels::conv_grad::{ConvShape, conv2d_input_grad, conv2d_weight_grad};

/// Training operations with a backward of their own.
#[backend_extension(Flex, Autodiff)]
pub trait TrainOps: Backend {
    /// `SiLU(BatchNorm(x))` over `[N, C, H, W]` with the batch's statistics: the output, the
    /// batch mean and the biased batch variance (`[C]`, outside the autodiff graph).
    fn bn_silu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// The gradients of [`TrainOps::bn_silu_train`]'s `x`, `gamma` and `beta` given the
    /// output gradient `dy` and the statistics it used.
    #[allow(clippy::too_many_arguments)]
    fn bn_silu_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        eps: f64,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>);

    /// `conv2d(x, weight)` without a bias.
    fn conv2d_own_grad(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self>;

    /// The gradient of `conv2d(x, weight)` with respect to `x`, given the output gradient.
    fn conv2d_input_grad(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        output_grad: FloatTensor<Self>,
        options: ConvOptions<2>,
    ) -> FloatTensor<Self> {
        Self::conv2d_x_backward(x, weight, output_grad, options)
    }

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

/// An f32 tensor's values in row-major order: borrowed when contiguous, else copied once.
/// (Only f32 tensors get here: [`covers`] and [`conv_shape`] check.)
fn values(t: &FlexTensor) -> std::borrow::Cow<'_, [f32]> {
    match t.as_slice::<f32>() {
        Some(v) => std::borrow::Cow::Borrowed(v),
        None => std::borrow::Cow::Owned(t.clone().into_data().try_into_vec::<f32>().expect("an f32 tensor")),
    }
}

/// `[N, C, H·W]` of an NCHW tensor.
fn planes(x: &FlexTensor) -> Planes {
    let d = x.layout().shape();
    Planes { batch: d[0], channels: d[1], pixels: d[2] * d[3] }
}

fn flex(values: Vec<f32>, shape: Vec<usize>) -> FlexTensor {
    FlexTensor::from_data(TensorData::new(values, shape))
}

impl TrainOps for Flex {
    fn bn_silu_train(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        eps: f64,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (p, dims) = (planes(&x), x.layout().shape().to_vec());
        let f = bn_silu_forward(Isa::detect(), &values(&x), p, &values(&gamma), &values(&beta), eps as f32);
        (flex(f.y, dims), flex(f.mean, vec![p.channels]), flex(f.var, vec![p.channels]))
    }

    fn bn_silu_backward(
        x: FlexTensor,
        gamma: FlexTensor,
        beta: FlexTensor,
        mean: FlexTensor,
        var: FlexTensor,
        eps: f64,
        dy: FlexTensor,
    ) -> (FlexTensor, FlexTensor, FlexTensor) {
        let (p, dims) = (planes(&x), x.layout().shape().to_vec());
        let stats = (&*values(&mean), &*values(&var));
        let b = bn_silu_backward(
            Isa::detect(),
            &values(&x),
            p,
            &values(&gamma),
            &values(&beta),
            stats,
            eps as f32,
            &values(&dy),
        );
        (flex(b.dx, dims), flex(b.dgamma, vec![p.channels]), flex(b.dbeta, vec![p.channels]))
    }

    fn conv2d_own_grad(x: FlexTensor, weight: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
        Flex::conv2d(x, weight, None, options)
    }

    fn conv2d_input_grad(x: FlexTensor, weight: FlexTensor, grad: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
        let ours = |shape: &ConvShape, x: &FlexTensor, weight: &FlexTensor, grad: &FlexTensor| {
            flex(conv2d_input_grad(shape, &values(weight), &values(grad)), x.layout().shape().to_vec())
        };
        conv_grad_with([x, weight, grad], options, ours, Flex::conv2d_x_backward)
    }

    fn conv2d_weight_grad(x: FlexTensor, weight: FlexTensor, grad: FlexTensor, options: ConvOptions<2>) -> FlexTensor {
        let ours = |shape: &ConvShape, x: &FlexTensor, weight: &FlexTensor, grad: &FlexTensor| {
            flex(conv2d_weight_grad(shape, &values(x), &values(grad)), weight.layout().shape().to_vec())
        };
        conv_grad_with([x, weight, grad], options, ours, Flex::conv2d_weight_backward)
    }
}

/// A convolution gradient by `ours` when [`conv_shape`] covers the convolution, else by
/// burn's `fallback`.
fn conv_grad_with(
    [x, weight, grad]: [FlexTensor; 3],
    options: ConvOptions<2>,
    ours: impl FnOnce(&ConvShape, &FlexTensor, &FlexTensor, &FlexTensor) -> FlexTensor,
    fallback: fn(FlexTensor, FlexTensor, FlexTensor, ConvOptions<2>) -> FlexTensor,
) -> FlexTensor {
    match conv_shape(&x, &weight, &grad, &options) {
        Some(shape) => ours(&shape, &x, &weight, &grad),
        None => fallback(x, weight, grad, options),
    }
}

/// The shapes of a 2-D f32 convolution with symmetric padding, or `None` for anything else
/// (left to burn).
fn conv_shape(x: &FlexTensor, weight: &FlexTensor, grad: &FlexTensor, options: &ConvOptions<2>) -> Option<ConvShape> {
    let (xd, wd) = (x.layout().shape(), weight.layout().shape());
    let f32s = [x, weight, grad].iter().all(|t| t.dtype() == DType::F32);
    let symmetric = options.padding.iter().all(|(before, after)| before == after);
    (f32s && symmetric && xd.num_dims() == 4 && wd.num_dims() == 4).then(|| ConvShape {
        batch: xd[0],
        in_channels: xd[1],
        input: [xd[2], xd[3]],
        out_channels: wd[0],
        kernel: [wd[2], wd[3]],
        stride: options.stride,
        padding: options.padding.map(|(before, _)| before),
        dilation: options.dilation,
        groups: options.groups,
    })
}

impl<B: Backend + TrainOps, C: CheckpointStrategy> TrainOps for Autodiff<B, C> {
    fn bn_silu_train(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        eps: f64,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        #[derive(Debug)]
        struct BnSilu;

        type Saved<B> = [<B as burn::backend::BackendTypes>::FloatTensorPrimitive; 5];

        impl<B: Backend + TrainOps> Backward<B, 3> for BnSilu {
            type State = (Saved<B>, f64);

            fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
                let [node_x, node_gamma, node_beta] = ops.parents;
                let dy = grads.consume::<B>(&ops.node);
                let ([x, gamma, beta, mean, var], eps) = ops.state;
                let (dx, dgamma, dbeta) = B::bn_silu_backward(x, gamma, beta, mean, var, eps, dy);
                for (node, grad) in [(node_x, dx), (node_gamma, dgamma), (node_beta, dbeta)] {
                    if let Some(node) = node {
                        grads.register::<B>(node.id, grad);
                    }
                }
            }
        }

        let saved = [x.primitive().clone(), gamma.primitive().clone(), beta.primitive().clone()];
        let (y, mean, var) = B::bn_silu_train(saved[0].clone(), saved[1].clone(), saved[2].clone(), eps);
        let y = match BnSilu.prepare::<C>([x.node(), gamma.node(), beta.node()]).compute_bound().stateful() {
            OpsKind::Tracked(prep) => {
                let [x, gamma, beta] = saved;
                prep.finish(([x, gamma, beta, mean.clone(), var.clone()], eps), y)
            }
            OpsKind::UnTracked(prep) => prep.finish(y),
        };
        (y, Self::from_inner(mean), Self::from_inner(var))
    }

    /// Not part of the graph: the inner backend's, on the primitives.
    fn bn_silu_backward(
        x: FloatTensor<Self>,
        gamma: FloatTensor<Self>,
        beta: FloatTensor<Self>,
        mean: FloatTensor<Self>,
        var: FloatTensor<Self>,
        eps: f64,
        dy: FloatTensor<Self>,
    ) -> (FloatTensor<Self>, FloatTensor<Self>, FloatTensor<Self>) {
        let [x, gamma, beta, mean, var, dy] = [x, gamma, beta, mean, var, dy].map(|t| t.into_primitive());
        let (dx, dgamma, dbeta) = B::bn_silu_backward(x, gamma, beta, mean, var, eps, dy);
        (Self::from_inner(dx), Self::from_inner(dgamma), Self::from_inner(dbeta))
    }

    fn conv2d_own_grad(x: FloatTensor<Self>, weight: FloatTensor<Self>, options: ConvOptions<2>) -> FloatTensor<Self> {
        #[derive(Debug)]
        struct OwnGrad;

        impl<B: Backend + TrainOps> Backward<B, 2> for OwnGrad {
            type State = (NodeId, NodeId, ConvOptions<2>);

            fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, checkpointer: &mut Checkpointer) {
                let [node_x, node_weight] = ops.parents;
                let grad = grads.consume::<B>(&ops.node);
                let (x_state, weight_state, options) = ops.state;
                let x = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(x_state);
                let weight = checkpointer.retrieve_node_output::<B::FloatTensorPrimitive>(weight_state);
                if let Some(node) = node_x {
                    let dx = B::conv2d_input_grad(x.clone(), weight.clone(), grad.clone(), options.clone());
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

/// Whether [`TrainOps`] runs `x`: f32 on the CPU backend, with or without autodiff (the
/// extension is implemented for the CPU backend only; other devices keep burn's operations).
fn covers(x: &Tensor<4>) -> bool {
    x.device() == Device::flex() && x.dtype() == DType::F32
}

/// `SiLU(BatchNorm(x))` with the batch's statistics, and the batch mean and biased variance
/// `[C]`, where [`TrainOps`] runs `x` in training (autodiff); `None` elsewhere.
pub fn bn_silu_train(
    x: &Tensor<4>,
    gamma: Tensor<1>,
    beta: Tensor<1>,
    eps: f64,
) -> Option<(Tensor<4>, Tensor<1>, Tensor<1>)> {
    if !(covers(x) && x.device().is_autodiff()) {
        return None;
    }
    let (y, mean, var) =
        Dispatch::bn_silu_train(x.clone().into_dispatch(), gamma.into_dispatch(), beta.into_dispatch(), eps);
    Some((Tensor::from_dispatch(y), Tensor::from_dispatch(mean), Tensor::from_dispatch(var)))
}

/// `conv2d(x, weight)` without a bias: through [`TrainOps`] where it runs `x`, burn's own
/// convolution elsewhere.
pub fn conv2d_no_bias(x: Tensor<4>, weight: Tensor<4>, options: ConvOptions<2>) -> Tensor<4> {
    if !covers(&x) {
        return burn::tensor::module::conv2d(x, weight, None, options);
    }
    Tensor::from_dispatch(Dispatch::conv2d_own_grad(x.into_dispatch(), weight.into_dispatch(), options))
}
