//! Image preprocessing for Qwen2-VL, Qwen2.5-VL and Qwen3-VL: from a decoded [`RawImage`] to the
//! flat `pixel_values` patches and `image_grid_thw` the vision tower eats, as Hugging Face
//! transformers' `Qwen2VLImageProcessor` makes them.
//!
//! All three model families share one processor. `AutoImageProcessor.from_pretrained(dir)` (and
//! so `AutoProcessor`) resolves a `preprocessor_config.json` naming `Qwen2VLImageProcessor` or
//! `Qwen2VLImageProcessorFast` to the torchvision backend, `Qwen2VLImageProcessor` (transformers
//! 5.x); only where torchvision is missing does it fall back to the PIL backend,
//! `Qwen2VLImageProcessorPil`. This module reproduces the torchvision backend running on CPU:
//!
//! 1. **RGB.** A gray image is replicated to three channels (PIL's `convert("RGB")`).
//! 2. **Size.** [`smart_resize`] picks a height and width that are multiples of
//!    `patch_size * merge_size`, near the input's aspect ratio, with a pixel count in
//!    `[min_pixels, max_pixels]` (`size.shortest_edge` / `size.longest_edge`, or the legacy
//!    top-level `min_pixels` / `max_pixels`, which win when both are given).
//! 3. **Resize.** torchvision's `resize(uint8, BICUBIC, antialias=True)`. On CPU torch resizes
//!    `uint8` natively, in Pillow's design though not with its exact weights: a separable
//!    filter, width pass first, then height pass, each rounded and clamped back to `uint8`; the
//!    bicubic kernel has a = −0.5 and is stretched by the scale when shrinking (that is the
//!    antialiasing); taps past the border are dropped and the rest renormalised. The weights are
//!    fixed point: doubles scaled by 2^p into `i16`, with p as large as the axis's largest weight
//!    allows (at most 22). We compute the same integers, so the resized image is the same, level
//!    for level. The intermediate rounding matters: resizing in float instead moves hard edges
//!    by up to 26 levels.
//! 4. **Rescale and normalise.** torch fuses `x / 255` and `(x − mean) / std` into
//!    `(x − mean·255) / (std·255)` in f32; we do the same arithmetic in the same order (as a
//!    256-entry table per channel), so equal levels give bit-equal floats.
//! 5. **Patches.** The image is cut into `patch_size` squares, ordered by `merge_size ×
//!    merge_size` block (row-major), then row-major within the block; each row is
//!    `[channel][temporal][y][x]` with the single frame repeated `temporal_patch_size` times.
//!    The grid is `(1, height / patch_size, width / patch_size)`.
//!
//! **How close.** Against the fixture in `tests/fixtures/qwen_vl_image` (made by transformers
//! 5.24, torch 2.15, torchvision 0.29 on an AVX-512 CPU: no-resize, downscale, upscale, odd
//! sizes, gray, far over `max_pixels`, and a Qwen2.5-VL file with CLIP mean/std) every
//! `pixel_values` float is bit-identical (max |diff| 0 levels, 0.0 after normalising) and every
//! grid and target size equal. A one-off check of 43 more images (pure noise and structured,
//! 1 to 2000 pixels a side, upscaling up to 14× and downscaling up to 62×, patch 14 and 16,
//! gray and RGB, up to 1080×1920) was bit-identical too; the tests assert exact equality, so
//! any drift shows.
//!
//! **Caveats.** (a) HF on a GPU (`device="cuda"`) resizes in float and rounds, which differs
//! from CPU by up to tens of levels at hard edges; we match CPU, the default. (b) The PIL
//! backend is a different resampler (1–2 levels off on ordinary images, 22 on the gray fixture);
//! we do not follow it. (c) HF composites RGBA onto white before dropping alpha; a
//! [`RawImage`] has already lost alpha when it reaches us. (d) Only `resample: 3` (bicubic) is
//! supported: it is what every Qwen-VL file uses and the class default.

use crate::data::RawImage;
use crate::error::{input, IoContext, Result};
use serde_json::Value;
use std::path::Path;

/// Largest allowed `max(h, w) / min(h, w)`, as in HF's `smart_resize`.
const MAX_ASPECT: f64 = 200.0;

/// HF's `PILImageResampling.BICUBIC`, the only `resample` value supported.
const BICUBIC: u64 = 3;

