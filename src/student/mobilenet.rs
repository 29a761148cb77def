//! MobileNet V1 and V2 (in progress).

use candle_nn::VarBuilder;

use super::{ResolvedStem, Student};

pub fn mobilenet_v1(
    _in_channels: usize,
    _stem: ResolvedStem,
    _num_outputs: usize,
    _vb: VarBuilder,
) -> candle_core::Result<Box<dyn Student>> {
    candle_core::bail!("mobilenet-v1 is not built yet")
}

pub fn mobilenet_v2(
    _in_channels: usize,
    _stem: ResolvedStem,
    _num_outputs: usize,
    _vb: VarBuilder,
) -> candle_core::Result<Box<dyn Student>> {
    candle_core::bail!("mobilenet-v2 is not built yet")
}
