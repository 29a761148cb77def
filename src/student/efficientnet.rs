//! EfficientNet-B0 (in progress).

use candle_nn::VarBuilder;

use super::{ResolvedStem, Student};

pub fn efficientnet_b0(
    _in_channels: usize,
    _stem: ResolvedStem,
    _num_outputs: usize,
    _vb: VarBuilder,
) -> candle_core::Result<Box<dyn Student>> {
    candle_core::bail!("efficientnet-b0 is not built yet")
}
