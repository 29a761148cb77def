//! Detection datasets: images whose labels are boxes.
//!
//! A [`DetectionDataset`] is the detection counterpart of [`super::Dataset`]: a fixed order of
//! images, each with a stable COCO image id and its ground-truth boxes. Two sources implement it:
//! COCO detection JSON ([`super::coco`]) and synthetic scenes pasted from real images of a
//! classification dataset ([`super::scenes`]). [`super::crops`] turns either into a
//! classification dataset of its objects, so every teacher backend and the score store work on
//! objects as on images.
//!
//! Boxes are COCO's: `[x, y, w, h]` in pixels of the image as stored, `(x, y)` its top-left corner.

use super::{Dataset, DatasetSpec, RawImage, Sample};
use crate::error::{self, Error, Result};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// One ground-truth object.
#[derive(Clone, Debug, PartialEq)]
pub struct BoxAnn {
    /// `[x, y, w, h]` in pixels.
    pub bbox: [f32; 4],
    /// Index into [`DetectionDataset::categories`] (not the COCO category id).
    pub category: usize,
    /// COCO's `area` (for the small/medium/large ranges of the evaluator).
    pub area: f32,
    /// A crowd region: matched by detections without counting as a miss or a hit.
    pub iscrowd: bool,
}

/// One image of a detection dataset with its boxes.
#[derive(Clone, Debug)]
pub struct DetSample {
    pub image_id: u64,
    pub image: RawImage,
    pub boxes: Vec<BoxAnn>,
}

/// A category as COCO names it: its id in the JSON and its name.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    pub id: u64,
    pub name: String,
}

/// Images with boxes, indexable in a fixed order.
pub trait DetectionDataset: Send + Sync {
    /// Number of images.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Categories, index = [`BoxAnn::category`].
    fn categories(&self) -> &[Category];
    /// COCO image id of image `i` (stable: the same image always has the same id).
    fn image_id(&self, i: usize) -> u64;
    /// The file name COCO's `images[].file_name` gives image `i` (relative to the image dir).
    fn file_name(&self, i: usize) -> String;
    /// Ground-truth boxes of image `i` (scenes render the image to find them).
    fn boxes(&self, i: usize) -> Result<Vec<BoxAnn>>;
    /// Decode (or render) image `i` with its boxes. Bad files are an input error naming them.
    fn get(&self, i: usize) -> Result<DetSample>;
    /// One line saying what this is (kind, source, split, count).
    fn describe(&self) -> String;
    /// Stable hash of what the images and boxes are made from; a run dir records it.
    fn fingerprint(&self) -> String;
}

/// Where a detection dataset lives, as written in a config or on the command line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DetectionSource {
    /// `coco:ANNOTATIONS.json[:IMAGE_DIR]`; the image dir defaults to `images/` next to the JSON.
    Coco {
        annotations: PathBuf,
        images: Option<PathBuf>,
    },
    /// `scenes:SPEC`: canvases pasted from the images of a classification dataset.
    Scenes(DatasetSpec),
}

/// A detection dataset spec: `coco:FILE.json[:IMAGE_DIR]`, `scenes:fashion-mnist`,
/// `scenes:idx:DIR`, `scenes:imagefolder:ROOT` (any classification spec after `scenes:`), or
/// `scenes:DIR` (an IDX directory or an ImageFolder root, told apart by its files).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DetectionSpec {
    pub source: DetectionSource,
}

pub const DETECTION_SPEC_FORMS: &str =
    "use one of: coco:ANNOTATIONS.json[:IMAGE_DIR], scenes:fashion-mnist, scenes:idx:DIR, scenes:imagefolder:ROOT, scenes:DIR";

impl FromStr for DetectionSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        let bad = |what: String| {
            error::input(
                what,
                format!("detection dataset spec {s:?}"),
                DETECTION_SPEC_FORMS,
            )
        };
        let Some((kind, rest)) = s.split_once(':') else {
            return Err(bad("unknown detection dataset spec".into()));
        };
        if rest.is_empty() {
            return Err(bad(format!("`{kind}:` needs a path after the colon")));
        }
        let source = match kind {
            "coco" => {
                let (annotations, images) = match rest.split_once(':') {
                    Some((a, i)) if !i.is_empty() => (a, Some(PathBuf::from(i))),
                    Some((a, _)) => (a, None),
                    None => (rest, None),
                };
                DetectionSource::Coco {
                    annotations: PathBuf::from(annotations),
                    images,
                }
            }
            "scenes" => {
                DetectionSource::Scenes(scene_source(rest).map_err(|e| bad(e.to_string()))?)
            }
            _ => return Err(bad(format!("unknown detection dataset kind {kind:?}"))),
        };
        Ok(DetectionSpec { source })
    }
}

