//! The detector student: CenterNet (Zhou, Wang, Krähenbühl, "Objects as Points", arXiv
//! 1904.07850) at a single output stride of 4, on a backbone from the student zoo.
//!
//! ```text
//! image [N, in, H, W]
//!   → backbone feature map [N, F, H/d, W/d]          (d = Arch::downsampling, the zoo's trunk)
//!   → context, only where d < 16: log2(16/d) × (max-pool 2 → conv 3×3 → BN → ReLU), then back
//!     up as many times: nearest ×2 + the map of that stride      → [N, F, H/d, W/d]
//!   → neck: log2(d/4) × (conv 3×3 → BN → ReLU → nearest ×2)   → [N, neck, H/4, W/4]
//!   → heads, each conv 3×3 → ReLU → conv 1×1:
//!       heatmap [N, C, H/4, W/4] (logits; bias −2.19 so every cell starts at p ≈ 0.1)
//!       size    [N, 2, H/4, W/4] (w, h in output cells)
//!       offset  [N, 2, H/4, W/4] (x, y sub-cell offset of the centre)
//!   aspect head, by AspectMode:
//!       image:  global average of the backbone map → linear → [N, Q]
//!       object: conv 3×3 → ReLU → conv 1×1 → [N, Q, H/4, W/4], read at each object's centre
//! ```
//!
//! Why the context stages: the small CNN stops at stride 4 with a receptive field of about 26 px,
//! so a cell at the centre of a 48-px garment sees neither its edges (its size) nor its outline
//! (its class). Two pooled 3×3 stages widen that to about 90 px at a tenth of the step's cost; a
//! backbone that already reaches stride 16 (all but the CNN and the small-stem ResNets) needs
//! none.
//!
//! The backbone is built with [`crate::student::build_backbone`], so none of the classifier's
//! variables exist. Every conv and BatchNorm runs on [`crate::kernels`]; the upsampling is a
//! reshape/broadcast (its backward is candle's sum over the broadcast axes), so no candle pool
//! backward is involved. Variable names: `backbone.*` (the zoo's), `context.{i}.{0,1}`,
//! `neck.{i}.{0,1}`,
//! `{heatmap,size,offset}.{0,2}` (CenterNet's `hm`/`wh`/`reg` layout: conv `.0`, conv `.2`),
//! `aspect.{0,2}` (object) or `aspect` (image, a linear layer).

use candle_core::{Module, Tensor};
use candle_nn::{Conv2dConfig, Linear, VarBuilder};
use serde::{Deserialize, Serialize};

use crate::error::{self, Result};
use crate::kernels::Conv2d;
use crate::student::{self, ConvBnAct, Pass, Student, StudentSpec};

pub use crate::train::config::AspectMode;

/// What to build; saved with the run like [`StudentSpec`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CenterNetSpec {
    pub backbone: StudentSpec,
    /// Channels of every neck stage (unused when the backbone's stride is already 4).
    pub neck_channels: usize,
    /// Channels of the 3×3 conv of every head.
    pub head_channels: usize,
    pub aspect_mode: AspectMode,
}

impl Default for CenterNetSpec {
    fn default() -> Self {
        CenterNetSpec {
            backbone: StudentSpec::default(),
            neck_channels: 64,
            head_channels: 64,
            aspect_mode: AspectMode::Image,
        }
    }
}

/// What one forward pass gives. `h = H / 4`, `w = W / 4`.
#[derive(Clone, Debug)]
pub struct Outputs {
    /// Class heatmap logits `[N, C, h, w]`.
    pub heatmap: Tensor,
    /// Box width and height in output cells `[N, 2, h, w]`.
    pub size: Tensor,
    /// Centre offset within its cell (x, y) `[N, 2, h, w]`.
    pub offset: Tensor,
    /// Aspect logits: `[N, Q]` in image mode, `[N, Q, h, w]` in object mode; none without
    /// aspects.
    pub aspects: Option<Tensor>,
}

/// conv 3×3 (with bias) → ReLU → conv 1×1 (with bias).
#[derive(Clone, Debug)]
struct Head {
    hidden: Conv2d,
    out: Conv2d,
}

fn conv_with_bias(
    c_in: usize,
    c_out: usize,
    kernel: usize,
    bias_init: Option<f64>,
    vb: VarBuilder,
) -> candle_core::Result<Conv2d> {
    let cfg = Conv2dConfig {
        padding: (kernel - 1) / 2,
        stride: 1,
        dilation: 1,
        groups: 1,
        cudnn_fwd_algo: None,
    };
    match bias_init {
        None => crate::kernels::conv2d_layer(c_in, c_out, kernel, cfg, vb),
        Some(b) => {
            let conv = crate::kernels::conv2d_no_bias_layer(c_in, c_out, kernel, cfg, vb.clone())?;
            let bias = vb.get_with_hints(c_out, "bias", candle_nn::Init::Const(b))?;
            Ok(Conv2d::new(conv.weight().clone(), Some(bias), cfg))
        }
    }
}

