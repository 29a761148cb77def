//! ResNet-18/34/50 — He, Zhang, Ren, Sun, "Deep Residual Learning for Image Recognition" (CVPR
//! 2016, arXiv 1512.03385), in torchvision's layout (v1.5: a bottleneck's stride sits on its 3×3
//! conv), with tensor names equal to torchvision's `state_dict` keys: `conv1`, `bn1`,
//! `layer{1..4}.{i}.conv{1,2,3}` / `.bn{1,2,3}`, `layer{i}.0.downsample.{0,1}`, `fc`.
//!
//! The ImageNet stem is conv 7×7/2 + BN + ReLU + max-pool 3×3/2 pad 1 (that pool is why
//! [`crate::kernels::max_pool2d`] exists: candle's own has no backward when kernel ≠ stride). The small
//! stem for 28–64 px images is the CIFAR ResNets' conv 3×3/1 + BN + ReLU and no pool; it keeps
//! the name `conv1` (its weight is `[64, C, 3, 3]` instead of `[64, C, 7, 7]`).

use crate::kernels::{Act, BatchNorm, Conv2d};
use candle_core::Tensor;
use candle_nn::{Conv2dConfig, Linear, VarBuilder};

use super::{apply_head, batch_norm, global_avg_pool, Arch, Pass, ResolvedStem, Student, Top};

fn conv(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    stride: usize,
    vb: VarBuilder,
) -> candle_core::Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: (kernel - 1) / 2,
        stride,
        dilation: 1,
        groups: 1,
        cudnn_fwd_algo: None,
    };
    crate::kernels::conv2d_no_bias_layer(c_in, c_out, kernel, cfg, vb)
}

/// The projection shortcut (1×1 conv + BN) when a block changes resolution or width.
#[derive(Clone, Debug)]
struct Downsample {
    conv: Conv2d,
    bn: BatchNorm,
}

impl Downsample {
    fn new(
        c_in: usize,
        c_out: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Option<Self>> {
        if stride == 1 && c_in == c_out {
            return Ok(None);
        }
        Ok(Some(Downsample {
            conv: conv(c_in, c_out, 1, stride, vb.pp("0"))?,
            bn: batch_norm(c_out, vb.pp("1"))?,
        }))
    }

    fn shortcut(this: &Option<Self>, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        match this {
            None => Ok(xs.clone()),
            Some(d) => d.bn.forward_conv_act_t(&d.conv, xs, train, Act::None),
        }
    }
}

/// A residual block: the convs with a BN after each, ReLU between them and after the sum.
#[derive(Clone, Debug)]
struct Block {
    convs: Vec<(Conv2d, BatchNorm)>,
    downsample: Option<Downsample>,
}

impl Block {
    /// BasicBlock (ResNet-18/34): 3×3 (stride) → 3×3, expansion 1.
    fn basic(
        c_in: usize,
        planes: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let convs = vec![
            (
                conv(c_in, planes, 3, stride, vb.pp("conv1"))?,
                batch_norm(planes, vb.pp("bn1"))?,
            ),
            (
                conv(planes, planes, 3, 1, vb.pp("conv2"))?,
                batch_norm(planes, vb.pp("bn2"))?,
            ),
        ];
        let downsample = Downsample::new(c_in, planes, stride, vb.pp("downsample"))?;
        Ok(Block { convs, downsample })
    }

    /// Bottleneck (ResNet-50): 1×1 → 3×3 (stride) → 1×1 ×4.
    fn bottleneck(
        c_in: usize,
        planes: usize,
        stride: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let out = planes * 4;
        let convs = vec![
            (
                conv(c_in, planes, 1, 1, vb.pp("conv1"))?,
                batch_norm(planes, vb.pp("bn1"))?,
            ),
            (
                conv(planes, planes, 3, stride, vb.pp("conv2"))?,
                batch_norm(planes, vb.pp("bn2"))?,
            ),
            (
                conv(planes, out, 1, 1, vb.pp("conv3"))?,
                batch_norm(out, vb.pp("bn3"))?,
            ),
        ];
        let downsample = Downsample::new(c_in, out, stride, vb.pp("downsample"))?;
        Ok(Block { convs, downsample })
    }

    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut ys = xs.clone();
        let last = self.convs.len() - 1;
        for (i, (c, bn)) in self.convs.iter().enumerate() {
            let act = if i < last { Act::Relu } else { Act::None };
            ys = bn.forward_conv_act_t(c, &ys, train, act)?;
        }
        crate::kernels::add_relu(&ys, &Downsample::shortcut(&self.downsample, xs, train)?)
    }
}