/// The classification source of `scenes:REST`: a spec (`fashion-mnist`, `idx:DIR`, …) or a bare
/// directory, which is an IDX directory when it holds IDX files and an ImageFolder otherwise.
fn scene_source(rest: &str) -> Result<DatasetSpec> {
    if let Ok(spec) = rest.parse::<DatasetSpec>() {
        return Ok(spec);
    }
    let dir = PathBuf::from(rest);
    let holds_idx = std::fs::read_dir(&dir)
        .map(|entries| {
            entries
                .flatten()
                .any(|e| e.file_name().to_string_lossy().contains("-idx"))
        })
        .unwrap_or(false);
    let kind = if holds_idx { "idx" } else { "imagefolder" };
    format!("{kind}:{rest}").parse()
}

impl DetectionSpec {
    /// The same spec with every relative path in it taken from `base`.
    pub fn absolute(&self, base: &std::path::Path) -> DetectionSpec {
        let abs = |p: &PathBuf| crate::files::absolute_from(p, base);
        let source = match &self.source {
            DetectionSource::Coco {
                annotations,
                images,
            } => DetectionSource::Coco {
                annotations: abs(annotations),
                images: images.as_ref().map(abs),
            },
            DetectionSource::Scenes(spec) => DetectionSource::Scenes(spec.absolute(base)),
        };
        DetectionSpec { source }
    }
}

impl fmt::Display for DetectionSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            DetectionSource::Coco {
                annotations,
                images: None,
            } => write!(f, "coco:{}", annotations.display()),
            DetectionSource::Coco {
                annotations,
                images: Some(i),
            } => write!(f, "coco:{}:{}", annotations.display(), i.display()),
            DetectionSource::Scenes(spec) => write!(f, "scenes:{spec}"),
        }
    }
}

impl Serialize for DetectionSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DetectionSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The boxes of every image, computed once (in parallel: scenes render each image to find them).
pub fn all_boxes(ds: &dyn DetectionDataset) -> Result<Vec<Vec<BoxAnn>>> {
    use rayon::prelude::*;
    (0..ds.len()).into_par_iter().map(|i| ds.boxes(i)).collect()
}

/// The first `n` images of a detection dataset (all of them when `n` exceeds its length); ids,
/// file names and boxes pass through, so an export of a subset matches the full set by id.
pub struct FirstImages {
    inner: Arc<dyn DetectionDataset>,
    n: usize,
}

impl FirstImages {
    pub fn new(inner: Arc<dyn DetectionDataset>, n: usize) -> FirstImages {
        let n = n.min(inner.len());
        FirstImages { inner, n }
    }
}

impl DetectionDataset for FirstImages {
    fn len(&self) -> usize {
        self.n
    }
    fn categories(&self) -> &[Category] {
        self.inner.categories()
    }
    fn image_id(&self, i: usize) -> u64 {
        self.inner.image_id(i)
    }
    fn file_name(&self, i: usize) -> String {
        self.inner.file_name(i)
    }
    fn boxes(&self, i: usize) -> Result<Vec<BoxAnn>> {
        self.check(i)?;
        self.inner.boxes(i)
    }
    fn get(&self, i: usize) -> Result<DetSample> {
        self.check(i)?;
        self.inner.get(i)
    }
    fn describe(&self) -> String {
        format!("{} (first {})", self.inner.describe(), self.n)
    }
    fn fingerprint(&self) -> String {
        crate::files::sha256_hex(
            format!("{}\0first {}", self.inner.fingerprint(), self.n).as_bytes(),
        )
    }
}

impl FirstImages {
    fn check(&self, i: usize) -> Result<()> {
        if i >= self.n {
            return Err(super::out_of_range(i, self.n, &self.describe()));
        }
        Ok(())
    }
}

