//! The student model zoo: the small classifiers that MaKD trains.
//!
//! Every student is a feature extractor followed by ONE linear head with C + Q outputs (the paper's
//! C class logits followed by Q aspect logits). [`build`] turns a [`StudentSpec`] into a boxed
//! [`Student`]; the training loop calls [`Student::forward`] (or [`Student::features`] +
//! [`Student::head`] when it needs the penultimate features, e.g. for feature distillation).
//!
//! | arch | file | paper |
//! |---|---|---|
//! | `cnn` | [`cnn`] | a small 3-conv net for 28×28 / 32×32 images (ours) |
//! | `resnet18/34/50` | [`resnet`] | He et al. 2015, torchvision's v1.5 layout |
//! | `mobilenet-v1` | [`mobilenet`] | Howard et al. 2017 |
//! | `mobilenet-v2` | [`mobilenet`] | Sandler et al. 2018, torchvision layout |
//! | `efficientnet-b0` | [`efficientnet`] | Tan & Le 2019, torchvision layout |
//!
//! Tensor names (`vb.pp` paths) are torchvision's wherever torchvision has the model, so a saved
//! `model.safetensors` lines up name by name with a torchvision `state_dict` (torchvision's
//! `num_batches_tracked` buffers are the only names it has that we do not). Checked once by hand:
//! torchvision's ResNet-18/34/50, MobileNetV2 and EfficientNet-B0 with random weights and
//! randomised BatchNorm statistics, saved to safetensors and loaded here by name, give the same
//! eval-mode outputs to within 1e-6 relative.
//!
//! [`pool`] holds the sliding-window ops (pooling with any kernel/stride/padding, depthwise
//! convolution) that candle 0.11 cannot train as shipped.

pub mod cnn;
pub mod efficientnet;
pub mod mobilenet;
pub mod resnet;

use std::fmt;
use std::str::FromStr;

use crate::kernels::BatchNorm;
use candle_core::{Module, Tensor};
use candle_nn::{BatchNormConfig, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{self, Result};

/// Which student network to build.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Arch {
    Cnn,
    Resnet18,
    Resnet34,
    Resnet50,
    MobilenetV1,
    MobilenetV2,
    EfficientnetB0,
}

impl Arch {
    pub const ALL: [Arch; 7] = [
        Arch::Cnn,
        Arch::Resnet18,
        Arch::Resnet34,
        Arch::Resnet50,
        Arch::MobilenetV1,
        Arch::MobilenetV2,
        Arch::EfficientnetB0,
    ];

    /// The name used in configs and on the command line (same as the serde form).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Cnn => "cnn",
            Arch::Resnet18 => "resnet18",
            Arch::Resnet34 => "resnet34",
            Arch::Resnet50 => "resnet50",
            Arch::MobilenetV1 => "mobilenet-v1",
            Arch::MobilenetV2 => "mobilenet-v2",
            Arch::EfficientnetB0 => "efficientnet-b0",
        }
    }

    /// Total spatial downsampling from the input to the last feature map. An image smaller than
    /// this leaves the last stages convolving padding only.
    pub fn downsampling(self, stem: ResolvedStem) -> usize {
        match (self, stem) {
            (Arch::Cnn, _) => 4,
            (Arch::Resnet18 | Arch::Resnet34 | Arch::Resnet50, ResolvedStem::Imagenet) => 32,
            (Arch::Resnet18 | Arch::Resnet34 | Arch::Resnet50, ResolvedStem::Small) => 8,
            (_, ResolvedStem::Imagenet) => 32,
            (_, ResolvedStem::Small) => 16,
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Arch {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self> {
        Arch::ALL
            .into_iter()
            .find(|a| a.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Arch::ALL.iter().map(|a| a.name()).collect();
                error::input(
                    format!("unknown student architecture `{s}`"),
                    "student.arch",
                    format!("use one of: {}", names.join(", ")),
                )
            })
    }
}

/// The first layers of the network. ImageNet stems downsample 4× (ResNet: 7×7/2 conv + 3×3/2
/// max-pool) or 2× (MobileNets/EfficientNet: 3×3/2 conv) before the first stage; on 28–64 px
/// images that throws away most of the picture, so the small stem keeps full resolution (ResNet:
/// one 3×3/1 conv and no max-pool, as in the CIFAR ResNets; the others: a stride-1 first conv).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Stem {
    /// Small when the image side is at most 64 px, ImageNet otherwise.
    #[default]
    Auto,
    Imagenet,
    Small,
}