/// The settings of a parsed `preprocessor_config.json` that the Qwen-VL image processor uses.
///
/// Unknown keys are ignored (the file is Hugging Face's, not ours). Keys whose HF class default is
/// Qwen2-VL's own geometry (`patch_size`, `merge_size`, `temporal_patch_size`, `image_mean`,
/// `image_std`, the pixel bounds) are required: a Qwen3-VL file without them is broken, and
/// silently using 14-pixel patches with CLIP statistics would be wrong. The `do_*` switches,
/// `rescale_factor` and `resample` default as in HF (true, 1/255, bicubic).
#[derive(Clone, Debug, PartialEq)]
pub struct VisionPreprocess {
    /// Side of one square vision patch in pixels (14 for Qwen2/2.5-VL, 16 for Qwen3-VL).
    pub patch_size: usize,
    /// Side of the block of patches merged into one LLM token.
    pub merge_size: usize,
    /// Frames per temporal patch; a still image is repeated this many times.
    pub temporal_patch_size: usize,
    /// Fewest pixels after resizing (`size.shortest_edge`, or legacy `min_pixels`).
    pub min_pixels: usize,
    /// Most pixels after resizing (`size.longest_edge`, or legacy `max_pixels`).
    pub max_pixels: usize,
    pub mean: [f32; 3],
    pub std: [f32; 3],
    /// Multiplies the 0..255 levels before normalising (1/255).
    pub rescale_factor: f64,
    pub do_resize: bool,
    pub do_rescale: bool,
    pub do_normalize: bool,
    /// HF's switch for gray → RGB; the vision tower needs three channels, so a gray image with
    /// this off is an error rather than one-channel patches.
    pub do_convert_rgb: bool,
}

