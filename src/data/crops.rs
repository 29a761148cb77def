//! `crops:DETSPEC[@MARGIN]`: the objects of a detection dataset as a classification dataset.
//!
//! One sample per ground-truth box that is not a crowd region, in image order and box order:
//! id `<image id>#<k>` (`k` the box's index in its image's box list, crowd boxes counted, so ids
//! do not move when crowd handling changes), label = the box's category, classes = the category
//! names. The image is the box grown by MARGIN times its width (left and right) and its height
//! (top and bottom), clamped to the image and rounded outwards to whole pixels; MARGIN defaults to
//! 0 (the box itself), `@0.2` adds a fifth of context on every side. Every teacher backend and the
//! score store then work on objects as they do on images, per-object questions included.
//!
//! Ids and labels come from the box lists, found once at open (a scenes source renders every
//! scene once for it, in parallel).

use super::detection::{self, DetectionDataset, DetectionSpec};
use super::{out_of_range, Dataset, RawImage, Sample, Split};
use crate::error::{self, Error, Result};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

/// The context margin of a crop, a fraction of the box's side: finite and ≥ 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Margin(f32);

// Margins are finite (checked at parse), so bitwise equality is equality.
impl Eq for Margin {}

impl Margin {
    pub const NONE: Margin = Margin(0.0);

    pub fn new(m: f32) -> Result<Margin> {
        if m.is_finite() && m >= 0.0 {
            Ok(Margin(m + 0.0)) // -0.0 → 0.0
        } else {
            Err(error::input(
                format!("margin {m} is not a non-negative number"),
                "crops margin",
                "write the margin as a fraction of the box side, e.g. crops:scenes:fashion-mnist@0.2",
            ))
        }
    }

    pub fn get(self) -> f32 {
        self.0
    }
}

/// `crops:DETSPEC[@MARGIN]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CropsSpec {
    pub detection: DetectionSpec,
    pub margin: Margin,
}

pub const CROPS_SPEC_FORM: &str =
    "crops:DETECTION_SPEC[@MARGIN], e.g. crops:scenes:fashion-mnist@0.2";

impl FromStr for CropsSpec {
    type Err = Error;
    /// Parses what follows `crops:`. A trailing `@X` without `/` or `:` in X is the margin; a
    /// path that itself ends in such an `@…` needs an explicit `@0` after it.
    fn from_str(rest: &str) -> Result<Self> {
        let (det, margin) = match rest.rsplit_once('@') {
            Some((det, m)) if !m.contains(['/', ':']) => {
                let v: f32 = m.trim().parse().map_err(|_| {
                    error::input(
                        format!("margin {m:?} is not a number"),
                        format!("dataset spec \"crops:{rest}\""),
                        CROPS_SPEC_FORM,
                    )
                })?;
                (det, Margin::new(v)?)
            }
            _ => (rest, Margin::NONE),
        };
        Ok(CropsSpec {
            detection: det.parse()?,
            margin,
        })
    }
}

impl fmt::Display for CropsSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "crops:{}", self.detection)?;
        if self.margin != Margin::NONE {
            write!(f, "@{}", self.margin.0)?;
        }
        Ok(())
    }
}

/// One split of the objects of a detection dataset.
pub struct Crops {
    inner: Arc<dyn DetectionDataset>,
    margin: f32,
    /// (image index, box index) of each object.
    objects: Vec<(usize, usize)>,
    ids: Vec<String>,
    labels: Vec<usize>,
    classes: Vec<String>,
}

impl Crops {
    pub fn open(spec: &CropsSpec, split: Split) -> Result<Crops> {
        Crops::new(super::open_detection(&spec.detection, split)?, spec.margin)
    }

    /// The objects of an opened detection dataset.
    pub fn new(inner: Arc<dyn DetectionDataset>, margin: Margin) -> Result<Crops> {
        let boxes = detection::all_boxes(inner.as_ref())?;
        let (mut objects, mut ids, mut labels) = (Vec::new(), Vec::new(), Vec::new());
        for (i, list) in boxes.iter().enumerate() {
            let image_id = inner.image_id(i);
            for (k, b) in list.iter().enumerate() {
                if b.iscrowd {
                    continue;
                }
                objects.push((i, k));
                ids.push(format!("{image_id}#{k}"));
                labels.push(b.category);
            }
        }
        let classes = inner.categories().iter().map(|c| c.name.clone()).collect();
        Ok(Crops {
            inner,
            margin: margin.get(),
            objects,
            ids,
            labels,
            classes,
        })
    }
}

/// The pixel window `[x0, y0, x1, y1)` of a box grown by `margin` of its sides, clamped to a
/// `width × height` image, rounded outwards, at least one pixel.
pub fn crop_window(bbox: [f32; 4], margin: f32, width: u32, height: u32) -> [usize; 4] {
    let [x, y, w, h] = bbox;
    let (mx, my) = (margin * w, margin * h);
    let span = |lo: f32, hi: f32, size: u32| {
        let a = ((lo.floor().max(0.0)) as usize).min(size as usize - 1);
        let b = ((hi.ceil().min(size as f32)) as usize).max(a + 1);
        (a, b)
    };
    let (x0, x1) = span(x - mx, x + w + mx, width);
    let (y0, y1) = span(y - my, y + h + my, height);
    [x0, y0, x1, y1]
}

fn crop(img: &RawImage, [x0, y0, x1, y1]: [usize; 4]) -> RawImage {
    let (w, c) = (img.width as usize, img.channels as usize);
    let mut pixels = Vec::with_capacity((x1 - x0) * (y1 - y0) * c);
    for y in y0..y1 {
        pixels.extend_from_slice(&img.pixels[(y * w + x0) * c..(y * w + x1) * c]);
    }
    RawImage {
        width: (x1 - x0) as u32,
        height: (y1 - y0) as u32,
        channels: img.channels,
        pixels,
    }
}