/// A [`Stem`] with `Auto` decided for a given image size.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ResolvedStem {
    Imagenet,
    Small,
}

impl Stem {
    pub fn resolve(self, image_size: usize) -> ResolvedStem {
        match self {
            Stem::Imagenet => ResolvedStem::Imagenet,
            Stem::Small => ResolvedStem::Small,
            Stem::Auto if image_size <= 64 => ResolvedStem::Small,
            Stem::Auto => ResolvedStem::Imagenet,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Stem::Auto => "auto",
            Stem::Imagenet => "imagenet",
            Stem::Small => "small",
        }
    }
}

impl fmt::Display for Stem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Stem {
    type Err = crate::Error;

    fn from_str(s: &str) -> Result<Self> {
        [Stem::Auto, Stem::Imagenet, Stem::Small]
            .into_iter()
            .find(|v| v.name() == s)
            .ok_or_else(|| {
                error::input(
                    format!("unknown stem `{s}`"),
                    "student.stem",
                    "use one of: auto, imagenet, small",
                )
            })
    }
}

/// What to build; saved with the run so a checkpoint can be rebuilt from its own folder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StudentSpec {
    pub arch: Arch,
    /// 1 (gray) or 3 (RGB).
    pub in_channels: usize,
    pub stem: Stem,
}

impl Default for StudentSpec {
    fn default() -> Self {
        StudentSpec {
            arch: Arch::Cnn,
            in_channels: 1,
            stem: Stem::Auto,
        }
    }
}

/// How a forward pass runs: evaluation, or a training step whose dropout masks are drawn from
/// `seed` (the trainer derives it from the run's seed and the step, so a resumed run draws the
/// same masks as an uninterrupted one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pass {
    Eval,
    Train { seed: u64 },
}

impl Pass {
    /// Whether batch statistics (and their running-average update) and dropout are on.
    pub fn training(self) -> bool {
        matches!(self, Pass::Train { .. })
    }
}

/// A classifier split at its penultimate layer, and before that at its last spatial feature map
/// (what a dense head such as the detector's reads).
pub trait Student: Send + Sync {
    /// The last spatial feature map `[B, feature_map_channels, H / d, W / d]` (d =
    /// [`Arch::downsampling`]), before the global pooling (the small CNN: before its flatten).
    fn feature_map(&self, xs: &Tensor, pass: Pass) -> candle_core::Result<Tensor>;

    fn feature_map_channels(&self) -> usize;

    /// Penultimate features `[B, feature_dim]` of images `[B, in_channels, H, W]`.
    fn features(&self, xs: &Tensor, pass: Pass) -> candle_core::Result<Tensor>;

    /// The C + Q head: `[B, feature_dim]` → `[B, num_outputs]`, class logits first.
    fn head(&self, feats: &Tensor) -> candle_core::Result<Tensor>;

    fn forward(&self, xs: &Tensor, pass: Pass) -> candle_core::Result<Tensor> {
        self.head(&self.features(xs, pass)?)
    }

    fn feature_dim(&self) -> usize;
}

/// What a zoo network is built with on top of its feature map.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Top {
    /// The classifier: pooling (the small CNN: flatten + `fc1`) and the C + Q linear head.
    Head { num_outputs: usize },
    /// Nothing: a backbone for a dense head. Its `head` is an error (the small CNN's `features`
    /// too), so no unused variable reaches a checkpoint or the optimizer.
    Backbone,
}