impl VisionPreprocess {
    /// Read a `preprocessor_config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bytes = std::fs::read(path).at(path)?;
        let at = path.display().to_string();
        let v: Value = serde_json::from_slice(&bytes).map_err(|e| {
            input(
                format!("invalid JSON: {e}"),
                format!("{at}:{}:{}", e.line(), e.column()),
                "preprocessor_config.json must be the JSON file shipped with the model",
            )
        })?;
        Self::from_json(&v, &at)
    }

    /// Parse the JSON of a `preprocessor_config.json`; `at` names its source in errors.
    pub fn from_json(v: &Value, at: &str) -> Result<Self> {
        if !v.is_object() {
            return Err(input(
                "preprocessor config is not a JSON object",
                at,
                "use the model's preprocessor_config.json",
            ));
        }
        // HF's constructor: start from `size`, then let the legacy keys override each bound.
        let size = field(v, "size");
        if let Some(s) = size {
            if !s.is_object() {
                return Err(input(
                    "`size` is not an object",
                    at,
                    "expected size: {\"shortest_edge\": MIN_PIXELS, \"longest_edge\": MAX_PIXELS}",
                ));
            }
        }
        let bound = |legacy: &str, key: &str| -> Result<usize> {
            let (name, value) =
                match (field(v, legacy), size.and_then(|s| field(s, key))) {
                    (Some(x), _) => (legacy.to_string(), x),
                    (None, Some(x)) => (format!("size.{key}"), x),
                    (None, None) => return Err(input(
                        format!("neither `size.{key}` nor `{legacy}` is set"),
                        at,
                        "Qwen3-VL files give size: {\"shortest_edge\": .., \"longest_edge\": ..}; \
                         Qwen2/2.5-VL files give min_pixels and max_pixels",
                    )),
                };
            positive(value, &name, at)
        };
        let min_pixels = bound("min_pixels", "shortest_edge")?;
        let max_pixels = bound("max_pixels", "longest_edge")?;

        let required = |key: &str| -> Result<usize> {
            match field(v, key) {
                Some(x) => positive(x, key, at),
                None => Err(missing(key, at)),
            }
        };
        let std = triple(v, "image_std", at)?;
        if std.contains(&0.0) {
            return Err(input(
                "`image_std` has a zero",
                at,
                "normalising divides by image_std; use the model's values",
            ));
        }
        if let Some(r) = field(v, "resample") {
            if r.as_u64() != Some(BICUBIC) {
                return Err(input(
                    format!("`resample` is {r}; only 3 (bicubic) is supported"),
                    at,
                    "every Qwen-VL processor resizes bicubic; remove the key or set it to 3",
                ));
            }
        }
        let rescale_factor = match field(v, "rescale_factor") {
            None => 1.0 / 255.0,
            Some(x) => x.as_f64().filter(|f| *f > 0.0).ok_or_else(|| {
                input(
                    format!("`rescale_factor` is {x}, not a positive number"),
                    at,
                    "HF's value is 1/255 = 0.00392156862745098",
                )
            })?,
        };
        Ok(VisionPreprocess {
            patch_size: required("patch_size")?,
            merge_size: required("merge_size")?,
            temporal_patch_size: required("temporal_patch_size")?,
            min_pixels,
            max_pixels,
            mean: triple(v, "image_mean", at)?,
            std,
            rescale_factor,
            do_resize: flag(v, "do_resize", at)?,
            do_rescale: flag(v, "do_rescale", at)?,
            do_normalize: flag(v, "do_normalize", at)?,
            do_convert_rgb: flag(v, "do_convert_rgb", at)?,
        })
    }

    /// Resized sides are multiples of this: one merged block of patches.
    pub fn factor(&self) -> usize {
        self.patch_size * self.merge_size
    }

    /// Floats per patch row: `3 * temporal_patch_size * patch_size²`.
    pub fn patch_dim(&self) -> usize {
        3 * self.temporal_patch_size * self.patch_size * self.patch_size
    }

    /// `(height, width)` the image will have before patching: [`smart_resize`]'s answer, or the
    /// input size when `do_resize` is off.
    pub fn target_size(&self, height: usize, width: usize) -> Result<(usize, usize)> {
        if self.do_resize {
            smart_resize(
                height,
                width,
                self.factor(),
                self.min_pixels,
                self.max_pixels,
            )
        } else {
            Ok((height, width))
        }
    }

    /// `pixel_values` of one image, `[grid_t * grid_h * grid_w, patch_dim()]` row-major in HF's
    /// order, and the grid `(t, h, w)` in patches (t is always 1 for an image).
    pub fn preprocess(&self, img: &RawImage) -> Result<(Vec<f32>, [usize; 3])> {
        let (w, h, c) = (
            img.width as usize,
            img.height as usize,
            img.channels as usize,
        );
        let at = format!("image {w}×{h}×{c}");
        if w == 0 || h == 0 || !(c == 1 || c == 3) || img.pixels.len() != w * h * c {
            return Err(input(
                format!("malformed image: {} bytes", img.pixels.len()),
                at,
                "expected width × height × channels bytes with 1 or 3 channels",
            ));
        }
        if c == 1 && !self.do_convert_rgb {
            return Err(input(
                "gray image but the config sets do_convert_rgb: false",
                at,
                "the vision tower needs RGB; set do_convert_rgb to true or pass an RGB image",
            ));
        }
        let (th, tw) = self.target_size(h, w)?;
        let factor = self.factor();
        if th % factor != 0 || tw % factor != 0 {
            return Err(input(
                format!(
                    "size {th}×{tw} (h×w) is not a multiple of patch_size × merge_size = {factor}"
                ),
                at,
                "with do_resize off the image must already have a valid size",
            ));
        }
        // Channels are resized independently, so a gray image is resized once and replicated.
        let resized = resize_bicubic_u8(&img.pixels, w, h, c, tw, th);
        let tables = self.level_tables();

        let (p, m, t) = (self.patch_size, self.merge_size, self.temporal_patch_size);
        let (gh, gw) = (th / p, tw / p);
        let dim = self.patch_dim();
        let mut out = Vec::with_capacity(gh * gw * dim);
        for bh in 0..gh / m {
            for bw in 0..gw / m {
                for mh in 0..m {
                    for mw in 0..m {
                        let (y0, x0) = ((bh * m + mh) * p, (bw * m + mw) * p);
                        for (ch, table) in tables.iter().enumerate() {
                            let src = if c == 1 { 0 } else { ch };
                            let start = out.len();
                            for y in y0..y0 + p {
                                let row = &resized[(y * tw + x0) * c..(y * tw + x0 + p) * c];
                                out.extend(
                                    row.iter().skip(src).step_by(c).map(|&l| table[l as usize]),
                                );
                            }
                            // The still image stands for `temporal_patch_size` identical frames.
                            for _ in 1..t {
                                out.extend_from_within(start..start + p * p);
                            }
                        }
                    }
                }
            }
        }
        Ok((out, [1, gh, gw]))
    }

    /// The float each 0..255 level becomes, per channel, computed as torch does on f32 tensors.
    fn level_tables(&self) -> [[f32; 256]; 3] {
        level_tables(
            &self.mean,
            &self.std,
            self.rescale_factor,
            self.do_rescale,
            self.do_normalize,
        )
    }
}

