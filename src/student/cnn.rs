//! A small CNN for 28×28 / 32×32 gray or RGB images (ours, not from a paper): the default
//! student, sized so candle trains it on a CPU in minutes.
//!
//! ```text
//! features.0: conv 3×3 in→32  - BN - ReLU - max-pool 2   28 → 14
//! features.1: conv 3×3 32→64  - BN - ReLU - max-pool 2   14 → 7
//! features.2: conv 3×3 64→128 - BN - ReLU                 7 → 7
//! flatten [B, 128·7·7] → fc1: Linear(6272, 128) - ReLU → [B, 128] features
//! fc: Linear(128, C + Q), the paper's single C + Q head
//! ```
//!
//! Why this shape: a CPU step's cost is convolution and BatchNorm over the large early maps,
//! both scaling with H·W·C, so the channels double only after each halving of the resolution.
//! The small FC instead of a global average pool keeps where on the 7×7 grid a pattern is
//! (collar vs. hem, sleeve vs. body): with a global pool this net reached only 81% / 85% on
//! Fashion-MNIST after 1 / 2 epochs. fc1 costs one small matmul. Its input size follows the image
//! size (side / 4 after the two floor-mode pools). Each conv is `features.i.0`, its BN
//! `features.i.1` (torchvision's `Conv2dNormActivation`).

use candle_core::{Module, Tensor};
use candle_nn::{Linear, VarBuilder};

use super::{apply_head, ConvBnAct, Pass, Student, Top};

const WIDTHS: [usize; 3] = [32, 64, 128];
const FEATURES: usize = 128;

#[derive(Clone, Debug)]
pub struct SmallCnn {
    convs: Vec<ConvBnAct>,
    /// `fc1` and the head; none for a backbone.
    top: Option<(Linear, Option<Linear>)>,
}

impl SmallCnn {
    /// For square images of side `image_size` (at least 4).
    pub fn new(
        in_channels: usize,
        image_size: usize,
        num_outputs: usize,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        Self::with_top(in_channels, image_size, Top::Head { num_outputs }, vb)
    }

    pub(crate) fn with_top(
        in_channels: usize,
        image_size: usize,
        top: Top,
        vb: VarBuilder,
    ) -> candle_core::Result<Self> {
        let mut convs = Vec::with_capacity(WIDTHS.len());
        let mut c_in = in_channels;
        for (i, &c_out) in WIDTHS.iter().enumerate() {
            let vb = vb.pp("features").pp(i.to_string());
            convs.push(ConvBnAct::conv3_relu(c_in, c_out, vb)?);
            c_in = c_out;
        }
        let side = image_size / 2 / 2;
        let top = match top {
            Top::Head { .. } => Some((
                candle_nn::linear(c_in * side * side, FEATURES, vb.pp("fc1"))?,
                top.linear(FEATURES, vb.pp("fc"))?,
            )),
            Top::Backbone => None,
        };
        Ok(SmallCnn { convs, top })
    }
}

impl Student for SmallCnn {
    fn feature_map(&self, xs: &Tensor, pass: Pass) -> candle_core::Result<Tensor> {
        let train = pass.training();
        let mut xs = xs.clone();
        let last = self.convs.len() - 1;
        for (i, conv) in self.convs.iter().enumerate() {
            xs = conv.forward_t(&xs, train)?;
            if i < last {
                xs = crate::kernels::max_pool2d(&xs, 2, 2, 0)?;
            }
        }
        Ok(xs)
    }

    fn feature_map_channels(&self) -> usize {
        WIDTHS[WIDTHS.len() - 1]
    }

    fn features(&self, xs: &Tensor, pass: Pass) -> candle_core::Result<Tensor> {
        let Some((fc1, _)) = &self.top else {
            candle_core::bail!("this network was built as a backbone, without fc1 and a head")
        };
        fc1.forward(&self.feature_map(xs, pass)?.flatten_from(1)?)?
            .relu()
    }

    fn head(&self, feats: &Tensor) -> candle_core::Result<Tensor> {
        match &self.top {
            Some((_, fc)) => apply_head(fc, feats),
            None => apply_head(&None, feats),
        }
    }

    fn feature_dim(&self) -> usize {
        FEATURES
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{build_in_varmap, check_shape_and_gradients, trainable};
    use super::super::{Arch, Stem, StudentSpec};

    fn spec(in_channels: usize) -> StudentSpec {
        StudentSpec {
            arch: Arch::Cnn,
            in_channels,
            stem: Stem::Auto,
        }
    }

    #[test]
    fn shapes_and_gradients_gray_28_and_rgb_32() {
        check_shape_and_gradients(&spec(1), 3, 28);
        check_shape_and_gradients(&spec(3), 2, 32);
        // odd side: the max-pools floor like PyTorch's (27 → 13 → 6)
        check_shape_and_gradients(&spec(1), 2, 27);
    }

    #[test]
    fn parameter_names_and_count() {
        let (varmap, _) = build_in_varmap(&spec(1), 28, 10 + 50);
        let vars = trainable(&varmap);
        let names: Vec<&str> = vars.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(
            names,
            [
                "fc.bias",
                "fc.weight",
                "fc1.bias",
                "fc1.weight",
                "features.0.0.weight",
                "features.0.1.bias",
                "features.0.1.weight",
                "features.1.0.weight",
                "features.1.1.bias",
                "features.1.1.weight",
                "features.2.0.weight",
                "features.2.1.bias",
                "features.2.1.weight",
            ]
        );
        let n: usize = vars.iter().map(|(_, v)| v.as_tensor().elem_count()).sum();
        // convs 1·32·9 + 32·64·9 + 64·128·9, BN 2·(32+64+128), fc1 6272·128 + 128,
        // head 128·60 + 60
        assert_eq!(n, 288 + 18_432 + 73_728 + 448 + 802_816 + 128 + 7_680 + 60);
    }
}