impl Top {
    /// The linear head `c_in → num_outputs` at `vb`, or none for a backbone.
    pub(crate) fn linear(
        self,
        c_in: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Option<candle_nn::Linear>> {
        match self {
            Top::Head { num_outputs } => Ok(Some(candle_nn::linear(c_in, num_outputs, vb)?)),
            Top::Backbone => Ok(None),
        }
    }
}

/// The head of a network built with [`Top::Head`] applied to `feats`.
pub(crate) fn apply_head(
    head: &Option<candle_nn::Linear>,
    feats: &Tensor,
) -> candle_core::Result<Tensor> {
    match head {
        Some(fc) => fc.forward(feats),
        None => candle_core::bail!("this network was built as a backbone, without a head"),
    }
}

/// Build the student `spec` for square images of side `image_size` with `num_outputs` = classes +
/// aspects outputs. Variables are created through `vb` (a `VarMap`-backed builder to train, a
/// safetensors-backed one to load a checkpoint).
pub fn build(
    spec: &StudentSpec,
    image_size: usize,
    num_outputs: usize,
    vb: VarBuilder,
) -> Result<Box<dyn Student>> {
    if num_outputs == 0 {
        return Err(error::input(
            "the student would have 0 outputs",
            "student",
            "the head has classes + aspects outputs: check the dataset's class list",
        ));
    }
    build_top(spec, image_size, Top::Head { num_outputs }, vb)
}

/// Build only the backbone of `spec` (no pooling head, no classifier variables): for a dense
/// head on [`Student::feature_map`], such as the detector's. Its `head` (and the small CNN's
/// `features`) return an error.
pub fn build_backbone(
    spec: &StudentSpec,
    image_size: usize,
    vb: VarBuilder,
) -> Result<Box<dyn Student>> {
    build_top(spec, image_size, Top::Backbone, vb)
}

fn build_top(
    spec: &StudentSpec,
    image_size: usize,
    top: Top,
    vb: VarBuilder,
) -> Result<Box<dyn Student>> {
    if spec.in_channels != 1 && spec.in_channels != 3 {
        return Err(error::input(
            format!("in_channels = {} is not supported", spec.in_channels),
            "student.in_channels",
            "use 1 for gray images or 3 for RGB",
        ));
    }
    let stem = spec.stem.resolve(image_size);
    let factor = spec.arch.downsampling(stem);
    if image_size < factor {
        let hint = match stem {
            ResolvedStem::Imagenet if spec.arch != Arch::Cnn => format!(
                "{} with the ImageNet stem needs images of at least {factor} px; \
                 use stem = \"small\" (or \"auto\") or resize the images",
                spec.arch
            ),
            _ => format!(
                "{} needs images of at least {factor} px; resize the images",
                spec.arch
            ),
        };
        return Err(error::input(
            format!(
                "image size {image_size} px is smaller than {}'s total downsampling ({factor}×)",
                spec.arch
            ),
            "student.arch",
            hint,
        ));
    }
    let c = spec.in_channels;
    let model: Box<dyn Student> = match spec.arch {
        Arch::Cnn => Box::new(cnn::SmallCnn::with_top(c, image_size, top, vb)?),
        Arch::Resnet18 | Arch::Resnet34 | Arch::Resnet50 => {
            Box::new(resnet::ResNet::for_arch(spec.arch, c, stem, top, vb)?)
        }
        Arch::MobilenetV1 => mobilenet::mobilenet_v1_top(c, stem, top, vb)?,
        Arch::MobilenetV2 => mobilenet::mobilenet_v2_top(c, stem, top, vb)?,
        Arch::EfficientnetB0 => efficientnet::efficientnet_b0_top(c, stem, top, vb)?,
    };
    Ok(model)
}

/// Whether a variable name is a BatchNorm running statistic. candle keeps these in the `VarMap`
/// next to the weights (BatchNorm updates them in place), but they are buffers, not parameters:
/// the optimizer, weight decay and parameter counts must skip them.
pub fn is_running_stat(name: &str) -> bool {
    let last = name.rsplit('.').next().unwrap_or(name);
    matches!(last, "running_mean" | "running_var" | "num_batches_tracked")
}

/// BatchNorm with PyTorch's defaults (eps 1e-5, momentum 0.1).
pub(crate) fn batch_norm(channels: usize, vb: VarBuilder) -> candle_core::Result<BatchNorm> {
    crate::kernels::batch_norm_layer(channels, BatchNormConfig::default(), vb)
}

/// A residual block of the MobileNetV2/EfficientNet family.
pub(crate) trait Block: Send + Sync {
    fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor>;
}

/// The MobileNetV2/EfficientNet body and head: stem conv, blocks, 1×1 conv to `dim` channels,
/// global average pool, dropout `p` (torchvision's `classifier.0`) while training, linear head.
pub(crate) struct PooledNet<B> {
    pub first: ConvBnAct,
    pub blocks: Vec<B>,
    pub last: ConvBnAct,
    pub classifier: Option<candle_nn::Linear>,
    pub dropout: f32,
    pub dim: usize,
}

impl<B: Block> Student for PooledNet<B> {
    fn feature_map(&self, xs: &Tensor, pass: Pass) -> candle_core::Result<Tensor> {
        let train = pass.training();
        let mut xs = self.first.forward_t(xs, train)?;
        for block in &self.blocks {
            xs = block.forward_t(&xs, train)?;
        }
        self.last.forward_t(&xs, train)
    }

