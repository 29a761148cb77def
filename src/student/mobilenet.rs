//! MobileNet V1 and V2, width multiplier 1.0.
//!
//! - V1: Howard et al., "MobileNets: Efficient Convolutional Neural Networks for Mobile Vision
//!   Applications" (arXiv 1704.04861), Table 1: a 3×3/2 conv to 32 channels, then 13
//!   depthwise-separable blocks (3×3 depthwise conv - BN - ReLU, 1×1 pointwise conv - BN - ReLU)
//!   and a linear classifier on the global average pool. Table 1 prints the 13th block's
//!   depthwise conv as stride 2 although its map stays 7×7; like the authors' TensorFlow code we
//!   use stride 1 there. 4,231,976 parameters at 1000 classes. torchvision has no V1, so the names
//!   are ours, laid out the way a PyTorch `Sequential` would save them: `features.0.{0,1}` the
//!   first conv and its BN; `features.{1..13}.0.{0,1}` a block's depthwise conv and BN,
//!   `features.{1..13}.1.{0,1}` its pointwise conv and BN; `fc` the head.
//! - V2: Sandler et al., "MobileNetV2: Inverted Residuals and Linear Bottlenecks" (arXiv
//!   1801.04381), torchvision's layout and names: `features.0` the first conv, `features.1..17`
//!   the inverted residuals (`.conv.{i}`), `features.18` the 1×1 conv to 1280, `classifier.1` the
//!   head (`classifier.0` is the dropout, p = 0.2, applied only when training). ReLU6.
//!
//! The small stem (28–64 px images) makes the first conv stride 1; every other layer is
//! unchanged. Depthwise convs run on our direct depthwise kernel (`crate::kernels::conv2d`).

use crate::kernels::BatchNorm;
use candle_core::Tensor;
use candle_nn::{BatchNormConfig, Linear, VarBuilder};

use super::{
    apply_head, batch_norm, global_avg_pool, Act, Block, Conv, ConvBnAct, ConvShape, Pass,
    PooledNet, ResolvedStem, Student, Top,
};

fn stem_stride(stem: ResolvedStem) -> usize {
    match stem {
        ResolvedStem::Imagenet => 2,
        ResolvedStem::Small => 1,
    }
}

fn conv_bn_act(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    groups: usize,
    act: Act,
    vb: VarBuilder,
) -> candle_core::Result<ConvBnAct> {
    let shape = ConvShape {
        c_in,
        c_out,
        kernel,
        stride,
        groups,
    };
    ConvBnAct::new(shape, BatchNormConfig::default(), act, vb)
}

/// (output channels, depthwise stride) of V1's 13 depthwise-separable blocks.
const V1_BLOCKS: [(usize, usize); 13] = [
    (64, 1),
    (128, 2),
    (128, 1),
    (256, 2),
    (256, 1),
    (512, 2),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (512, 1),
    (1024, 2),
    (1024, 1),
];

#[derive(Clone, Debug)]
pub struct MobileNetV1 {
    /// The first conv, then depthwise / pointwise pairs.
    layers: Vec<ConvBnAct>,
    fc: Option<Linear>,
}

impl Student for MobileNetV1 {
    fn feature_map(&self, xs: &Tensor, pass: Pass) -> candle_core::Result<Tensor> {
        let train = pass.training();
        let mut xs = xs.clone();
        for layer in &self.layers {
            xs = layer.forward_t(&xs, train)?;
        }
        Ok(xs)
    }

    fn feature_map_channels(&self) -> usize {
        self.feature_dim()
    }

    fn features(&self, xs: &Tensor, pass: Pass) -> candle_core::Result<Tensor> {
        global_avg_pool(&self.feature_map(xs, pass)?)?.flatten_from(1)
    }

    fn head(&self, feats: &Tensor) -> candle_core::Result<Tensor> {
        apply_head(&self.fc, feats)
    }

    fn feature_dim(&self) -> usize {
        V1_BLOCKS[V1_BLOCKS.len() - 1].0
    }
}

/// MobileNet V1 (1.0×), 1024-d features.
pub fn mobilenet_v1(
    in_channels: usize,
    stem: ResolvedStem,
    num_outputs: usize,
    vb: VarBuilder,
) -> candle_core::Result<Box<dyn Student>> {
    mobilenet_v1_top(in_channels, stem, Top::Head { num_outputs }, vb)
}

