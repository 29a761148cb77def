//! From a decoded [`RawImage`] to the normalised CHW floats a student eats.
//!
//! Test path (and training without augmentation), as torchvision's `Resize(size)` +
//! `CenterCrop(size)`: scale the shorter side to `size` (bilinear, antialiased when shrinking, like
//! PIL), then cut the centre square. Training paths:
//! - `flip`: the test path, then a horizontal flip with probability ½.
//! - `crop-flip` (the CIFAR recipe): the test path, zero-pad 4 pixels on every side, a random
//!   `size × size` crop, a flip. Padding is applied after resizing so that "4 pixels" means 4
//!   pixels of the image the network sees, whatever the source resolution.
//! - `resized-crop-flip` (the ImageNet recipe): torchvision's `RandomResizedCrop(size,
//!   scale=(0.08, 1), ratio=(3/4, 4/3))` on the source image, then a flip.
//!
//! Gray sources are replicated to 3 channels when the model wants RGB; RGB sources become gray
//! with torchvision's luma weights (0.2989, 0.587, 0.114) when it wants 1 channel. Finally every
//! value becomes `(x / 255 − mean[c]) / std[c]`.

use super::RawImage;
use crate::error::{self, Result};
use rand::Rng;
use serde::{Deserialize, Serialize};

/// Training-time augmentation.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Augment {
    #[default]
    None,
    /// Random horizontal flip.
    Flip,
    /// Zero-pad 4, random crop back to `size`, random horizontal flip.
    CropFlip,
    /// RandomResizedCrop (scale 0.08..1, ratio 3/4..4/3) then random horizontal flip.
    ResizedCropFlip,
}

/// How images become tensors; saved with a run so evaluation sees what training saw.
/// The defaults are Fashion-MNIST's: 28×28 gray with its training-set mean and std.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TransformConfig {
    /// Output height and width.
    pub size: usize,
    /// Output channels: 1 (gray) or 3 (RGB).
    pub channels: usize,
    /// Per-channel mean of `x / 255`.
    pub mean: Vec<f32>,
    /// Per-channel standard deviation of `x / 255`.
    pub std: Vec<f32>,
    pub augment: Augment,
}

impl Default for TransformConfig {
    fn default() -> Self {
        TransformConfig {
            size: 28,
            channels: 1,
            mean: vec![0.2860],
            std: vec![0.3530],
            augment: Augment::None,
        }
    }
}

impl TransformConfig {
    /// Check the values a user could get wrong in a config file.
    pub fn validate(&self) -> Result<()> {
        let bad = |field: &str, what: String, hint: &str| {
            Err(error::input(what, format!("transform.{field}"), hint))
        };
        if self.size == 0 || self.size > 4096 {
            return bad(
                "size",
                format!("size {} is out of range", self.size),
                "use 1..=4096, e.g. 28 or 224",
            );
        }
        if self.channels != 1 && self.channels != 3 {
            return bad(
                "channels",
                format!("channels must be 1 or 3, not {}", self.channels),
                "1 for gray models, 3 for RGB models",
            );
        }
        if self.mean.len() != self.channels {
            return bad(
                "mean",
                format!(
                    "{} mean values for {} channels",
                    self.mean.len(),
                    self.channels
                ),
                "give one mean per channel, e.g. [0.2860] or [0.485, 0.456, 0.406]",
            );
        }
        if self.std.len() != self.channels {
            return bad(
                "std",
                format!(
                    "{} std values for {} channels",
                    self.std.len(),
                    self.channels
                ),
                "give one std per channel, e.g. [0.3530] or [0.229, 0.224, 0.225]",
            );
        }
        if let Some(s) = self.std.iter().find(|s| !(s.is_finite() && **s > 0.0)) {
            return bad(
                "std",
                format!("std {s} is not a positive number"),
                "std values must be > 0",
            );
        }
        if let Some(m) = self.mean.iter().find(|m| !m.is_finite()) {
            return bad(
                "mean",
                format!("mean {m} is not a finite number"),
                "mean values are fractions of 255, e.g. 0.5",
            );
        }
        Ok(())
    }
}

/// A validated [`TransformConfig`], ready to apply.
#[derive(Clone, Debug)]
pub struct Transform {
    config: TransformConfig,
}

/// Planar float image, values still in 0..=255.
#[derive(Clone)]
struct Planes {
    w: usize,
    h: usize,
    c: usize,
    data: Vec<f32>,
}