impl Head {
    fn new(
        c_in: usize,
        hidden: usize,
        c_out: usize,
        out_bias: Option<f64>,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        Ok(Head {
            hidden: conv_with_bias(c_in, hidden, 3, None, vb.pp("0"))?,
            out: conv_with_bias(hidden, c_out, 1, out_bias, vb.pp("2"))?,
        })
    }

    fn forward(&self, xs: &Tensor) -> candle_core::Result<Tensor> {
        self.out.forward(&self.hidden.forward(xs)?.relu()?)
    }
}

#[derive(Clone, Debug)]
enum AspectHead {
    Image(Linear),
    Object(Head),
}

/// CenterNet's heatmap bias: −ln((1 − 0.1) / 0.1), so the focal loss starts from p ≈ 0.1
/// everywhere instead of 0.5 (which would swamp the first steps with background loss).
const HEATMAP_BIAS: f64 = -2.19;

pub struct CenterNet {
    backbone: Box<dyn Student>,
    context: Vec<ConvBnAct>,
    neck: Vec<ConvBnAct>,
    heatmap: Head,
    size: Head,
    offset: Head,
    aspect: Option<AspectHead>,
    aspect_mode: AspectMode,
    num_classes: usize,
    num_aspects: usize,
}

/// Nearest-neighbour ×2 upsampling of `[N, C, H, W]`, as a broadcast so that candle's autograd
/// differentiates it (the gradient sums each 2×2 block).
pub fn upsample_nearest2(xs: &Tensor) -> candle_core::Result<Tensor> {
    let (n, c, h, w) = xs.dims4()?;
    xs.reshape((n, c, h, 1, w, 1))?
        .broadcast_as((n, c, h, 2, w, 2))?
        .contiguous()?
        .reshape((n, c, 2 * h, 2 * w))
}

impl CenterNet {
    /// Output stride: heatmap cells per input pixel.
    pub const STRIDE: usize = 4;
    /// The coarsest stride the context stages reach.
    pub const CONTEXT_STRIDE: usize = 16;

    /// Build for square images of side `image_size` (a multiple of the backbone's downsampling),
    /// `num_classes` heatmap channels and `num_aspects` aspect logits (0: no aspect head).
    pub fn new(
        spec: &CenterNetSpec,
        image_size: usize,
        num_classes: usize,
        num_aspects: usize,
        vb: VarBuilder,
    ) -> Result<CenterNet> {
        if num_classes == 0 {
            return Err(error::input(
                "the detector would have 0 classes",
                "detector",
                "check the dataset's category list",
            ));
        }
        if spec.neck_channels == 0 || spec.head_channels == 0 {
            return Err(error::input(
                format!(
                    "neck_channels = {} and head_channels = {} must both be at least 1",
                    spec.neck_channels, spec.head_channels
                ),
                "detector",
                "the defaults are 64 and 64",
            ));
        }
        let stem = spec.backbone.stem.resolve(image_size);
        let down = spec.backbone.arch.downsampling(stem);
        if down < Self::STRIDE || !down.is_power_of_two() {
            return Err(error::input(
                format!(
                    "{} downsamples {down}×, less than the detector's output stride {}",
                    spec.backbone.arch,
                    Self::STRIDE
                ),
                "student.arch",
                "use a backbone that downsamples at least 4× (every zoo arch does)",
            ));
        }
        let coarsest = down.max(Self::CONTEXT_STRIDE);
        if !image_size.is_multiple_of(coarsest) {
            return Err(error::input(
                format!(
                    "image size {image_size} px is not a multiple of {coarsest}, the coarsest \
                     stride of a detector on {} ({down}× in the backbone, {}× in the context)",
                    spec.backbone.arch,
                    Self::CONTEXT_STRIDE
                ),
                "student.arch",
                format!(
                    "resize the images to a multiple of {coarsest} px so the upsampled maps line \
                     up with the stride-{} targets",
                    Self::STRIDE
                ),
            ));
        }
        let backbone = student::build_backbone(&spec.backbone, image_size, vb.pp("backbone"))?;
        let f = backbone.feature_map_channels();
        let context = (0..(coarsest / down).trailing_zeros() as usize)
            .map(|i| ConvBnAct::conv3_relu(f, f, vb.pp("context").pp(i.to_string())))
            .collect::<candle_core::Result<Vec<_>>>()?;
        let stages = (down / Self::STRIDE).trailing_zeros() as usize;
        let mut neck = Vec::with_capacity(stages);
        let mut c = backbone.feature_map_channels();
        for i in 0..stages {
            neck.push(ConvBnAct::conv3_relu(
                c,
                spec.neck_channels,
                vb.pp("neck").pp(i.to_string()),
            )?);
            c = spec.neck_channels;
        }
        let hc = spec.head_channels;
        let heatmap = Head::new(c, hc, num_classes, Some(HEATMAP_BIAS), vb.pp("heatmap"))?;
        let size = Head::new(c, hc, 2, None, vb.pp("size"))?;
        let offset = Head::new(c, hc, 2, None, vb.pp("offset"))?;
        let aspect = match (num_aspects, spec.aspect_mode) {
            (0, _) => None,
            (q, AspectMode::Image) => Some(AspectHead::Image(candle_nn::linear(
                backbone.feature_map_channels(),
                q,
                vb.pp("aspect"),
            )?)),
            (q, AspectMode::Object) => Some(AspectHead::Object(Head::new(
                c,
                hc,
                q,
                None,
                vb.pp("aspect"),
            )?)),
        };
        Ok(CenterNet {
            backbone,
            context,
            neck,
            heatmap,
            size,
            offset,
            aspect,
            aspect_mode: spec.aspect_mode,
            num_classes,
            num_aspects,
        })
    }