pub(crate) fn mobilenet_v1_top(
    in_channels: usize,
    stem: ResolvedStem,
    top: Top,
    vb: VarBuilder,
) -> candle_core::Result<Box<dyn Student>> {
    let f = vb.pp("features");
    let mut layers = vec![conv_bn_act(
        in_channels,
        32,
        3,
        stem_stride(stem),
        1,
        Act::Relu,
        f.pp("0"),
    )?];
    let mut c_in = 32;
    for (i, &(c_out, stride)) in V1_BLOCKS.iter().enumerate() {
        let block = f.pp((i + 1).to_string());
        layers.push(conv_bn_act(
            c_in,
            c_in,
            3,
            stride,
            c_in,
            Act::Relu,
            block.pp("0"),
        )?);
        layers.push(conv_bn_act(c_in, c_out, 1, 1, 1, Act::Relu, block.pp("1"))?);
        c_in = c_out;
    }
    let fc = top.linear(c_in, vb.pp("fc"))?;
    Ok(Box::new(MobileNetV1 { layers, fc }))
}

/// V2's inverted residual: [1×1 expand - BN - ReLU6] → 3×3 depthwise - BN - ReLU6 → 1×1
/// project - BN (linear bottleneck), plus the input when shape is kept.
#[derive(Clone, Debug)]
struct InvertedResidual {
    expand: Option<ConvBnAct>,
    depthwise: ConvBnAct,
    project: Conv,
    project_bn: BatchNorm,
    residual: bool,
}

impl InvertedResidual {
    fn new(
        c_in: usize,
        c_out: usize,
        stride: usize,
        expand_ratio: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let hidden = c_in * expand_ratio;
        let vb = vb.pp("conv");
        // torchvision numbers the Sequential's children, so every index after a skipped
        // expansion shifts down by one.
        let mut idx = 0;
        let mut next = || {
            idx += 1;
            (idx - 1).to_string()
        };
        let expand = if expand_ratio != 1 {
            Some(conv_bn_act(
                c_in,
                hidden,
                1,
                1,
                1,
                Act::Relu6,
                vb.pp(next()),
            )?)
        } else {
            None
        };
        let depthwise = conv_bn_act(hidden, hidden, 3, stride, hidden, Act::Relu6, vb.pp(next()))?;
        let project = Conv::new(hidden, c_out, 1, 1, 1, vb.pp(next()))?;
        let project_bn = batch_norm(c_out, vb.pp(next()))?;
        Ok(InvertedResidual {
            expand,
            depthwise,
            project,
            project_bn,
            residual: stride == 1 && c_in == c_out,
        })
    }
}

impl Block for InvertedResidual {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut ys = match &self.expand {
            Some(e) => e.forward_t(xs, train)?,
            None => xs.clone(),
        };
        ys = self.depthwise.forward_t(&ys, train)?;
        ys = self
            .project_bn
            .forward_conv_act_t(&self.project, &ys, train, Act::None)?;
        if self.residual {
            ys = (ys + xs)?;
        }
        Ok(ys)
    }
}

/// (expand ratio t, output channels c, repeats n, first stride s), the paper's Table 2.
const V2_SETTINGS: [(usize, usize, usize, usize); 7] = [
    (1, 16, 1, 1),
    (6, 24, 2, 2),
    (6, 32, 3, 2),
    (6, 64, 4, 2),
    (6, 96, 3, 1),
    (6, 160, 3, 2),
    (6, 320, 1, 1),
];
const V2_LAST_CHANNELS: usize = 1280;
const V2_DROPOUT: f32 = 0.2;

/// MobileNet V2 (1.0×), 1280-d features. Channels are already multiples of 8 at width 1.0, so
/// torchvision's `_make_divisible` rounding is the identity here.
pub fn mobilenet_v2(
    in_channels: usize,
    stem: ResolvedStem,
    num_outputs: usize,
    vb: VarBuilder,
) -> candle_core::Result<Box<dyn Student>> {
    mobilenet_v2_top(in_channels, stem, Top::Head { num_outputs }, vb)
}