impl Planes {
    /// HWC bytes to CHW floats; RGB turns into luma when one channel is wanted.
    fn from_raw(img: &RawImage, want_gray: bool) -> Planes {
        let (w, h) = (img.width as usize, img.height as usize);
        let src_c = img.channels as usize;
        let n = w * h;
        let px = &img.pixels;
        if src_c == 3 && want_gray {
            let data = (0..n)
                .map(|i| {
                    0.2989 * px[3 * i] as f32
                        + 0.587 * px[3 * i + 1] as f32
                        + 0.114 * px[3 * i + 2] as f32
                })
                .collect();
            return Planes { w, h, c: 1, data };
        }
        let mut data = vec![0.0; n * src_c];
        for i in 0..n {
            for c in 0..src_c {
                data[c * n + i] = px[i * src_c + c] as f32;
            }
        }
        Planes {
            w,
            h,
            c: src_c,
            data,
        }
    }

    /// The `cw × ch` window at (`left`, `top`); parts outside the image are zero (padding).
    fn crop(&self, left: isize, top: isize, cw: usize, ch: usize) -> Planes {
        if left == 0 && top == 0 && cw == self.w && ch == self.h {
            return Planes {
                data: self.data.clone(),
                ..*self
            };
        }
        let mut data = vec![0.0; self.c * cw * ch];
        for c in 0..self.c {
            for y in 0..ch {
                let sy = top + y as isize;
                if sy < 0 || sy >= self.h as isize {
                    continue;
                }
                for x in 0..cw {
                    let sx = left + x as isize;
                    if sx < 0 || sx >= self.w as isize {
                        continue;
                    }
                    data[(c * ch + y) * cw + x] =
                        self.data[(c * self.h + sy as usize) * self.w + sx as usize];
                }
            }
        }
        Planes {
            w: cw,
            h: ch,
            c: self.c,
            data,
        }
    }

    /// Separable bilinear resize to `nw × nh`.
    fn resize(self, nw: usize, nh: usize) -> Planes {
        self.resize_window(nw, nh, 0, 0, nw, nh)
    }

    /// The `cw × ch` window at (`left`, `top`) of the image resized to `nw × nh`, computing only
    /// that window: a 1×65535 strip resized to a short side of 224 would otherwise be 14.7M rows
    /// of coefficients and pixels (tens of GB) to keep 224 of them. Each output pixel is computed
    /// exactly as in a full resize (same weights, same summation order), so the crop of a full
    /// resize and this window are bit-identical.
    fn resize_window(
        self,
        nw: usize,
        nh: usize,
        left: usize,
        top: usize,
        cw: usize,
        ch: usize,
    ) -> Planes {
        if nw == self.w && nh == self.h {
            return self.crop(left as isize, top as isize, cw, ch);
        }
        let (w, h) = (self.w, self.h);
        let xs = coefficients_in(w, nw, left..left + cw);
        let ys = coefficients_in(h, nh, top..top + ch);
        // Only the input rows some kept output row reads go through the horizontal pass.
        let r0 = ys.iter().map(|(s, _)| *s).min().unwrap_or(0);
        let r1 = ys.iter().map(|(s, ws)| s + ws.len()).max().unwrap_or(0);
        let rows = r1 - r0;
        let mut tmp = vec![0.0; self.c * rows * cw];
        for c in 0..self.c {
            for y in r0..r1 {
                let row = &self.data[(c * h + y) * w..(c * h + y + 1) * w];
                for (x, (start, ws)) in xs.iter().enumerate() {
                    tmp[(c * rows + y - r0) * cw + x] =
                        ws.iter().zip(&row[*start..]).map(|(w, v)| w * v).sum();
                }
            }
        }
        let mut data = vec![0.0; self.c * ch * cw];
        for c in 0..self.c {
            for (y, (start, ws)) in ys.iter().enumerate() {
                for x in 0..cw {
                    data[(c * ch + y) * cw + x] = ws
                        .iter()
                        .enumerate()
                        .map(|(k, w)| w * tmp[(c * rows + start + k - r0) * cw + x])
                        .sum();
                }
            }
        }
        Planes {
            w: cw,
            h: ch,
            c: self.c,
            data,
        }
    }

    fn hflip(&mut self) {
        for row in self.data.chunks_mut(self.w) {
            row.reverse();
        }
    }
}