/// The float each 0..255 level becomes, per channel, as torchvision's fused rescale-and-normalise
/// computes it on f32 tensors (every processor on the torchvision backend shares it).
pub(crate) fn level_tables(
    mean_in: &[f32; 3],
    std_in: &[f32; 3],
    rescale_factor: f64,
    do_rescale: bool,
    do_normalize: bool,
) -> [[f32; 256]; 3] {
    let mut tables = [[0f32; 256]; 3];
    // torch multiplies an f32 tensor by a Python float in f32.
    let rescale = rescale_factor as f32;
    let inv = (1.0 / rescale_factor) as f32;
    for (ch, table) in tables.iter_mut().enumerate() {
        let (mean, std) = match (do_rescale, do_normalize) {
            // HF fuses the two: mean and std are scaled up instead of the pixels down.
            (true, true) => (mean_in[ch] * inv, std_in[ch] * inv),
            (false, true) => (mean_in[ch], std_in[ch]),
            _ => (0.0, 1.0),
        };
        for (level, v) in table.iter_mut().enumerate() {
            let x = level as f32;
            *v = match (do_rescale, do_normalize) {
                (_, true) => (x - mean) / std,
                (true, false) => x * rescale,
                (false, false) => x,
            };
        }
    }
    tables
}

/// HF's `smart_resize`: the `(height, width)`, both multiples of `factor`, closest to the input
/// with `min_pixels <= h * w <= max_pixels`.
///
/// Follows the Python arithmetic exactly: sides round half to even (`round(2.5) == 2`), the
/// bounds are enforced by scaling both sides by `sqrt(pixels / bound)` then flooring (over
/// `max_pixels`) or ceiling (under `min_pixels`) to `factor`. Like HF, the result of the
/// `min_pixels` branch is not re-checked against `max_pixels`, so extreme aspect ratios can exceed
/// it. An aspect ratio over 200 is an error.
pub fn smart_resize(
    height: usize,
    width: usize,
    factor: usize,
    min_pixels: usize,
    max_pixels: usize,
) -> Result<(usize, usize)> {
    let at = format!("image {width}×{height} (w×h)");
    if height == 0 || width == 0 || factor == 0 || max_pixels == 0 {
        return Err(input(
            "zero image side, factor or max_pixels",
            at,
            "images must have pixels and the config positive sizes",
        ));
    }
    let (hf, wf, ff) = (height as f64, width as f64, factor as f64);
    let aspect = hf.max(wf) / hf.min(wf);
    if aspect > MAX_ASPECT {
        return Err(input(
            format!("aspect ratio {aspect} is over {MAX_ASPECT}"),
            at,
            "Qwen-VL processors refuse such images; crop or pad the image first",
        ));
    }
    let mut h_bar = (hf / ff).round_ties_even() as usize * factor;
    let mut w_bar = (wf / ff).round_ties_even() as usize * factor;
    if h_bar * w_bar > max_pixels {
        let beta = ((height * width) as f64 / max_pixels as f64).sqrt();
        h_bar = factor.max((hf / beta / ff).floor() as usize * factor);
        w_bar = factor.max((wf / beta / ff).floor() as usize * factor);
    } else if h_bar * w_bar < min_pixels {
        let beta = (min_pixels as f64 / (height * width) as f64).sqrt();
        h_bar = (hf * beta / ff).ceil() as usize * factor;
        w_bar = (wf * beta / ff).ceil() as usize * factor;
    }
    Ok((h_bar, w_bar))
}

/// Fixed-point filter taps of one resize axis: output `i` reads input `start[i]..start[i] + len[i]`
/// with weights `weights[i * taps..]`, summed into an integer scaled by `2^precision`.
struct Axis {
    start: Vec<usize>,
    len: Vec<usize>,
    taps: usize,
    weights: Vec<i32>,
    precision: u32,
}