    pub fn forward(&self, xs: &Tensor, pass: Pass) -> candle_core::Result<Outputs> {
        let train = pass.training();
        let map = self.context(self.backbone.feature_map(xs, pass)?, train)?;
        let mut ys = map.clone();
        for stage in &self.neck {
            ys = upsample_nearest2(&stage.forward_t(&ys, train)?)?;
        }
        let aspects = match &self.aspect {
            None => None,
            Some(AspectHead::Image(linear)) => {
                let pooled = map.mean_keepdim((2, 3))?.flatten_from(1)?;
                Some(linear.forward(&pooled)?)
            }
            Some(AspectHead::Object(head)) => Some(head.forward(&ys)?),
        };
        Ok(Outputs {
            heatmap: self.heatmap.forward(&ys)?,
            size: self.size.forward(&ys)?,
            offset: self.offset.forward(&ys)?,
            aspects,
        })
    }

    /// The backbone map with the context of the coarser strides added (itself when the backbone
    /// already reaches [`Self::CONTEXT_STRIDE`]).
    fn context(&self, map: Tensor, train: bool) -> candle_core::Result<Tensor> {
        let mut finer = Vec::with_capacity(self.context.len());
        let mut xs = map;
        for stage in &self.context {
            let pooled = crate::kernels::max_pool2d(&xs, 2, 2, 0)?;
            finer.push(xs);
            xs = stage.forward_t(&pooled, train)?;
        }
        // The mean, not the sum, of the two maps: both are BN → ReLU outputs, and a plain sum
        // starts the heads at about twice the scale per stage (measured: half the mAP after 3
        // epochs on 3000 scenes, against +40 % for the mean).
        for skip in finer.into_iter().rev() {
            xs = ((upsample_nearest2(&xs)? + skip)? * 0.5)?;
        }
        Ok(xs)
    }

    pub fn aspect_mode(&self) -> AspectMode {
        self.aspect_mode
    }

    pub fn num_classes(&self) -> usize {
        self.num_classes
    }

    pub fn num_aspects(&self) -> usize {
        self.num_aspects
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::student::{is_running_stat, Arch, Stem};
    use candle_core::{DType, Device, Var};
    use candle_nn::VarMap;

    pub(crate) fn build(
        arch: Arch,
        mode: AspectMode,
        image: usize,
        classes: usize,
        aspects: usize,
    ) -> (VarMap, CenterNet) {
        build_with_stem(arch, Stem::Small, mode, image, classes, aspects)
    }

    pub(crate) fn build_with_stem(
        arch: Arch,
        stem: Stem,
        mode: AspectMode,
        image: usize,
        classes: usize,
        aspects: usize,
    ) -> (VarMap, CenterNet) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let spec = CenterNetSpec {
            backbone: StudentSpec {
                arch,
                in_channels: 1,
                stem,
            },
            aspect_mode: mode,
            ..CenterNetSpec::default()
        };
        let net = CenterNet::new(&spec, image, classes, aspects, vb).unwrap();
        (varmap, net)
    }