#[derive(Clone, Copy, Debug)]
enum BlockKind {
    Basic,
    Bottleneck,
}

#[derive(Clone, Debug)]
pub struct ResNet {
    conv1: Conv2d,
    bn1: BatchNorm,
    stem: ResolvedStem,
    layers: Vec<Block>,
    fc: Option<Linear>,
    feature_dim: usize,
}

impl ResNet {
    /// ResNet-18/34/50 (`arch`) with `top`; another arch is an error.
    pub(crate) fn for_arch(
        arch: Arch,
        in_channels: usize,
        stem: ResolvedStem,
        top: Top,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let (kind, depths) = match arch {
            Arch::Resnet18 => (BlockKind::Basic, [2, 2, 2, 2]),
            Arch::Resnet34 => (BlockKind::Basic, [3, 4, 6, 3]),
            Arch::Resnet50 => (BlockKind::Bottleneck, [3, 4, 6, 3]),
            other => candle_core::bail!("{other} is not a ResNet"),
        };
        Self::new(kind, depths, in_channels, stem, top, vb)
    }

    fn new(
        kind: BlockKind,
        depths: [usize; 4],
        in_channels: usize,
        stem: ResolvedStem,
        top: Top,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let (kernel, stride) = match stem {
            ResolvedStem::Imagenet => (7, 2),
            ResolvedStem::Small => (3, 1),
        };
        let conv1 = conv(in_channels, 64, kernel, stride, vb.pp("conv1"))?;
        let bn1 = batch_norm(64, vb.pp("bn1"))?;
        let expansion = match kind {
            BlockKind::Basic => 1,
            BlockKind::Bottleneck => 4,
        };
        let mut layers = Vec::new();
        let mut c_in = 64;
        for (stage, &depth) in depths.iter().enumerate() {
            let planes = 64 << stage;
            let vb = vb.pp(format!("layer{}", stage + 1));
            for i in 0..depth {
                let stride = if stage > 0 && i == 0 { 2 } else { 1 };
                let vb = vb.pp(i.to_string());
                layers.push(match kind {
                    BlockKind::Basic => Block::basic(c_in, planes, stride, vb)?,
                    BlockKind::Bottleneck => Block::bottleneck(c_in, planes, stride, vb)?,
                });
                c_in = planes * expansion;
            }
        }
        let fc = top.linear(c_in, vb.pp("fc"))?;
        Ok(ResNet {
            conv1,
            bn1,
            stem,
            layers,
            fc,
            feature_dim: c_in,
        })
    }
}

impl Student for ResNet {
    fn feature_map(&self, xs: &Tensor, pass: Pass) -> candle_core::Result<Tensor> {
        let train = pass.training();
        let mut xs = self
            .bn1
            .forward_conv_act_t(&self.conv1, xs, train, Act::Relu)?;
        if self.stem == ResolvedStem::Imagenet {
            xs = crate::kernels::max_pool2d(&xs, 3, 2, 1)?;
        }
        for block in &self.layers {
            xs = block.forward_t(&xs, train)?;
        }
        Ok(xs)
    }

    fn feature_map_channels(&self) -> usize {
        self.feature_dim
    }

    fn features(&self, xs: &Tensor, pass: Pass) -> candle_core::Result<Tensor> {
        global_avg_pool(&self.feature_map(xs, pass)?)?.flatten_from(1)
    }

    fn head(&self, feats: &Tensor) -> candle_core::Result<Tensor> {
        apply_head(&self.fc, feats)
    }

    fn feature_dim(&self) -> usize {
        self.feature_dim
    }
}

/// ResNet-18: basic blocks [2, 2, 2, 2], 512-d features.
pub fn resnet18(
    in_channels: usize,
    stem: ResolvedStem,
    num_outputs: usize,
    vb: VarBuilder,
) -> candle_core::Result<ResNet> {
    ResNet::for_arch(
        Arch::Resnet18,
        in_channels,
        stem,
        Top::Head { num_outputs },
        vb,
    )
}