/// The cubic convolution kernel with a = −0.5 (Keys; Pillow's and torch's antialiased bicubic).
fn cubic(x: f64) -> f64 {
    const A: f64 = -0.5;
    let x = x.abs();
    if x < 1.0 {
        ((A + 2.0) * x - (A + 3.0)) * x * x + 1.0
    } else if x < 2.0 {
        (((x - 5.0) * x + 8.0) * x - 4.0) * A
    } else {
        0.0
    }
}

impl Axis {
    /// torch's `_compute_index_ranges_int16_weights` for the antialiased bicubic filter.
    fn bicubic(input: usize, output: usize) -> Axis {
        let scale = input as f64 / output as f64;
        // Shrinking stretches the kernel over `scale` input pixels: the antialiasing.
        let (support, inv_scale) = if scale >= 1.0 {
            (2.0 * scale, 1.0 / scale)
        } else {
            (2.0, 1.0)
        };
        let mut rows: Vec<(usize, Vec<f64>)> = Vec::with_capacity(output);
        let mut wt_max = 0f64;
        for i in 0..output {
            let center = scale * (i as f64 + 0.5);
            // `as` truncates toward zero, as the C++ casts do; the max then clamps at the border.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(input as i64) as usize;
            let mut w: Vec<f64> = (lo..hi)
                .map(|j| cubic((j as f64 - center + 0.5) * inv_scale))
                .collect();
            let total: f64 = w.iter().sum();
            if total != 0.0 {
                for x in &mut w {
                    *x /= total;
                    wt_max = wt_max.max(*x);
                }
            }
            rows.push((lo, w));
        }
        // The most fractional bits that keep the largest weight inside an i16.
        let mut precision = 0u32;
        while precision < 22 && ((0.5 + wt_max * (1u64 << (precision + 1)) as f64) as i64) < 1 << 15
        {
            precision += 1;
        }
        let taps = rows.iter().map(|(_, w)| w.len()).max().unwrap_or(0);
        let mut axis = Axis {
            start: Vec::with_capacity(output),
            len: Vec::with_capacity(output),
            taps,
            weights: vec![0; output * taps],
            precision,
        };
        let one = (1u64 << precision) as f64;
        for (i, (lo, w)) in rows.into_iter().enumerate() {
            axis.start.push(lo);
            axis.len.push(w.len());
            for (k, x) in w.into_iter().enumerate() {
                let v = x * one;
                // Round half away from zero, then truncate to i16 as torch stores it.
                let q = if v < 0.0 {
                    (v - 0.5) as i32
                } else {
                    (v + 0.5) as i32
                };
                axis.weights[i * taps + k] = q as i16 as i32;
            }
        }
        axis
    }

    /// One output sample from `len` inputs `stride` apart starting at `src[0]`.
    #[inline]
    fn sample(&self, i: usize, src: &[u8], stride: usize) -> u8 {
        let w = &self.weights[i * self.taps..i * self.taps + self.len[i]];
        let mut acc: i32 = if self.precision > 0 {
            1 << (self.precision - 1)
        } else {
            0
        };
        for (k, &wk) in w.iter().enumerate() {
            acc += src[k * stride] as i32 * wk;
        }
        (acc >> self.precision).clamp(0, 255) as u8
    }
}

/// Resize an HWC `u8` image to `out_w × out_h` as torch's CPU `interpolate(uint8, "bicubic",
/// antialias=True)` does: width pass, then height pass, each back to `u8`. A pass whose size does
/// not change is skipped (its taps would be the identity anyway).
pub(crate) fn resize_bicubic_u8(
    src: &[u8],
    w: usize,
    h: usize,
    c: usize,
    out_w: usize,
    out_h: usize,
) -> Vec<u8> {
    let horizontal = if out_w == w {
        src.to_vec()
    } else {
        let axis = Axis::bicubic(w, out_w);
        let mut dst = vec![0u8; h * out_w * c];
        for y in 0..h {
            let row = &src[y * w * c..(y + 1) * w * c];
            for x in 0..out_w {
                for ch in 0..c {
                    dst[(y * out_w + x) * c + ch] =
                        axis.sample(x, &row[axis.start[x] * c + ch..], c);
                }
            }
        }
        dst
    };
    if out_h == h {
        return horizontal;
    }
    let axis = Axis::bicubic(h, out_h);
    let stride = out_w * c;
    let mut dst = vec![0u8; out_h * stride];
    for y in 0..out_h {
        let top = axis.start[y] * stride;
        for i in 0..stride {
            dst[y * stride + i] = axis.sample(y, &horizontal[top + i..], stride);
        }
    }
    dst
}