    pub(crate) fn trainable(varmap: &VarMap) -> Vec<(String, Var)> {
        let data = varmap.data().lock().unwrap();
        let mut vars: Vec<(String, Var)> = data
            .iter()
            .filter(|(n, _)| !is_running_stat(n))
            .map(|(n, v)| (n.clone(), v.clone()))
            .collect();
        vars.sort_by(|a, b| a.0.cmp(&b.0));
        vars
    }

    pub(crate) fn param_count(varmap: &VarMap) -> usize {
        trainable(varmap)
            .iter()
            .map(|(_, v)| v.as_tensor().elem_count())
            .sum()
    }

    #[test]
    fn aspect_mode_round_trips_and_spec_rejects_unknown_keys() {
        for (mode, name) in [(AspectMode::Image, "image"), (AspectMode::Object, "object")] {
            assert_eq!(mode.to_string(), name);
            assert_eq!(name.parse::<AspectMode>().unwrap(), mode);
            assert_eq!(serde_json::to_string(&mode).unwrap(), format!("\"{name}\""));
        }
        assert_eq!("Image".parse::<AspectMode>().unwrap_err().exit_code(), 2);
        let spec: CenterNetSpec = toml::from_str("aspect_mode = \"object\"").unwrap();
        assert_eq!(spec.aspect_mode, AspectMode::Object);
        assert_eq!((spec.neck_channels, spec.head_channels), (64, 64));
        assert!(toml::from_str::<CenterNetSpec>("neck = 3").is_err());
    }

    #[test]
    fn upsample_repeats_each_cell_and_sums_its_gradient() {
        let x = Var::from_vec(vec![1f32, 2., 3., 4.], (1, 1, 2, 2), &Device::Cpu).unwrap();
        let y = upsample_nearest2(x.as_tensor()).unwrap();
        assert_eq!(
            y.squeeze(0)
                .unwrap()
                .squeeze(0)
                .unwrap()
                .to_vec2::<f32>()
                .unwrap(),
            vec![
                vec![1., 1., 2., 2.],
                vec![1., 1., 2., 2.],
                vec![3., 3., 4., 4.],
                vec![3., 3., 4., 4.]
            ]
        );
        let w = Tensor::arange(0f32, 16., &Device::Cpu)
            .unwrap()
            .reshape((1, 1, 4, 4))
            .unwrap();
        let g = (y * w).unwrap().sum_all().unwrap().backward().unwrap();
        let g: Vec<f32> = g
            .get(x.as_tensor())
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        // block sums of 0..16 laid out 4×4
        assert_eq!(
            g,
            vec![
                0. + 1. + 4. + 5.,
                2. + 3. + 6. + 7.,
                8. + 9. + 12. + 13.,
                10. + 11. + 14. + 15.
            ]
        );
    }

    #[test]
    fn output_shapes_every_arch_and_no_classifier_variables() {
        for arch in Arch::ALL {
            let (varmap, net) = build(arch, AspectMode::Object, 32, 3, 5);
            let xs = crate::student::tests::test_input(&[2, 1, 32, 32]);
            let out = net.forward(&xs, Pass::Eval).unwrap();
            assert_eq!(out.heatmap.dims(), &[2, 3, 8, 8], "{arch}");
            assert_eq!(out.size.dims(), &[2, 2, 8, 8]);
            assert_eq!(out.offset.dims(), &[2, 2, 8, 8]);
            assert_eq!(out.aspects.unwrap().dims(), &[2, 5, 8, 8]);
            let names: Vec<String> = trainable(&varmap).into_iter().map(|(n, _)| n).collect();
            assert!(
                !names
                    .iter()
                    .any(|n| n.starts_with("backbone.fc") || n.contains("classifier")),
                "{arch}: {names:?}"
            );
            let neck = names
                .iter()
                .filter(|n| n.ends_with(".0.weight") && n.starts_with("neck."))
                .count();
            let down = arch.downsampling(crate::student::ResolvedStem::Small);
            assert_eq!(1 << neck, down / 4, "{arch}: neck stages");
            let context = names
                .iter()
                .filter(|n| n.ends_with(".0.weight") && n.starts_with("context."))
                .count();
            assert_eq!(down << context, down.max(16), "{arch}: context stages");
        }
        let (_, net) = build(Arch::Resnet18, AspectMode::Image, 32, 2, 4);
        let out = net
            .forward(
                &crate::student::tests::test_input(&[3, 1, 32, 32]),
                Pass::Eval,
            )
            .unwrap();
        assert_eq!(out.aspects.unwrap().dims(), &[3, 4]);
        let (_, net) = build(Arch::Cnn, AspectMode::Image, 32, 2, 0);
        assert!(net
            .forward(
                &crate::student::tests::test_input(&[1, 1, 32, 32]),
                Pass::Eval
            )
            .unwrap()
            .aspects
            .is_none());
    }