    fn feature_map_channels(&self) -> usize {
        self.dim
    }

    fn features(&self, xs: &Tensor, pass: Pass) -> candle_core::Result<Tensor> {
        pooled_features(&self.feature_map(xs, pass)?, self.dropout, pass)
    }

    fn head(&self, feats: &Tensor) -> candle_core::Result<Tensor> {
        apply_head(&self.classifier, feats)
    }

    fn feature_dim(&self) -> usize {
        self.dim
    }
}

/// Global average pool, then dropout `p` while training.
fn pooled_features(xs: &Tensor, p: f32, pass: Pass) -> candle_core::Result<Tensor> {
    let feats = global_avg_pool(xs)?.flatten_from(1)?;
    match pass {
        Pass::Train { seed } => dropout(&feats, p, seed),
        Pass::Eval => Ok(feats),
    }
}

/// Inverted dropout with a mask drawn from `seed` (candle's draws from an unseeded RNG, which
/// would make a resumed run diverge from an uninterrupted one): each value is kept with
/// probability `1 - p` and scaled by `1 / (1 - p)`.
pub(crate) fn dropout(xs: &Tensor, p: f32, seed: u64) -> candle_core::Result<Tensor> {
    use rand::{Rng, SeedableRng};
    if !(0.0..1.0).contains(&p) {
        candle_core::bail!("dropout probability {p} is not in [0, 1)");
    }
    if p == 0.0 {
        return Ok(xs.clone());
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let keep = 1.0 / (1.0 - p);
    let mask: Vec<f32> = (0..xs.elem_count())
        .map(|_| if rng.random::<f32>() < p { 0.0 } else { keep })
        .collect();
    let mask = Tensor::from_vec(mask, xs.shape(), xs.device())?.to_dtype(xs.dtype())?;
    xs * mask
}

/// The activation after a conv + BN, fused into the batch norm's kernel.
pub(crate) use crate::kernels::Act;

/// Global average pool, torchvision's `AdaptiveAvgPool2d(1)`: `[N, C, H, W]` → `[N, C, 1, 1]`
/// (kept 4-D because squeeze-excitation multiplies it back onto the feature map).
pub(crate) fn global_avg_pool(x: &Tensor) -> candle_core::Result<Tensor> {
    x.mean_keepdim((2, 3))
}

/// A bias-free convolution; depthwise ones (groups == channels) keep their own weight shape and
/// go to our direct depthwise kernel through [`crate::kernels::conv2d`] (candle would run a
/// grouped conv as one conv per group).
#[derive(Clone, Debug)]
pub(crate) enum Conv {
    Dense(crate::kernels::Conv2d),
    Depthwise {
        weight: Tensor,
        stride: usize,
        padding: usize,
    },
}

impl Conv {
    pub(crate) fn new(
        c_in: usize,
        c_out: usize,
        kernel: usize,
        stride: usize,
        groups: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let padding = (kernel - 1) / 2;
        if groups > 1 && groups == c_in && groups == c_out {
            let weight = vb.get_with_hints(
                (c_out, 1, kernel, kernel),
                "weight",
                candle_nn::init::DEFAULT_KAIMING_NORMAL,
            )?;
            return Ok(Conv::Depthwise {
                weight,
                stride,
                padding,
            });
        }
        let cfg = candle_nn::Conv2dConfig {
            padding,
            stride,
            dilation: 1,
            groups,
            cudnn_fwd_algo: None,
        };
        Ok(Conv::Dense(crate::kernels::conv2d_no_bias_layer(
            c_in, c_out, kernel, cfg, vb,
        )?))
    }
}

impl crate::kernels::BiasFreeConv for Conv {
    fn parts(&self) -> Option<crate::kernels::ConvParts<'_>> {
        match self {
            Conv::Dense(conv) => conv.parts(),
            Conv::Depthwise {
                weight,
                stride,
                padding,
            } => Some(crate::kernels::ConvParts {
                weight,
                stride: *stride,
                padding: *padding,
                groups: weight.dims()[0],
            }),
        }
    }
}

impl Module for Conv {
    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        match self {
            Conv::Dense(conv) => conv.forward(xs),
            Conv::Depthwise {
                weight,
                stride,
                padding,
            } => crate::kernels::conv2d(xs, weight, None, *stride, *padding, weight.dim(0)?),
        }
    }
}