/// Per output pixel, the first input index and the weights of a triangle (bilinear) filter. The
/// filter widens by the scale factor when shrinking, as PIL does, so downscaling averages every
/// input pixel instead of skipping some (aliasing). Pixel centres sit at `i + 0.5`.
/// Only the output pixels in `outs` are computed.
fn coefficients_in(
    input: usize,
    output: usize,
    outs: std::ops::Range<usize>,
) -> Vec<(usize, Vec<f32>)> {
    let scale = input as f64 / output as f64;
    let support = scale.max(1.0);
    outs.map(|o| {
        let center = (o as f64 + 0.5) * scale;
        let lo = ((center - support + 0.5).floor().max(0.0)) as usize;
        let hi = ((center + support + 0.5).floor() as usize).min(input);
        let mut ws: Vec<f64> = (lo..hi)
            .map(|i| (1.0 - ((i as f64 + 0.5 - center) / support).abs()).max(0.0))
            .collect();
        let total: f64 = ws.iter().sum();
        ws.iter_mut().for_each(|w| *w /= total);
        (lo, ws.into_iter().map(|w| w as f32).collect())
    })
    .collect()
}

/// torchvision's centre-crop offset: `round((len − size) / 2)` with Python's half-to-even round.
fn center_offset(len: usize, size: usize) -> isize {
    let d = len as isize - size as isize;
    let k = d.div_euclid(2);
    if d.rem_euclid(2) == 0 || k.rem_euclid(2) == 0 {
        k
    } else {
        k + 1
    }
}

/// Resize so the shorter side is `size` (the longer one truncated as torchvision does), then
/// cut the centre `size × size`.
fn resize_center_crop(p: Planes, size: usize) -> Planes {
    let (w, h) = (p.w, p.h);
    let (nw, nh) = if w <= h {
        (size, (size as u64 * h as u64 / w as u64) as usize)
    } else {
        ((size as u64 * w as u64 / h as u64) as usize, size)
    };
    // The shorter side is `size` and the longer at least that, so both offsets are ≥ 0.
    let (left, top) = (center_offset(nw, size), center_offset(nh, size));
    p.resize_window(nw, nh, left as usize, top as usize, size, size)
}

/// torchvision `RandomResizedCrop.get_params`: (left, top, width, height) of the crop.
fn random_resized_crop_box(w: usize, h: usize, rng: &mut impl Rng) -> (usize, usize, usize, usize) {
    let area = (w * h) as f64;
    let (rmin, rmax) = (3.0f64 / 4.0, 4.0f64 / 3.0);
    for _ in 0..10 {
        let target = area * rng.random_range(0.08..=1.0);
        let ratio = rng.random_range(rmin.ln()..=rmax.ln()).exp();
        let cw = (target * ratio).sqrt().round() as usize;
        let ch = (target / ratio).sqrt().round() as usize;
        if 0 < cw && cw <= w && 0 < ch && ch <= h {
            let top = rng.random_range(0..=h - ch);
            let left = rng.random_range(0..=w - cw);
            return (left, top, cw, ch);
        }
    }
    // Fallback: the whole image, trimmed to the allowed aspect ratios, centred.
    let in_ratio = w as f64 / h as f64;
    let (cw, ch) = if in_ratio < rmin {
        (w, ((w as f64 / rmin).round() as usize).clamp(1, h))
    } else if in_ratio > rmax {
        (((h as f64 * rmax).round() as usize).clamp(1, w), h)
    } else {
        (w, h)
    };
    ((w - cw) / 2, (h - ch) / 2, cw, ch)
}

impl Transform {
    pub fn new(config: TransformConfig) -> Result<Transform> {
        config.validate()?;
        Ok(Transform { config })
    }

    pub fn config(&self) -> &TransformConfig {
        &self.config
    }

    /// Shape of one output: `[channels, size, size]`.
    pub fn output_shape(&self) -> [usize; 3] {
        [self.config.channels, self.config.size, self.config.size]
    }

