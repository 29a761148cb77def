//! EfficientNet-B0 — Tan & Le, "EfficientNet: Rethinking Model Scaling for Convolutional Neural
//! Networks" (ICML 2019, arXiv 1905.11946), Table 1, in torchvision's layout and names:
//! `features.0` the 3×3/2 stem conv, `features.1..7` the seven MBConv stages
//! (`features.{stage}.{i}.block.{j}`), `features.8` the 1×1 conv to 1280, `classifier.1` the
//! head (`classifier.0` is the dropout, p = 0.2, applied only when training). SiLU everywhere.
//!
//! An MBConv block is [1×1 expand - BN - SiLU] → k×k depthwise - BN - SiLU → squeeze-excitation
//! (`fc1`/`fc2`, 1×1 convs with bias, squeeze width = block input channels / 4) → 1×1 project -
//! BN, plus the input when the shape is kept. Without an expansion (stage 1) the indices shift:
//! `block.0` depthwise, `block.1` SE, `block.2` projection.
//!
//! BatchNorm keeps PyTorch's defaults (eps 1e-5, momentum 0.1) as torchvision's B0 does; only its
//! B5–B7 switch to the TensorFlow settings eps 1e-3 / momentum 0.01, and a momentum of 0.01 would
//! leave the running statistics far from the data after the few hundred steps of a short run.
//! Checked: with torchvision's random weights (and randomised BN statistics) loaded by name, the
//! eval-mode outputs agree to 1e-6 relative. Not implemented: torchvision's stochastic depth (drop-path 0.2 on the residual branches),
//! a regulariser for long ImageNet runs; left out so a training step stays deterministic given
//! the dropout mask.
//!
//! The small stem (28–64 px images) makes the first conv stride 1.

use candle_core::Tensor;
use candle_nn::{BatchNormConfig, VarBuilder};

use super::{Act, Block, ConvBnAct, ConvShape, PooledNet, ResolvedStem, Student, Top};

fn conv_bn_act(shape: ConvShape, act: Act, vb: VarBuilder) -> candle_core::Result<ConvBnAct> {
    ConvBnAct::new(shape, BatchNormConfig::default(), act, vb)
}

/// Squeeze-excitation: channel weights from the global average, `x · σ(fc2(SiLU(fc1(avg x))))`.
/// fc1/fc2 are stored as torchvision's 1×1 convs (`[out, in, 1, 1]` + bias) and applied as
/// matrices on `[B, C]` by [`crate::kernels::squeeze_excitation`], one graph node.
#[derive(Clone, Debug)]
struct SqueezeExcitation {
    /// `(weight [out, in], bias [out])` of fc1 and fc2.
    fc1: (Tensor, Tensor),
    fc2: (Tensor, Tensor),
}

fn conv1x1_as_matrix(
    c_in: usize,
    c_out: usize,
    vb: VarBuilder,
) -> candle_core::Result<(Tensor, Tensor)> {
    let weight = vb.get_with_hints(
        (c_out, c_in, 1, 1),
        "weight",
        candle_nn::init::DEFAULT_KAIMING_NORMAL,
    )?;
    let bound = 1.0 / (c_in as f64).sqrt();
    let bias = vb.get_with_hints(
        c_out,
        "bias",
        candle_nn::Init::Uniform {
            lo: -bound,
            up: bound,
        },
    )?;
    Ok((weight.reshape((c_out, c_in))?, bias))
}