    #[test]
    fn heatmap_bias_starts_at_p_one_tenth() {
        let (varmap, _) = build(Arch::Cnn, AspectMode::Image, 16, 3, 0);
        let data = varmap.data().lock().unwrap();
        let b: Vec<f32> = data["heatmap.2.bias"].as_tensor().to_vec1().unwrap();
        assert_eq!(b, vec![-2.19f32; 3]);
    }

    #[test]
    fn bad_sizes_are_input_errors() {
        let vb = VarBuilder::zeros(DType::F32, &Device::Cpu);
        let spec_of = |arch| CenterNetSpec {
            backbone: StudentSpec {
                arch,
                in_channels: 1,
                stem: Stem::Small,
            },
            ..CenterNetSpec::default()
        };
        let spec = spec_of(Arch::Resnet18);
        let e = CenterNet::new(&spec, 60, 2, 0, vb.clone()).err().unwrap();
        assert_eq!(e.exit_code(), 2);
        assert!(e.report().contains("multiple of 16"), "{}", e.report());
        // the small CNN only downsamples 4×, but its context stages pool twice more
        let cnn = spec_of(Arch::Cnn);
        let e = CenterNet::new(&cnn, 56, 2, 0, vb.clone()).err().unwrap();
        assert!(e.report().contains("multiple of 16"), "{}", e.report());
        assert!(CenterNet::new(&cnn, 48, 2, 0, vb.clone()).is_ok());
        let e = CenterNet::new(&spec, 64, 0, 0, vb).err().unwrap();
        assert_eq!(e.exit_code(), 2);
    }

    /// Parameter counts at 64 px, 10 classes, no aspects, by layer: the backbone's trunk plus
    /// the neck and the three heads.
    #[test]
    fn parameter_counts_at_64_px() {
        let head = |c_in: usize, out: usize| c_in * 64 * 9 + 64 + 64 * out + out;
        let heads = |c_in: usize| head(c_in, 10) + head(c_in, 2) + head(c_in, 2);
        let (varmap, _) = build(Arch::Cnn, AspectMode::Image, 64, 10, 0);
        let cnn_trunk = 9 * 32 + 32 * 64 * 9 + 64 * 128 * 9 + 2 * (32 + 64 + 128);
        let context = |c: usize, stages: usize| stages * (c * c * 9 + 2 * c);
        assert_eq!(
            param_count(&varmap),
            cnn_trunk + context(128, 2) + heads(128)
        );
        let (varmap, _) = build(Arch::Resnet18, AspectMode::Image, 64, 10, 0);
        // ResNet-18 trunk (small stem, gray): torchvision's count minus its 7×7 RGB stem and fc.
        let trunk = 11_689_512 - 64 * 3 * 49 - (512 * 1000 + 1000) + 64 * 9;
        let neck = 512 * 64 * 9 + 2 * 64;
        assert_eq!(
            param_count(&varmap),
            trunk + context(512, 1) + neck + heads(64)
        );
    }

    /// The centre cell of the heatmap depends on pixels 30 px away, beyond the small CNN's own
    /// receptive field (about 26 px wide): the context stages are what gives it the whole object.
    #[test]
    fn context_widens_the_cnn_receptive_field() {
        let (_, net) = build(Arch::Cnn, AspectMode::Image, 64, 2, 0);
        let x = Var::from_tensor(&crate::student::tests::test_input(&[1, 1, 64, 64])).unwrap();
        let out = net.forward(x.as_tensor(), Pass::Eval).unwrap();
        // cell (8, 8) covers pixels 32..36
        let centre = out
            .heatmap
            .narrow(2, 8, 1)
            .unwrap()
            .narrow(3, 8, 1)
            .unwrap();
        let g = centre.sum_all().unwrap().backward().unwrap();
        let g = g
            .get(x.as_tensor())
            .unwrap()
            .squeeze(0)
            .unwrap()
            .squeeze(0)
            .unwrap();
        let g: Vec<Vec<f32>> = g.to_vec2().unwrap();
        let far: f32 = (0..6)
            .flat_map(|y| (0..6).map(move |x| (y, x)))
            .map(|(y, x)| g[y][x].abs())
            .sum();
        assert!(far > 0.0, "no gradient from the far corner");
        let inside: f32 = (30..38).map(|i| g[i][i].abs()).sum();
        assert!(inside > 0.0);
    }
}