pub(crate) fn mobilenet_v2_top(
    in_channels: usize,
    stem: ResolvedStem,
    top: Top,
    vb: VarBuilder,
) -> candle_core::Result<Box<dyn Student>> {
    let f = vb.pp("features");
    let first = conv_bn_act(
        in_channels,
        32,
        3,
        stem_stride(stem),
        1,
        Act::Relu6,
        f.pp("0"),
    )?;
    let mut blocks = Vec::new();
    let mut c_in = 32;
    for &(t, c, n, s) in &V2_SETTINGS {
        for i in 0..n {
            let stride = if i == 0 { s } else { 1 };
            let vb = f.pp((blocks.len() + 1).to_string());
            blocks.push(InvertedResidual::new(c_in, c, stride, t, vb)?);
            c_in = c;
        }
    }
    let last = conv_bn_act(
        c_in,
        V2_LAST_CHANNELS,
        1,
        1,
        1,
        Act::Relu6,
        f.pp((blocks.len() + 1).to_string()),
    )?;
    let classifier = top.linear(V2_LAST_CHANNELS, vb.pp("classifier.1"))?;
    Ok(Box::new(PooledNet {
        first,
        blocks,
        last,
        classifier,
        dropout: V2_DROPOUT,
        dim: V2_LAST_CHANNELS,
    }))
}

#[cfg(test)]
mod tests {
    use super::super::tests::{
        build_in_varmap, check_shape_and_gradients, imagenet_param_count, param_shape, trainable,
    };
    use super::super::{Arch, Stem, StudentSpec};

    fn spec(arch: Arch, in_channels: usize) -> StudentSpec {
        StudentSpec {
            arch,
            in_channels,
            stem: Stem::Small,
        }
    }

    #[test]
    fn parameter_counts() {
        // V2: torchvision's mobilenet_v2(); V1: the paper's 4.2 M, summed by hand in the doc.
        assert_eq!(imagenet_param_count(Arch::MobilenetV2).0, 3_504_872);
        assert_eq!(imagenet_param_count(Arch::MobilenetV1).0, 4_231_976);
    }

    #[test]
    fn v2_tensor_names_are_torchvision_keys() {
        let (n, varmap) = imagenet_param_count(Arch::MobilenetV2);
        assert!(n > 0);
        let shape = |n: &str| param_shape(&varmap, n);
        assert_eq!(shape("features.0.0.weight"), [32, 3, 3, 3]);
        assert_eq!(shape("features.0.1.running_mean"), [32]);
        // block 1 has no expansion: depthwise at conv.0, projection at conv.1 / conv.2
        assert_eq!(shape("features.1.conv.0.0.weight"), [32, 1, 3, 3]);
        assert_eq!(shape("features.1.conv.1.weight"), [16, 32, 1, 1]);
        assert_eq!(shape("features.1.conv.2.bias"), [16]);
        assert_eq!(shape("features.2.conv.0.0.weight"), [96, 16, 1, 1]);
        assert_eq!(shape("features.2.conv.1.0.weight"), [96, 1, 3, 3]);
        assert_eq!(shape("features.2.conv.2.weight"), [24, 96, 1, 1]);
        assert_eq!(shape("features.2.conv.3.weight"), [24]);
        assert_eq!(shape("features.17.conv.2.weight"), [320, 960, 1, 1]);
        assert_eq!(shape("features.18.0.weight"), [1280, 320, 1, 1]);
        assert_eq!(shape("classifier.1.weight"), [1000, 1280]);
        assert!(varmap
            .data()
            .lock()
            .unwrap()
            .get("features.19.0.weight")
            .is_none());
    }

    #[test]
    fn v1_tensor_names() {
        let (varmap, _) = build_in_varmap(&spec(Arch::MobilenetV1, 3), 32, 5);
        let names: Vec<String> = trainable(&varmap).into_iter().map(|(n, _)| n).collect();
        // first conv + 13 × (dw + pw), each conv weight + BN weight/bias, plus fc weight/bias
        assert_eq!(names.len(), 27 * 3 + 2);
        let data = varmap.data().lock().unwrap();
        assert_eq!(
            data["features.1.0.0.weight"].as_tensor().dims(),
            [32, 1, 3, 3]
        );
        assert_eq!(
            data["features.1.1.0.weight"].as_tensor().dims(),
            [64, 32, 1, 1]
        );
        assert_eq!(
            data["features.13.1.0.weight"].as_tensor().dims(),
            [1024, 1024, 1, 1]
        );
        assert_eq!(data["fc.weight"].as_tensor().dims(), [5, 1024]);
    }

    #[test]
    fn v1_shapes_and_gradients() {
        check_shape_and_gradients(&spec(Arch::MobilenetV1, 1), 3, 32);
    }

    #[test]
    fn v2_shapes_and_gradients() {
        check_shape_and_gradients(&spec(Arch::MobilenetV2, 3), 3, 32);
    }
}