impl SqueezeExcitation {
    fn new(channels: usize, squeeze: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        Ok(SqueezeExcitation {
            fc1: conv1x1_as_matrix(channels, squeeze, vb.pp("fc1"))?,
            fc2: conv1x1_as_matrix(squeeze, channels, vb.pp("fc2"))?,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        let ((w1, b1), (w2, b2)) = (&self.fc1, &self.fc2);
        crate::kernels::squeeze_excitation(xs, crate::kernels::SqueezeWeights { w1, b1, w2, b2 })
    }
}

#[derive(Clone, Debug)]
struct MbConv {
    expand: Option<ConvBnAct>,
    depthwise: ConvBnAct,
    se: SqueezeExcitation,
    project: ConvBnAct,
    residual: bool,
}

impl MbConv {
    fn new(cfg: &Stage, c_in: usize, stride: usize, vb: VarBuilder) -> candle_core::Result<Self> {
        let hidden = c_in * cfg.expand_ratio;
        let vb = vb.pp("block");
        let mut idx = 0;
        let mut next = || {
            idx += 1;
            (idx - 1).to_string()
        };
        let expand = if cfg.expand_ratio != 1 {
            let shape = ConvShape {
                c_in,
                c_out: hidden,
                kernel: 1,
                stride: 1,
                groups: 1,
            };
            Some(conv_bn_act(shape, Act::Silu, vb.pp(next()))?)
        } else {
            None
        };
        let dw = ConvShape {
            c_in: hidden,
            c_out: hidden,
            kernel: cfg.kernel,
            stride,
            groups: hidden,
        };
        let depthwise = conv_bn_act(dw, Act::Silu, vb.pp(next()))?;
        let se = SqueezeExcitation::new(hidden, (c_in / 4).max(1), vb.pp(next()))?;
        let proj = ConvShape {
            c_in: hidden,
            c_out: cfg.channels,
            kernel: 1,
            stride: 1,
            groups: 1,
        };
        let project = conv_bn_act(proj, Act::None, vb.pp(next()))?;
        Ok(MbConv {
            expand,
            depthwise,
            se,
            project,
            residual: stride == 1 && c_in == cfg.channels,
        })
    }
}

impl Block for MbConv {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut ys = match &self.expand {
            Some(e) => e.forward_t(xs, train)?,
            None => xs.clone(),
        };
        ys = self.depthwise.forward_t(&ys, train)?;
        ys = self.se.forward(&ys)?;
        ys = self.project.forward_t(&ys, train)?;
        if self.residual {
            ys = (ys + xs)?;
        }
        Ok(ys)
    }
}

/// One row of the paper's Table 1.
struct Stage {
    expand_ratio: usize,
    kernel: usize,
    stride: usize,
    channels: usize,
    layers: usize,
}

const fn stage(
    expand_ratio: usize,
    kernel: usize,
    stride: usize,
    channels: usize,
    layers: usize,
) -> Stage {
    Stage {
        expand_ratio,
        kernel,
        stride,
        channels,
        layers,
    }
}

const B0_STAGES: [Stage; 7] = [
    stage(1, 3, 1, 16, 1),
    stage(6, 3, 2, 24, 2),
    stage(6, 5, 2, 40, 2),
    stage(6, 3, 2, 80, 3),
    stage(6, 5, 1, 112, 3),
    stage(6, 5, 2, 192, 4),
    stage(6, 3, 1, 320, 1),
];
const STEM_CHANNELS: usize = 32;
const LAST_CHANNELS: usize = 1280;
const DROPOUT: f32 = 0.2;

/// EfficientNet-B0 (width and depth 1.0), 1280-d features.
pub fn efficientnet_b0(
    in_channels: usize,
    stem: ResolvedStem,
    num_outputs: usize,
    vb: VarBuilder,
) -> candle_core::Result<Box<dyn Student>> {
    efficientnet_b0_top(in_channels, stem, Top::Head { num_outputs }, vb)
}

pub(crate) fn efficientnet_b0_top(
    in_channels: usize,
    stem: ResolvedStem,
    top: Top,
    vb: VarBuilder,
) -> candle_core::Result<Box<dyn Student>> {
    let f = vb.pp("features");
    let first = ConvShape {
        c_in: in_channels,
        c_out: STEM_CHANNELS,
        kernel: 3,
        stride: match stem {
            ResolvedStem::Imagenet => 2,
            ResolvedStem::Small => 1,
        },
        groups: 1,
    };
    let first = conv_bn_act(first, Act::Silu, f.pp("0"))?;
    let mut blocks = Vec::new();
    let mut c_in = STEM_CHANNELS;
    for (s, cfg) in B0_STAGES.iter().enumerate() {
        let stage_vb = f.pp((s + 1).to_string());
        for i in 0..cfg.layers {
            let stride = if i == 0 { cfg.stride } else { 1 };
            blocks.push(MbConv::new(cfg, c_in, stride, stage_vb.pp(i.to_string()))?);
            c_in = cfg.channels;
        }
    }
    let last = ConvShape {
        c_in,
        c_out: LAST_CHANNELS,
        kernel: 1,
        stride: 1,
        groups: 1,
    };
    let last = conv_bn_act(last, Act::Silu, f.pp((B0_STAGES.len() + 1).to_string()))?;
    let classifier = top.linear(LAST_CHANNELS, vb.pp("classifier.1"))?;
    Ok(Box::new(PooledNet {
        first,
        blocks,
        last,
        classifier,
        dropout: DROPOUT,
        dim: LAST_CHANNELS,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{check_shape_and_gradients, imagenet_param_count, param_shape};
    use super::super::{Arch, Stem, StudentSpec};

    #[test]
    fn parameter_count_and_names_equal_torchvision() {
        let (n, varmap) = imagenet_param_count(Arch::EfficientnetB0);
        assert_eq!(n, 5_288_548);
        let shape = |n: &str| param_shape(&varmap, n);
        assert_eq!(shape("features.0.0.weight"), [32, 3, 3, 3]);
        assert_eq!(shape("features.1.0.block.0.0.weight"), [32, 1, 3, 3]);
        assert_eq!(shape("features.1.0.block.1.fc1.weight"), [8, 32, 1, 1]);
        assert_eq!(shape("features.1.0.block.1.fc2.bias"), [32]);
        assert_eq!(shape("features.1.0.block.2.1.running_var"), [16]);
        assert_eq!(shape("features.2.0.block.0.0.weight"), [96, 16, 1, 1]);
        assert_eq!(shape("features.3.1.block.1.0.weight"), [240, 1, 5, 5]);
        assert_eq!(shape("features.3.1.block.2.fc1.weight"), [10, 240, 1, 1]);
        assert_eq!(shape("features.6.3.block.3.0.weight"), [192, 1152, 1, 1]);
        assert_eq!(shape("features.7.0.block.3.1.weight"), [320]);
        assert_eq!(shape("features.8.0.weight"), [1280, 320, 1, 1]);
        assert_eq!(shape("classifier.1.weight"), [1000, 1280]);
    }

    #[test]
    fn shapes_and_gradients() {
        let spec = StudentSpec {
            arch: Arch::EfficientnetB0,
            in_channels: 3,
            stem: Stem::Small,
        };
        check_shape_and_gradients(&spec, 3, 32);
    }
}