/// conv → BN → activation, torchvision's `Conv2dNormActivation`: the conv is `{prefix}.0`, the
/// BN `{prefix}.1`.
#[derive(Clone, Debug)]
pub(crate) struct ConvBnAct {
    conv: Conv,
    bn: BatchNorm,
    act: Act,
}

/// Shape of a [`ConvBnAct`]: channels in → out, square kernel, stride, groups.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ConvShape {
    pub c_in: usize,
    pub c_out: usize,
    pub kernel: usize,
    pub stride: usize,
    pub groups: usize,
}

impl ConvBnAct {
    pub(crate) fn new(
        shape: ConvShape,
        bn: BatchNormConfig,
        act: Act,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let ConvShape {
            c_in,
            c_out,
            kernel,
            stride,
            groups,
        } = shape;
        let conv = Conv::new(c_in, c_out, kernel, stride, groups, vb.pp("0"))?;
        let bn = crate::kernels::batch_norm_layer(c_out, bn, vb.pp("1"))?;
        Ok(ConvBnAct { conv, bn, act })
    }

    /// conv 3×3 (stride 1, padding 1) → BN → ReLU.
    pub(crate) fn conv3_relu(
        c_in: usize,
        c_out: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let shape = ConvShape {
            c_in,
            c_out,
            kernel: 3,
            stride: 1,
            groups: 1,
        };
        Self::new(shape, BatchNormConfig::default(), Act::Relu, vb)
    }

    pub(crate) fn forward_t(&self, xs: &Tensor, train: bool) -> candle_core::Result<Tensor> {
        self.bn.forward_conv_act_t(&self.conv, xs, train, self.act)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    #[test]
    fn arch_names_round_trip_through_serde_display_and_fromstr() {
        let expected = [
            "cnn",
            "resnet18",
            "resnet34",
            "resnet50",
            "mobilenet-v1",
            "mobilenet-v2",
            "efficientnet-b0",
        ];
        for (arch, name) in Arch::ALL.into_iter().zip(expected) {
            assert_eq!(arch.to_string(), name);
            assert_eq!(name.parse::<Arch>().unwrap(), arch);
            assert_eq!(serde_json::to_string(&arch).unwrap(), format!("\"{name}\""));
            assert_eq!(
                serde_json::from_str::<Arch>(&format!("\"{name}\"")).unwrap(),
                arch
            );
        }
        let err = "resnet-18".parse::<Arch>().unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.report().contains("resnet18"), "{err}");
    }