    /// CHW floats for `img`; `train` turns on the configured augmentation, whose randomness comes
    /// only from `rng`. `img` must hold 1 or 3 channels and `width × height × channels` bytes
    /// (every [`super::Dataset`] guarantees this).
    pub fn apply(&self, img: &RawImage, train: bool, rng: &mut impl Rng) -> Vec<f32> {
        let size = self.config.size;
        let expected = img.width as usize * img.height as usize * img.channels as usize;
        assert!(
            matches!(img.channels, 1 | 3)
                && img.pixels.len() == expected
                && img.width > 0
                && img.height > 0,
            "malformed RawImage {}×{}×{} with {} bytes",
            img.width,
            img.height,
            img.channels,
            img.pixels.len()
        );
        let p = Planes::from_raw(img, self.config.channels == 1);
        let augment = if train {
            self.config.augment
        } else {
            Augment::None
        };
        let mut p = match augment {
            Augment::None | Augment::Flip => resize_center_crop(p, size),
            Augment::CropFlip => {
                let p = resize_center_crop(p, size);
                let left = rng.random_range(0..=8) as isize - 4;
                let top = rng.random_range(0..=8) as isize - 4;
                p.crop(left, top, size, size)
            }
            Augment::ResizedCropFlip => {
                let (left, top, cw, ch) = random_resized_crop_box(p.w, p.h, rng);
                p.crop(left as isize, top as isize, cw, ch)
                    .resize(size, size)
            }
        };
        if augment != Augment::None && rng.random::<f32>() < 0.5 {
            p.hflip();
        }
        let n = size * size;
        let mut out = Vec::with_capacity(self.config.channels * n);
        for c in 0..self.config.channels {
            // A gray source feeds every output channel (replication to RGB).
            let src = &p.data[(c % p.c) * n..(c % p.c + 1) * n];
            let (mean, std) = (self.config.mean[c], self.config.std[c]);
            out.extend(src.iter().map(|&x| (x / 255.0 - mean) / std));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn gray(w: u32, h: u32, pixels: Vec<u8>) -> RawImage {
        RawImage {
            width: w,
            height: h,
            channels: 1,
            pixels,
        }
    }

    fn identity(size: usize, channels: usize, augment: Augment) -> Transform {
        Transform::new(TransformConfig {
            size,
            channels,
            mean: vec![0.0; channels],
            std: vec![1.0 / 255.0; channels],
            augment,
        })
        .unwrap()
    }

    fn rng() -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(7)
    }

    fn close(a: &[f32], b: &[f32]) {
        assert_eq!(a.len(), b.len(), "{a:?} vs {b:?}");
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-3, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn normalises_a_2x2_image() {
        let t = Transform::new(TransformConfig {
            size: 2,
            channels: 1,
            mean: vec![0.5],
            std: vec![0.25],
            augment: Augment::None,
        })
        .unwrap();
        let out = t.apply(&gray(2, 2, vec![0, 51, 255, 102]), false, &mut rng());
        // (0/255 − 0.5)/0.25 = −2; (0.2 − 0.5)/0.25 = −1.2; (1 − 0.5)/0.25 = 2; (0.4 − 0.5)/0.25 = −0.4
        close(&out, &[-2.0, -1.2, 2.0, -0.4]);
    }

    #[test]
    fn default_is_fashion_mnist() {
        let c = TransformConfig::default();
        assert_eq!((c.size, c.channels, c.augment), (28, 1, Augment::None));
        let parsed: TransformConfig = toml::from_str("augment = \"crop-flip\"").unwrap();
        assert_eq!(parsed.mean, vec![0.2860]);
        assert_eq!(parsed.augment, Augment::CropFlip);
        assert!(toml::from_str::<TransformConfig>("sise = 3").is_err());
        let names: Vec<String> = [
            Augment::None,
            Augment::Flip,
            Augment::CropFlip,
            Augment::ResizedCropFlip,
        ]
        .iter()
        .map(|a| serde_json::to_string(a).unwrap())
        .collect();
        assert_eq!(
            names,
            [
                "\"none\"",
                "\"flip\"",
                "\"crop-flip\"",
                "\"resized-crop-flip\""
            ]
        );
    }

    #[test]
    fn validate_rejects_bad_values() {
        let mut c = TransformConfig {
            channels: 3,
            ..Default::default()
        };
        let msg = c.validate().unwrap_err().to_string();
        assert!(
            msg.starts_with("transform.mean: 1 mean values for 3 channels"),
            "{msg}"
        );
        c.mean = vec![0.5; 3];
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("transform.std"));
        c.std = vec![0.5, 0.0, 0.5];
        assert!(matches!(c.validate(), Err(Error::Input { .. })));
        c.std = vec![0.5; 3];
        c.validate().unwrap();
        c.channels = 2;
        assert!(c.validate().unwrap_err().to_string().contains("1 or 3"));
    }

    #[test]
    fn center_crop_and_resize_sizes() {
        // 4 wide × 2 high, values = column index × 10 + row. Shorter side 2 → size 2: no resize,
        // centre crop takes columns 1..3.
        let px: Vec<u8> = (0..2)
            .flat_map(|y| (0..4).map(move |x| x * 10 + y))
            .collect();
        let out = identity(2, 1, Augment::None).apply(&gray(4, 2, px.clone()), false, &mut rng());
        close(&out, &[10.0, 20.0, 11.0, 21.0]);
        // Shrinking 4×2 to shorter side 1 gives 2×1; PIL's triangle filter widens to ±2 input
        // pixels, so output column 0 (centre 1.0) weighs columns 0, 1, 2 by 0.75, 0.75, 0.25 and
        // both rows equally. Centre crop offset round((2 − 1)/2) = 0 (half to even) keeps it:
        // (0.75·0 + 0.75·10 + 0.25·20)/1.75 + 0.5 = 7.642857.
        let out = identity(1, 1, Augment::None).apply(&gray(4, 2, px), false, &mut rng());
        close(&out, &[7.642857]);
        // Enlarging 1 pixel gives a constant image of the output size.
        let out = identity(3, 1, Augment::None).apply(&gray(1, 1, vec![9]), false, &mut rng());
        close(&out, &[9.0; 9]);
        // 2 → 4 bilinear with half-pixel centres: 0, 0.25, 0.75, 1 of the way (edges clamped).
        let out = identity(4, 1, Augment::None).apply(
            &gray(2, 2, vec![0, 100, 0, 100]),
            false,
            &mut rng(),
        );
        close(&out[..4], &[0.0, 25.0, 75.0, 100.0]);
        assert_eq!(center_offset(5, 2), 2); // round(1.5) = 2
        assert_eq!(center_offset(3, 2), 0); // round(0.5) = 0
        assert_eq!(center_offset(7, 2), 2); // round(2.5) = 2
    }

    #[test]
    fn flip_is_deterministic_per_seed_and_happens_half_the_time() {
        let img = gray(2, 2, vec![1, 2, 3, 4]);
        let t = identity(2, 1, Augment::Flip);
        let mut flips = 0;
        for seed in 0..200 {
            let a = t.apply(&img, true, &mut ChaCha8Rng::seed_from_u64(seed));
            let b = t.apply(&img, true, &mut ChaCha8Rng::seed_from_u64(seed));
            assert_eq!(a, b);
            if a == [2.0, 1.0, 4.0, 3.0] {
                flips += 1;
            } else {
                assert_eq!(a, [1.0, 2.0, 3.0, 4.0]);
            }
        }
        assert!((70..130).contains(&flips), "{flips} flips of 200");
        // Test mode never flips.
        for seed in 0..20 {
            let out = t.apply(&img, false, &mut ChaCha8Rng::seed_from_u64(seed));
            assert_eq!(out, [1.0, 2.0, 3.0, 4.0]);
        }
    }

    #[test]
    fn crop_flip_shifts_by_at_most_four_with_zero_padding() {
        let t = identity(8, 1, Augment::CropFlip);
        let img = gray(8, 8, vec![200; 64]);
        let mut saw_padding = false;
        for seed in 0..50 {
            let out = t.apply(&img, true, &mut ChaCha8Rng::seed_from_u64(seed));
            assert_eq!(out.len(), 64);
            let zeros = out.iter().filter(|&&v| v == 0.0).count();
            let rest = out.iter().filter(|&&v| (v - 200.0).abs() < 1e-3).count();
            assert_eq!(zeros + rest, 64);
            // At least a 4×4 block of the image survives any shift of ≤ 4.
            assert!(rest >= 16, "{rest}");
            saw_padding |= zeros > 0;
        }
        assert!(saw_padding);
    }

    #[test]
    fn resized_crop_outputs_the_size_and_stays_in_range() {
        let t = identity(5, 3, Augment::ResizedCropFlip);
        let px: Vec<u8> = (0..40 * 30 * 3).map(|i| (i % 251) as u8).collect();
        let img = RawImage {
            width: 40,
            height: 30,
            channels: 3,
            pixels: px,
        };
        for seed in 0..30 {
            let out = t.apply(&img, true, &mut ChaCha8Rng::seed_from_u64(seed));
            assert_eq!(out.len(), 3 * 25);
            assert!(out.iter().all(|v| (0.0..=250.001).contains(v)));
        }
        for seed in 0..200 {
            let (l, t, w, h) =
                random_resized_crop_box(40, 30, &mut ChaCha8Rng::seed_from_u64(seed));
            assert!(l + w <= 40 && t + h <= 30 && w > 0 && h > 0);
            let area = (w * h) as f64 / 1200.0;
            assert!((0.06..=1.0).contains(&area), "{area}");
        }
        // A 1×100 strip never fits a 3/4..4/3 crop of ≥ 8 % area: the fallback trims it to
        // ratio 3/4, centred: width 1, height round(1 / 0.75) = 1, top (100 − 1) / 2 = 49.
        assert_eq!(random_resized_crop_box(1, 100, &mut rng()), (0, 49, 1, 1));
    }

    #[test]
    fn channel_conversion() {
        // Gray → RGB replicates, each channel normalised with its own mean/std.
        let t = Transform::new(TransformConfig {
            size: 1,
            channels: 3,
            mean: vec![0.0, 0.5, 1.0],
            std: vec![1.0, 0.5, 0.25],
            augment: Augment::None,
        })
        .unwrap();
        close(
            &t.apply(&gray(1, 1, vec![255]), false, &mut rng()),
            &[1.0, 1.0, 0.0],
        );
        // RGB → gray: 0.2989·100 + 0.587·50 + 0.114·200 = 29.89 + 29.35 + 22.8 = 82.04.
        let rgb = RawImage {
            width: 1,
            height: 1,
            channels: 3,
            pixels: vec![100, 50, 200],
        };
        close(
            &identity(1, 1, Augment::None).apply(&rgb, false, &mut rng()),
            &[82.04],
        );
        // RGB stays planar: HWC [r0 g0 b0 r1 g1 b1] → CHW [r0 r1 g0 g1 b0 b1].
        let rgb = RawImage {
            width: 2,
            height: 1,
            channels: 3,
            pixels: vec![1, 2, 3, 4, 5, 6],
        };
        let t = identity(1, 3, Augment::None);
        let t = Transform::new(TransformConfig {
            size: 2,
            ..t.config().clone()
        })
        .unwrap();
        // 2×1 resized to shorter side 2 → 4×2, centre crop 2×2 from column 1: bilinear 2→4 gives
        // columns [a, .75a+.25b, .25a+.75b, b]; the crop keeps the middle two.
        let out = t.apply(&rgb, false, &mut rng());
        close(
            &out,
            &[
                1.75, 3.25, 1.75, 3.25, 2.75, 4.25, 2.75, 4.25, 3.75, 5.25, 3.75, 5.25,
            ],
        );
    }

    #[test]
    fn the_centre_window_equals_the_crop_of_a_full_resize_bit_for_bit() {
        // Odd sizes, up- and downscaling, both orientations, 1 and 3 channels.
        for (w, h, c, size) in [
            (7usize, 19usize, 1usize, 5usize),
            (23, 9, 3, 4),
            (5, 5, 1, 9),
            (3, 50, 3, 4),
        ] {
            let data: Vec<f32> = (0..w * h * c).map(|i| ((i * 37) % 251) as f32).collect();
            let p = Planes { w, h, c, data };
            let (nw, nh) = if w <= h {
                (size, size * h / w)
            } else {
                (size * w / h, size)
            };
            let full = p.clone().resize(nw, nh).crop(
                center_offset(nw, size),
                center_offset(nh, size),
                size,
                size,
            );
            let window = resize_center_crop(p, size);
            assert_eq!(full.data, window.data, "{w}x{h}x{c} -> {size}");
        }
    }

    #[test]
    fn an_extreme_strip_is_resized_without_materialising_it() {
        // 1×65535 resized to a short side of 224 would be 224 × 14.7M pixels; only the centre
        // 224 × 224 is computed. A constant strip stays constant.
        let t = identity(224, 1, Augment::None);
        let img = gray(1, 65535, vec![7; 65535]);
        let t0 = std::time::Instant::now();
        let out = t.apply(&img, false, &mut rng());
        assert_eq!(out.len(), 224 * 224);
        assert!(
            out.iter().all(|v| (v - 7.0).abs() < 1e-3),
            "{:?}",
            &out[..4]
        );
        assert!(t0.elapsed() < std::time::Duration::from_secs(5));
    }
}