/// ResNet-34: basic blocks [3, 4, 6, 3], 512-d features.
pub fn resnet34(
    in_channels: usize,
    stem: ResolvedStem,
    num_outputs: usize,
    vb: VarBuilder,
) -> candle_core::Result<ResNet> {
    ResNet::for_arch(
        Arch::Resnet34,
        in_channels,
        stem,
        Top::Head { num_outputs },
        vb,
    )
}

/// ResNet-50: bottlenecks [3, 4, 6, 3], 2048-d features.
pub fn resnet50(
    in_channels: usize,
    stem: ResolvedStem,
    num_outputs: usize,
    vb: VarBuilder,
) -> candle_core::Result<ResNet> {
    ResNet::for_arch(
        Arch::Resnet50,
        in_channels,
        stem,
        Top::Head { num_outputs },
        vb,
    )
}

#[cfg(test)]
mod tests {
    use super::super::tests::{
        build_in_varmap, check_shape_and_gradients, imagenet_param_count, param_shape, trainable,
    };
    use super::super::{Arch, Stem, StudentSpec};

    fn spec(arch: Arch, stem: Stem) -> StudentSpec {
        StudentSpec {
            arch,
            in_channels: 3,
            stem,
        }
    }

    #[test]
    fn parameter_counts_equal_torchvision() {
        assert_eq!(imagenet_param_count(Arch::Resnet18).0, 11_689_512);
        assert_eq!(imagenet_param_count(Arch::Resnet34).0, 21_797_672);
        assert_eq!(imagenet_param_count(Arch::Resnet50).0, 25_557_032);
    }

    #[test]
    fn tensor_names_and_shapes_are_torchvision_keys() {
        let (varmap, _) = build_in_varmap(&spec(Arch::Resnet50, Stem::Imagenet), 224, 1000);
        let shape = |n: &str| param_shape(&varmap, n);
        assert_eq!(shape("conv1.weight"), [64, 3, 7, 7]);
        assert_eq!(shape("bn1.running_var"), [64]);
        assert_eq!(shape("layer1.0.conv1.weight"), [64, 64, 1, 1]);
        assert_eq!(shape("layer1.0.downsample.0.weight"), [256, 64, 1, 1]);
        assert_eq!(shape("layer1.0.downsample.1.bias"), [256]);
        assert_eq!(shape("layer2.0.conv2.weight"), [128, 128, 3, 3]);
        assert_eq!(shape("layer4.2.bn3.weight"), [2048]);
        assert_eq!(shape("fc.weight"), [1000, 2048]);
        assert_eq!(shape("fc.bias"), [1000]);
        assert!(varmap
            .data()
            .lock()
            .unwrap()
            .get("layer1.1.downsample.0.weight")
            .is_none());

        let (varmap, _) = build_in_varmap(&spec(Arch::Resnet18, Stem::Small), 32, 12);
        let names: Vec<String> = trainable(&varmap).into_iter().map(|(n, _)| n).collect();
        assert!(names.contains(&"layer2.0.downsample.0.weight".to_string()));
        assert!(!names.iter().any(|n| n.starts_with("layer1.0.downsample")));
        assert!(!names.iter().any(|n| n.contains("conv3")));
        let data = varmap.data().lock().unwrap();
        assert_eq!(data["conv1.weight"].as_tensor().dims(), [64, 3, 3, 3]);
    }

    #[test]
    fn resnet18_small_stem_shapes_and_gradients() {
        check_shape_and_gradients(&spec(Arch::Resnet18, Stem::Small), 2, 16);
    }

    #[test]
    fn resnet18_imagenet_stem_trains_through_the_strided_max_pool() {
        // 64 px: stem → 32 → pool 16 → layer4 2×2
        check_shape_and_gradients(&spec(Arch::Resnet18, Stem::Imagenet), 2, 64);
    }

    #[test]
    fn resnet34_shapes_and_gradients() {
        check_shape_and_gradients(&spec(Arch::Resnet34, Stem::Small), 2, 16);
    }

    #[test]
    fn resnet50_shapes_and_gradients() {
        check_shape_and_gradients(&spec(Arch::Resnet50, Stem::Small), 2, 16);
    }
}