    #[test]
    fn spec_defaults_and_rejects_unknown_fields() {
        let spec: StudentSpec = toml::from_str("").unwrap();
        assert_eq!(spec, StudentSpec::default());
        assert_eq!(spec.arch, Arch::Cnn);
        assert_eq!(spec.in_channels, 1);
        assert_eq!(spec.stem, Stem::Auto);
        let spec: StudentSpec =
            toml::from_str("arch = \"mobilenet-v2\"\nin_channels = 3\nstem = \"imagenet\"")
                .unwrap();
        assert_eq!(spec.arch, Arch::MobilenetV2);
        assert_eq!(spec.in_channels, 3);
        assert_eq!(spec.stem, Stem::Imagenet);
        assert!(toml::from_str::<StudentSpec>("arch = \"cnn\"\nchannels = 3").is_err());
        assert!(toml::from_str::<StudentSpec>("stem = \"Small\"").is_err());
        assert_eq!("small".parse::<Stem>().unwrap(), Stem::Small);
        assert_eq!(Stem::Imagenet.to_string(), "imagenet");
    }

    #[test]
    fn auto_stem_is_small_up_to_64_px() {
        assert_eq!(Stem::Auto.resolve(28), ResolvedStem::Small);
        assert_eq!(Stem::Auto.resolve(64), ResolvedStem::Small);
        assert_eq!(Stem::Auto.resolve(65), ResolvedStem::Imagenet);
        assert_eq!(Stem::Auto.resolve(224), ResolvedStem::Imagenet);
        assert_eq!(Stem::Small.resolve(224), ResolvedStem::Small);
        assert_eq!(Stem::Imagenet.resolve(32), ResolvedStem::Imagenet);
    }

    #[test]
    fn running_stats_are_not_parameters() {
        assert!(is_running_stat("bn1.running_mean"));
        assert!(is_running_stat("layer1.0.downsample.1.running_var"));
        assert!(is_running_stat("running_var"));
        assert!(!is_running_stat("bn1.weight"));
        assert!(!is_running_stat("fc.bias"));
        assert!(!is_running_stat("my_running_mean_proj.weight"));
    }

    fn build_err(spec: StudentSpec, image_size: usize, outputs: usize) -> String {
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        match build(&spec, image_size, outputs, vb) {
            Ok(_) => panic!("{spec:?} at {image_size} px should be rejected"),
            Err(e) => {
                assert_eq!(e.exit_code(), 2, "{e}");
                e.report()
            }
        }
    }

    #[test]
    fn invalid_combinations_are_input_errors_with_hints() {
        let rgb = |arch, stem| StudentSpec {
            arch,
            in_channels: 3,
            stem,
        };
        let e = build_err(rgb(Arch::Resnet18, Stem::Imagenet), 16, 10);
        assert!(e.contains("32×") && e.contains("stem = \"small\""), "{e}");
        let e = build_err(rgb(Arch::MobilenetV2, Stem::Small), 8, 10);
        assert!(e.contains("16×"), "{e}");
        let e = build_err(rgb(Arch::Cnn, Stem::Auto), 3, 10);
        assert!(e.contains("at least 4 px"), "{e}");
        let e = build_err(rgb(Arch::Cnn, Stem::Auto), 28, 0);
        assert!(e.contains("0 outputs"), "{e}");
        let e = build_err(
            StudentSpec {
                in_channels: 4,
                ..StudentSpec::default()
            },
            28,
            10,
        );
        assert!(e.contains("in_channels = 4") && e.contains("hint:"), "{e}");
    }