/// A detection dataset seen as a classification dataset of whole images, so the label stage
/// asks scene-level questions of it unchanged: id = the COCO image id in decimal, classes = the
/// category names, label = the category of the image's largest box (by area, the first of equals;
/// non-crowd boxes before crowd ones). An image without boxes gets label 0: a single class is
/// only a stand-in for a scene, and the score store matches images by id, not by label.
pub struct DetectionImages {
    inner: Arc<dyn DetectionDataset>,
    ids: Vec<String>,
    labels: Vec<usize>,
    classes: Vec<String>,
}

impl DetectionImages {
    /// Finds every image's boxes once (scenes render each image).
    pub fn new(inner: Arc<dyn DetectionDataset>) -> Result<DetectionImages> {
        let boxes = all_boxes(inner.as_ref())?;
        let labels = boxes.iter().map(|b| largest_category(b)).collect();
        let ids = (0..inner.len())
            .map(|i| inner.image_id(i).to_string())
            .collect();
        let classes = inner.categories().iter().map(|c| c.name.clone()).collect();
        Ok(DetectionImages {
            inner,
            ids,
            labels,
            classes,
        })
    }
}

/// The category of the largest box (non-crowd first), 0 without boxes.
fn largest_category(boxes: &[BoxAnn]) -> usize {
    let mut best: Option<&BoxAnn> = None;
    for b in boxes {
        let better = match best {
            None => true,
            Some(o) => (o.iscrowd && !b.iscrowd) || (o.iscrowd == b.iscrowd && b.area > o.area),
        };
        if better {
            best = Some(b);
        }
    }
    best.map_or(0, |b| b.category)
}