impl Dataset for Crops {
    fn len(&self) -> usize {
        self.objects.len()
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
        let Some(&(image, k)) = self.objects.get(i) else {
            return Err(out_of_range(i, self.len(), &self.describe()));
        };
        let s = self.inner.get(image)?;
        let b = &s.boxes[k];
        let window = crop_window(b.bbox, self.margin, s.image.width, s.image.height);
        Ok(Sample {
            id: self.ids[i].clone(),
            image: crop(&s.image, window),
            label: self.labels[i],
        })
    }
    fn describe(&self) -> String {
        format!(
            "crops of {} ({} objects, margin {})",
            self.inner.describe(),
            self.len(),
            self.margin
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::detection::DetectionImages;
    use crate::data::scenes::tests::scenes;

    #[test]
    fn one_crop_per_box_with_its_id_label_and_window() {
        let det: Arc<dyn DetectionDataset> = Arc::new(scenes(Split::Train, 0));
        let tight = Crops::new(det.clone(), Margin::NONE).unwrap();
        let wide = Crops::new(det.clone(), Margin::new(0.2).unwrap()).unwrap();
        let total: usize = (0..det.len()).map(|i| det.boxes(i).unwrap().len()).sum();
        assert_eq!((tight.len(), wide.len()), (total, total));
        assert_eq!(tight.classes(), ["c0", "c1", "c2", "c3", "c4"]);
        let mut j = 0;
        let mut grown = 0;
        for i in 0..det.len() {
            let s = det.get(i).unwrap();
            for (k, b) in s.boxes.iter().enumerate() {
                assert_eq!(tight.id(j), format!("{}#{k}", s.image_id));
                assert_eq!((tight.label(j), wide.label(j)), (b.category, b.category));
                let c = tight.get(j).unwrap();
                let [x, y, w, h] = b.bbox.map(|v| v as usize);
                assert_eq!((c.image.width, c.image.height), (w as u32, h as u32));
                assert_eq!(c.image.pixels[0], s.image.pixels[y * 64 + x]);
                assert_eq!(
                    c.image.pixels.last(),
                    Some(&s.image.pixels[(y + h - 1) * 64 + x + w - 1])
                );
                let g = wide.get(j).unwrap().image;
                let [x0, y0, x1, y1] = crop_window(b.bbox, 0.2, 64, 64);
                assert_eq!((g.width, g.height), ((x1 - x0) as u32, (y1 - y0) as u32));
                assert!(g.width >= w as u32 && g.height >= h as u32);
                grown += usize::from(g.width > w as u32);
                j += 1;
            }
        }
        assert!(grown > total / 2, "{grown} of {total} grew");
        assert!(tight.get(total).is_err());
    }

    #[test]
    fn images_view_labels_by_the_largest_box() {
        let det: Arc<dyn DetectionDataset> = Arc::new(scenes(Split::Test, 0));
        let view = DetectionImages::new(det.clone()).unwrap();
        assert_eq!(view.len(), det.len());
        for i in 0..det.len() {
            let boxes = det.boxes(i).unwrap();
            let largest = boxes.iter().map(|b| b.area).fold(0.0, f32::max);
            let label = view.label(i);
            assert!(
                boxes
                    .iter()
                    .any(|b| b.category == label && b.area == largest),
                "image {i}"
            );
            assert_eq!(view.id(i), (i + 1).to_string());
        }
        assert_eq!(view.get(3).unwrap().image, det.get(3).unwrap().image);
    }

    #[test]
    fn windows_grow_clamp_and_round_outwards() {
        assert_eq!(crop_window([2.0, 3.0, 4.0, 5.0], 0.0, 10, 10), [2, 3, 6, 8]);
        assert_eq!(crop_window([2.5, 3.0, 4.0, 5.0], 0.0, 10, 10), [2, 3, 7, 8]);
        // 0.5 of a 4×5 box: 2 px left/right, 2.5 px top/bottom, clamped at 0 and 10.
        assert_eq!(
            crop_window([2.0, 3.0, 4.0, 5.0], 0.5, 10, 10),
            [0, 0, 8, 10]
        );
        assert_eq!(
            crop_window([6.0, 6.0, 2.0, 2.0], 0.25, 10, 10),
            [5, 5, 9, 9]
        );
        // A sliver on the edge still gives one pixel.
        assert_eq!(
            crop_window([9.9, 0.0, 0.05, 1.0], 0.0, 10, 10),
            [9, 0, 10, 1]
        );
    }

    #[test]
    fn specs_round_trip_and_bad_margins_are_errors() {
        for s in [
            "crops:scenes:fashion-mnist",
            "crops:scenes:fashion-mnist@0.2",
            "crops:coco:a/b.json:imgs@1.5",
        ] {
            let spec: CropsSpec = s.strip_prefix("crops:").unwrap().parse().unwrap();
            assert_eq!(spec.to_string(), s);
        }
        let spec: CropsSpec = "coco:x@y/a.json".parse().unwrap();
        assert_eq!(
            spec.margin,
            Margin::NONE,
            "an @ inside a path is not a margin"
        );
        for bad in [
            "scenes:fashion-mnist@-1",
            "scenes:fashion-mnist@wide",
            "scenes:fashion-mnist@NaN",
        ] {
            assert!(
                matches!(bad.parse::<CropsSpec>(), Err(Error::Input { .. })),
                "{bad}"
            );
        }
    }
}