    /// Build `spec` into a fresh VarMap with `outputs` outputs.
    pub(crate) fn build_in_varmap(
        spec: &StudentSpec,
        image_size: usize,
        outputs: usize,
    ) -> (VarMap, Box<dyn Student>) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let model = build(spec, image_size, outputs, vb).unwrap();
        (varmap, model)
    }

    pub(crate) fn trainable(varmap: &VarMap) -> Vec<(String, Var)> {
        let data = varmap.data().lock().unwrap();
        let mut vars: Vec<(String, Var)> = data
            .iter()
            .filter(|(name, _)| !is_running_stat(name))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    /// Trainable parameter count of `arch` as torchvision counts it: ImageNet stem, RGB, 1000
    /// classes.
    /// The shape of parameter `name` (a panic naming it when it is absent): the torchvision-key
    /// tests of every model.
    pub(crate) fn param_shape(varmap: &VarMap, name: &str) -> Vec<usize> {
        let data = varmap.data().lock().unwrap();
        data.get(name)
            .unwrap_or_else(|| panic!("missing {name}"))
            .as_tensor()
            .dims()
            .to_vec()
    }

    pub(crate) fn imagenet_param_count(arch: Arch) -> (usize, VarMap) {
        let spec = StudentSpec {
            arch,
            in_channels: 3,
            stem: Stem::Imagenet,
        };
        let (varmap, _model) = build_in_varmap(&spec, 224, 1000);
        let n = trainable(&varmap)
            .iter()
            .map(|(_, v)| v.as_tensor().elem_count())
            .sum();
        (n, varmap)
    }

    /// A deterministic input with distinct values in roughly [-1, 1].
    pub(crate) fn test_input(dims: &[usize]) -> Tensor {
        let n: usize = dims.iter().product();
        let vals: Vec<f32> = (0..n)
            .map(|i| ((i * 7919 + 13) % 2003) as f32 / 1001.5 - 1.0)
            .collect();
        Tensor::from_vec(vals, dims, &Device::Cpu).unwrap()
    }

    #[test]
    fn dropout_is_a_function_of_its_seed() {
        let xs = Tensor::ones((64, 100), candle_core::DType::F32, &Device::Cpu).unwrap();
        let a = dropout(&xs, 0.2, 7).unwrap().to_vec2::<f32>().unwrap();
        let b = dropout(&xs, 0.2, 7).unwrap().to_vec2::<f32>().unwrap();
        let c = dropout(&xs, 0.2, 8).unwrap().to_vec2::<f32>().unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let flat: Vec<f32> = a.concat();
        let kept = flat.iter().filter(|&&v| v != 0.0).count() as f64 / flat.len() as f64;
        assert!((kept - 0.8).abs() < 0.03, "kept {kept}");
        assert!(flat.iter().all(|&v| v == 0.0 || (v - 1.25).abs() < 1e-6));
        assert!(dropout(&xs, 1.0, 0).is_err());
        let feats = Tensor::ones((2, 8, 3, 3), candle_core::DType::F32, &Device::Cpu).unwrap();
        let eval = pooled_features(&feats, 0.5, Pass::Eval).unwrap();
        assert_eq!(eval.to_vec2::<f32>().unwrap(), vec![vec![1.0; 8]; 2]);
    }

    /// Output shape, then one backward pass in which every trainable variable must get a finite,
    /// not-all-zero gradient (a broken pool or depthwise backward leaves the layers before it
    /// at zero).
    pub(crate) fn check_shape_and_gradients(spec: &StudentSpec, batch: usize, image: usize) {
        let outputs = 10 + 7;
        let (varmap, model) = build_in_varmap(spec, image, outputs);
        let xs = test_input(&[batch, spec.in_channels, image, image]);
        let ys = model.forward(&xs, Pass::Train { seed: 1 }).unwrap();
        assert_eq!(ys.dims(), &[batch, outputs]);
        let feats = model.features(&xs, Pass::Eval).unwrap();
        assert_eq!(feats.dims(), &[batch, model.feature_dim()]);
        let map = model.feature_map(&xs, Pass::Eval).unwrap();
        let side = image / spec.arch.downsampling(spec.stem.resolve(image));
        assert_eq!(
            map.dims(),
            &[batch, model.feature_map_channels(), side, side],
            "{}",
            spec.arch
        );
        // A weighted sum reaches every output with a different weight, so no gradient cancels.
        let w = test_input(&[batch, outputs]);
        let loss = (ys * w).unwrap().sum_all().unwrap();
        let grads = loss.backward().unwrap();
        let vars = trainable(&varmap);
        assert!(!vars.is_empty());
        for (name, var) in vars {
            let g = grads
                .get(var.as_tensor())
                .unwrap_or_else(|| panic!("{}: {name} got no gradient", spec.arch));
            let g: Vec<f32> = g.flatten_all().unwrap().to_vec1().unwrap();
            assert!(
                g.iter().all(|v| v.is_finite()),
                "{}: {name} has a non-finite gradient",
                spec.arch
            );
            assert!(
                g.iter().any(|v| *v != 0.0),
                "{}: {name} has an all-zero gradient",
                spec.arch
            );
        }
    }
}