impl Dataset for DetectionImages {
    fn len(&self) -> usize {
        self.ids.len()
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn id(&self, i: usize) -> &str {
        &self.ids[i]
    }
    fn label(&self, i: usize) -> usize {
        self.labels[i]
    }
    fn get(&self, i: usize) -> Result<Sample> {
        if i >= self.len() {
            return Err(super::out_of_range(i, self.len(), &self.describe()));
        }
        let s = self.inner.get(i)?;
        Ok(Sample {
            id: self.ids[i].clone(),
            image: s.image,
            label: self.labels[i],
        })
    }
    fn describe(&self) -> String {
        format!(
            "{} as images (label = category of the largest box)",
            self.inner.describe()
        )
    }
}

/// Letterbox a sample to `size × size`: scale so the longer side is `size` (bilinear, antialiased
/// when shrinking), pad the bottom and right with zeros, scale boxes and areas alike. A sample
/// already `size × size` comes back unchanged.
pub fn fit(sample: &DetSample, size: usize) -> DetSample {
    let img = &sample.image;
    let (w, h) = (img.width as usize, img.height as usize);
    if w == size && h == size {
        return sample.clone();
    }
    let scale = size as f32 / w.max(h) as f32;
    let nw = ((w as f32 * scale).round() as usize).clamp(1, size);
    let nh = ((h as f32 * scale).round() as usize).clamp(1, size);
    let resized = resize(img, nw, nh);
    let c = img.channels as usize;
    let mut pixels = vec![0u8; size * size * c];
    for y in 0..nh {
        pixels[y * size * c..(y * size + nw) * c]
            .copy_from_slice(&resized.pixels[y * nw * c..(y + 1) * nw * c]);
    }
    // The exact ratios of the rounded sides, so a box on the image's edge stays on it.
    let (sx, sy) = (nw as f32 / w as f32, nh as f32 / h as f32);
    let boxes = sample
        .boxes
        .iter()
        .map(|b| BoxAnn {
            bbox: [
                b.bbox[0] * sx,
                b.bbox[1] * sy,
                b.bbox[2] * sx,
                b.bbox[3] * sy,
            ],
            area: b.area * sx * sy,
            ..b.clone()
        })
        .collect();
    DetSample {
        image_id: sample.image_id,
        image: RawImage {
            width: size as u32,
            height: size as u32,
            channels: img.channels,
            pixels,
        },
        boxes,
    }
}

/// Mirror a sample left to right, its boxes with it.
pub fn hflip(sample: &DetSample) -> DetSample {
    let img = &sample.image;
    let (w, c) = (img.width as usize, img.channels as usize);
    let mut pixels = Vec::with_capacity(img.pixels.len());
    for row in img.pixels.chunks_exact(w * c) {
        for px in row.chunks_exact(c).rev() {
            pixels.extend_from_slice(px);
        }
    }
    let boxes = sample
        .boxes
        .iter()
        .map(|b| BoxAnn {
            bbox: [
                w as f32 - b.bbox[0] - b.bbox[2],
                b.bbox[1],
                b.bbox[2],
                b.bbox[3],
            ],
            ..b.clone()
        })
        .collect();
    DetSample {
        image_id: sample.image_id,
        image: RawImage {
            pixels,
            ..img.clone()
        },
        boxes,
    }
}

/// Resize to `nw × nh` with a separable triangle filter: bilinear when enlarging, widened to the
/// shrink factor when shrinking (PIL's antialiased BILINEAR), so a large photo pasted small does not
/// alias. Ours rather than `image`'s: on a 28×28 item it is a few microseconds, which keeps a scene
/// well under a millisecond.
pub fn resize(img: &RawImage, nw: usize, nh: usize) -> RawImage {
    let (w, h, c) = (
        img.width as usize,
        img.height as usize,
        img.channels as usize,
    );
    let xs = filter_weights(w, nw);
    let ys = filter_weights(h, nh);
    // Horizontal pass into floats (h × nw × c), then vertical into bytes.
    let mut mid = vec![0f32; h * nw * c];
    for y in 0..h {
        let row = &img.pixels[y * w * c..(y + 1) * w * c];
        let out = &mut mid[y * nw * c..(y + 1) * nw * c];
        for (x, (start, weights)) in xs.iter().enumerate() {
            for ch in 0..c {
                let mut acc = 0f32;
                for (k, wt) in weights.iter().enumerate() {
                    acc += wt * row[(start + k) * c + ch] as f32;
                }
                out[x * c + ch] = acc;
            }
        }
    }
    let mut pixels = vec![0u8; nh * nw * c];
    for (y, (start, weights)) in ys.iter().enumerate() {
        let out = &mut pixels[y * nw * c..(y + 1) * nw * c];
        for (i, o) in out.iter_mut().enumerate() {
            let mut acc = 0f32;
            for (k, wt) in weights.iter().enumerate() {
                acc += wt * mid[(start + k) * nw * c + i];
            }
            *o = acc.round().clamp(0.0, 255.0) as u8;
        }
    }
    RawImage {
        width: nw as u32,
        height: nh as u32,
        channels: img.channels,
        pixels,
    }
}

/// For each output position along one axis: the first source index and the normalised weights.
fn filter_weights(src: usize, dst: usize) -> Vec<(usize, Vec<f32>)> {
    let scale = src as f32 / dst as f32;
    let support = scale.max(1.0);
    (0..dst)
        .map(|i| {
            let centre = (i as f32 + 0.5) * scale;
            let lo = ((centre - support).floor().max(0.0)) as usize;
            let hi = ((centre + support).ceil() as usize).min(src);
            let mut weights: Vec<f32> = (lo..hi)
                .map(|j| (1.0 - ((j as f32 + 0.5 - centre) / support).abs()).max(0.0))
                .collect();
            let sum: f32 = weights.iter().sum();
            if sum > 0.0 {
                weights.iter_mut().for_each(|w| *w /= sum);
            } else {
                // A window that fell between samples: take the nearest one.
                weights.iter_mut().for_each(|w| *w = 0.0);
                let nearest = (centre as usize).min(src - 1);
                return (nearest, vec![1.0]);
            }
            (lo, weights)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(w: u32, h: u32, boxes: &[[f32; 4]]) -> DetSample {
        DetSample {
            image_id: 5,
            image: RawImage {
                width: w,
                height: h,
                channels: 1,
                pixels: (0..w * h).map(|v| (v % 200) as u8 + 1).collect(),
            },
            boxes: boxes
                .iter()
                .map(|&bbox| BoxAnn {
                    bbox,
                    category: 1,
                    area: bbox[2] * bbox[3],
                    iscrowd: false,
                })
                .collect(),
        }
    }

    #[test]
    fn fit_letterboxes_image_and_boxes() {
        // Enlarge 10×5 to 20: ×2, the bottom half padded.
        let s = sample(10, 5, &[[1.0, 1.0, 2.0, 3.0], [8.0, 0.0, 2.0, 5.0]]);
        let f = fit(&s, 20);
        assert_eq!(
            (f.image.width, f.image.height, f.image.pixels.len()),
            (20, 20, 400)
        );
        assert_eq!(f.boxes[0].bbox, [2.0, 2.0, 4.0, 6.0]);
        assert_eq!(f.boxes[0].area, 24.0);
        assert_eq!(
            f.boxes[1].bbox,
            [16.0, 0.0, 4.0, 10.0],
            "the right edge stays the edge"
        );
        assert!(f.image.pixels[..200].iter().all(|&v| v > 0));
        assert!(f.image.pixels[200..].iter().all(|&v| v == 0));
        // Shrink 40×20 to 20: ×½, padding on the bottom.
        let f = fit(&sample(40, 20, &[[4.0, 2.0, 8.0, 4.0]]), 20);
        assert_eq!(
            (f.boxes[0].bbox, f.boxes[0].area),
            ([2.0, 1.0, 4.0, 2.0], 8.0)
        );
        // A tall image pads on the right.
        let f = fit(&sample(5, 10, &[]), 10);
        assert!((0..10).all(|y| f.image.pixels[y * 10 + 5..y * 10 + 10]
            .iter()
            .all(|&v| v == 0)));
        assert!((0..10).all(|y| f.image.pixels[y * 10 + 4] > 0));
        let same = sample(20, 20, &[[1.5, 2.5, 3.0, 4.0]]);
        let f = fit(&same, 20);
        assert_eq!((f.image, f.boxes), (same.image, same.boxes));
    }

    #[test]
    fn hflip_mirrors_pixels_and_boxes() {
        let mut s = sample(4, 2, &[[0.0, 0.0, 1.0, 2.0], [1.5, 1.0, 2.0, 1.0]]);
        s.image.pixels = vec![1, 2, 3, 4, 5, 6, 7, 8];
        let f = hflip(&s);
        assert_eq!(f.image.pixels, [4, 3, 2, 1, 8, 7, 6, 5]);
        assert_eq!(f.boxes[0].bbox, [3.0, 0.0, 1.0, 2.0]);
        assert_eq!(f.boxes[1].bbox, [0.5, 1.0, 2.0, 1.0]);
        let back = hflip(&f);
        assert_eq!((back.image, back.boxes), (s.image.clone(), s.boxes.clone()));
        // RGB pixels move whole.
        s.image = RawImage {
            width: 2,
            height: 1,
            channels: 3,
            pixels: vec![1, 2, 3, 4, 5, 6],
        };
        assert_eq!(hflip(&s).image.pixels, [4, 5, 6, 1, 2, 3]);
    }

    #[test]
    fn resize_is_bilinear_up_and_averages_down() {
        let row = RawImage {
            width: 2,
            height: 1,
            channels: 1,
            pixels: vec![0, 100],
        };
        assert_eq!(resize(&row, 4, 1).pixels, [0, 25, 75, 100]);
        let wide = RawImage {
            width: 4,
            height: 1,
            channels: 1,
            pixels: vec![0, 100, 200, 100],
        };
        // Halving widens the triangle to two source pixels each side: weights 3/7, 3/7, 1/7.
        assert_eq!(resize(&wide, 2, 1).pixels, [71, 143]);
        let flat = RawImage {
            width: 7,
            height: 5,
            channels: 3,
            pixels: vec![42; 105],
        };
        assert!(resize(&flat, 3, 11).pixels.iter().all(|&v| v == 42));
    }

    #[test]
    fn specs_round_trip_as_strings() {
        for s in [
            "coco:ann.json",
            "coco:data/ann.json:data/imgs",
            "scenes:fashion-mnist",
            "scenes:idx:/tmp/x",
            "scenes:imagefolder:/tmp/y",
        ] {
            let spec: DetectionSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
        }
        assert!("scenes:".parse::<DetectionSpec>().is_err());
        assert!("voc:x".parse::<DetectionSpec>().is_err());
    }
}