/// A key that is present and not `null`.
fn field<'a>(v: &'a Value, key: &str) -> Option<&'a Value> {
    v.get(key).filter(|x| !x.is_null())
}

fn missing(key: &str, at: &str) -> crate::error::Error {
    input(
        format!("`{key}` is missing"),
        at,
        "use the preprocessor_config.json shipped with the Qwen-VL model",
    )
}

fn positive(x: &Value, key: &str, at: &str) -> Result<usize> {
    x.as_u64()
        .filter(|&n| n > 0)
        .map(|n| n as usize)
        .ok_or_else(|| {
            input(
                format!("`{key}` is {x}, not a positive integer"),
                at,
                "use the preprocessor_config.json shipped with the Qwen-VL model",
            )
        })
}

/// A boolean switch; absent means HF's default, true.
fn flag(v: &Value, key: &str, at: &str) -> Result<bool> {
    match field(v, key) {
        None => Ok(true),
        Some(x) => x.as_bool().ok_or_else(|| {
            input(
                format!("`{key}` is {x}, not true or false"),
                at,
                "use the preprocessor_config.json shipped with the Qwen-VL model",
            )
        }),
    }
}

/// Per-channel statistics: three numbers, or one for all channels (HF accepts both).
fn triple(v: &Value, key: &str, at: &str) -> Result<[f32; 3]> {
    let x = field(v, key).ok_or_else(|| missing(key, at))?;
    let bad = || {
        input(
            format!("`{key}` is {x}, not a number or a list of 3 numbers"),
            at,
            "Qwen3-VL uses [0.5, 0.5, 0.5]; Qwen2/2.5-VL use the CLIP values",
        )
    };
    // As torch.tensor(list) does: parse as a double, then round to f32.
    if let Some(f) = x.as_f64() {
        return Ok([f as f32; 3]);
    }
    match x.as_array().map(Vec::as_slice) {
        Some([a, b, c]) => {
            let f = |y: &Value| y.as_f64().map(|f| f as f32).ok_or_else(bad);
            Ok([f(a)?, f(b)?, f(c)?])
        }
        _ => Err(bad()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::imagefolder::decode_file;
    use serde_json::json;
    use std::path::PathBuf;

    fn fixture() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen_vl_image")
    }

    fn expected() -> Value {
        let bytes = std::fs::read(fixture().join("expected.json")).unwrap();
        serde_json::from_slice(&bytes).unwrap()
    }

    fn qwen3_json() -> Value {
        json!({
            "size": {"shortest_edge": 1024, "longest_edge": 3072},
            "patch_size": 16, "temporal_patch_size": 2, "merge_size": 2,
            "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5],
            "processor_class": "Qwen3VLProcessor",
            "image_processor_type": "Qwen2VLImageProcessorFast"
        })
    }

    /// Every fixture image against HF's default (torchvision) processor.
    #[test]
    fn matches_hf_pixel_values() {
        let dir = fixture();
        let st_bytes = std::fs::read(dir.join("expected.safetensors")).unwrap();
        let st = safetensors::SafeTensors::deserialize(&st_bytes).unwrap();
        let meta = expected();
        assert_eq!(meta["default_class"], "Qwen2VLImageProcessor");
        assert_eq!(meta["default_backend"], "torchvision");
        for case in meta["cases"].as_array().unwrap() {
            let name = case["name"].as_str().unwrap();
            let cfg = VisionPreprocess::from_file(
                &dir.join(case["config"].as_str().unwrap())
                    .join("preprocessor_config.json"),
            )
            .unwrap();
            let img = decode_file(&dir.join(format!("{name}.png"))).unwrap();
            assert_eq!(img.channels as u64, case["channels"].as_u64().unwrap());
            let (h, w) = (img.height as usize, img.width as usize);

            let target = cfg.target_size(h, w).unwrap();
            let want: Vec<usize> = serde_json::from_value(case["target"].clone()).unwrap();
            assert_eq!([target.0, target.1], want[..], "{name}: target size");

            let (pixels, grid) = cfg.preprocess(&img).unwrap();
            let grid_t = st.tensor(&format!("{name}.grid_thw")).unwrap();
            let want_grid: Vec<usize> = grid_t
                .data()
                .chunks(8)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()) as usize)
                .collect();
            assert_eq!(grid[..], want_grid[..], "{name}: grid");

            let pv = st.tensor(&format!("{name}.pixel_values")).unwrap();
            assert_eq!(pv.shape(), [grid.iter().product(), cfg.patch_dim()]);
            let want: Vec<f32> = pv
                .data()
                .chunks(4)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect();
            assert_eq!(pixels.len(), want.len(), "{name}: length");
            // Equal levels must give bit-equal floats; the resize is the same integer arithmetic.
            let differ = pixels
                .iter()
                .zip(&want)
                .filter(|(a, b)| a.to_bits() != b.to_bits())
                .count();
            assert_eq!(differ, 0, "{name}: {differ} pixel_values differ from HF");
        }
    }

    #[test]
    fn smart_resize_matches_python() {
        for case in expected()["smart_resize"].as_array().unwrap() {
            let n = |k: &str| case[k].as_u64().unwrap() as usize;
            let got = smart_resize(
                n("height"),
                n("width"),
                n("factor"),
                n("min_pixels"),
                n("max_pixels"),
            );
            match case.get("result") {
                Some(r) => {
                    let want: Vec<usize> = serde_json::from_value(r.clone()).unwrap();
                    assert_eq!(got.unwrap(), (want[0], want[1]), "{case}");
                }
                None => {
                    let err = got.unwrap_err().to_string();
                    assert!(
                        err.contains("aspect ratio 201 is over 200"),
                        "{case}: {err}"
                    );
                }
            }
        }
    }

    #[test]
    fn smart_resize_rounds_half_to_even() {
        // 80 / 32 = 2.5 -> 2 and 48 / 32 = 1.5 -> 2, as Python's round() does.
        assert_eq!(smart_resize(80, 48, 32, 1, 1 << 30).unwrap(), (64, 64));
        // 16 / 32 = 0.5 -> 0: a zero side falls to the min_pixels branch, which ceils it up.
        assert_eq!(smart_resize(112, 16, 32, 1, 1 << 30).unwrap(), (32, 32));
        assert!(smart_resize(0, 16, 32, 1, 100).is_err());
    }

    #[test]
    fn pixel_bounds_resolve_like_hf() {
        for (name, variant) in expected()["config_variants"].as_object().unwrap() {
            let got = VisionPreprocess::from_json(&variant["config"], name);
            match variant.get("error") {
                None => {
                    let cfg = got.unwrap();
                    assert_eq!(cfg.min_pixels as u64, variant["min_pixels"], "{name}");
                    assert_eq!(cfg.max_pixels as u64, variant["max_pixels"], "{name}");
                }
                Some(_) => {
                    let err = got.unwrap_err().to_string();
                    assert!(err.contains("size.shortest_edge"), "{name}: {err}");
                }
            }
        }
    }

    #[test]
    fn parses_qwen3_config_with_defaults() {
        let cfg = VisionPreprocess::from_json(&qwen3_json(), "cfg").unwrap();
        assert_eq!(
            cfg,
            VisionPreprocess {
                patch_size: 16,
                merge_size: 2,
                temporal_patch_size: 2,
                min_pixels: 1024,
                max_pixels: 3072,
                mean: [0.5; 3],
                std: [0.5; 3],
                rescale_factor: 1.0 / 255.0,
                do_resize: true,
                do_rescale: true,
                do_normalize: true,
                do_convert_rgb: true,
            }
        );
        assert_eq!(cfg.factor(), 32);
        assert_eq!(cfg.patch_dim(), 1536);
    }

    #[test]
    fn config_errors_name_the_key() {
        for key in [
            "patch_size",
            "merge_size",
            "temporal_patch_size",
            "image_mean",
            "image_std",
        ] {
            let mut v = qwen3_json();
            v.as_object_mut().unwrap().remove(key);
            let err = VisionPreprocess::from_json(&v, "dir/preprocessor_config.json")
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("`{key}` is missing")), "{err}");
            assert!(err.starts_with("dir/preprocessor_config.json"), "{err}");
        }
        let with = |key: &str, value: Value| {
            let mut v = qwen3_json();
            v[key] = value;
            VisionPreprocess::from_json(&v, "cfg")
                .unwrap_err()
                .to_string()
        };
        assert!(with("resample", json!(2)).contains("only 3 (bicubic)"));
        assert!(with("patch_size", json!(0)).contains("not a positive integer"));
        assert!(with("image_std", json!([0.5, 0.0, 0.5])).contains("zero"));
        assert!(with("image_mean", json!([0.5, 0.5])).contains("list of 3"));
        assert!(with("do_resize", json!("yes")).contains("not true or false"));
        assert!(with("size", json!({"shortest_edge": 1024})).contains("size.longest_edge"));
        // Unknown keys and a scalar mean (HF broadcasts it) are fine.
        let mut v = qwen3_json();
        v["something_new"] = json!({"a": 1});
        v["image_mean"] = json!(0.25);
        assert_eq!(
            VisionPreprocess::from_json(&v, "cfg").unwrap().mean,
            [0.25; 3]
        );
    }

    #[test]
    fn preprocess_rejects_bad_inputs() {
        let cfg = VisionPreprocess::from_json(&qwen3_json(), "cfg").unwrap();
        let img = |w: u32, h: u32, channels: u8, n: usize| RawImage {
            width: w,
            height: h,
            channels,
            pixels: vec![0; n],
        };
        assert!(cfg.preprocess(&img(4, 4, 3, 47)).is_err());
        assert!(cfg.preprocess(&img(4, 4, 2, 32)).is_err());
        let wide = cfg
            .preprocess(&img(201, 1, 1, 201))
            .unwrap_err()
            .to_string();
        assert!(wide.contains("aspect ratio"), "{wide}");
        let mut fixed = cfg.clone();
        fixed.do_resize = false;
        assert!(fixed.preprocess(&img(40, 32, 3, 40 * 32 * 3)).is_err());
        let mut no_rgb = cfg;
        no_rgb.do_convert_rgb = false;
        assert!(no_rgb.preprocess(&img(32, 32, 1, 1024)).is_err());
    }

    /// The patch order on an image whose every pixel encodes its own position.
    #[test]
    fn patch_order_is_hf_layout() {
        let mut cfg = VisionPreprocess::from_json(&qwen3_json(), "cfg").unwrap();
        cfg.patch_size = 2;
        cfg.merge_size = 2;
        cfg.temporal_patch_size = 2;
        cfg.min_pixels = 1;
        cfg.do_rescale = false;
        cfg.do_normalize = false;
        let (w, h) = (8usize, 4usize);
        let pixels: Vec<u8> = (0..h)
            .flat_map(|y| (0..w).flat_map(move |x| [(y * w + x) as u8, 100, 200]))
            .collect();
        let img = RawImage {
            width: w as u32,
            height: h as u32,
            channels: 3,
            pixels,
        };
        let (out, grid) = cfg.preprocess(&img).unwrap();
        assert_eq!(grid, [1, 2, 4]);
        let row = |r: usize| &out[r * 24..(r + 1) * 24];
        // Row 0: block (0,0), patch (0,0): channel 0 frame 0, channel 0 frame 1, then channel 1...
        assert_eq!(row(0)[..8], [0., 1., 8., 9., 0., 1., 8., 9.]);
        assert_eq!(row(0)[8..12], [100.; 4]);
        // Row 1 is the patch to the right inside the first 2×2 block, row 2 the one below it.
        assert_eq!(row(1)[..4], [2., 3., 10., 11.]);
        assert_eq!(row(2)[..4], [16., 17., 24., 25.]);
        // Row 4 starts the second block: patches at x = 4.
        assert_eq!(row(4)[..4], [4., 5., 12., 13.]);
    }

    /// A flat image stays flat at any scale: the fixed-point taps of every output sum to ~2^p.
    #[test]
    fn flat_images_stay_flat() {
        for (w, h, ow, oh) in [(10, 7, 3, 5), (5, 5, 13, 2), (64, 1, 1, 1)] {
            let src = vec![173u8; w * h * 3];
            let out = resize_bicubic_u8(&src, w, h, 3, ow, oh);
            assert_eq!(out, vec![173u8; ow * oh * 3], "{w}×{h} -> {ow}×{oh}");
        }
    }
}
