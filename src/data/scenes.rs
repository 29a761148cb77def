//! `scenes:SPEC`: synthetic scenes of real images, the offline default for detection.
//!
//! Each scene is a black canvas with a few images of a classification dataset pasted onto it;
//! its boxes are where they landed. Train scenes draw their items from the source's train split
//! only, test scenes from its test split only (for Fashion-MNIST, the `train-*` and `t10k-*` files),
//! so no test object was ever seen in training.
//!
//! The defaults ([`SceneParams::default`]):
//! - a [`CANVAS`]×[`CANVAS`] (64×64) canvas, black;
//! - [`MIN_ITEMS`]..=[`MAX_ITEMS`] (1–4) items, each an image of the source drawn at random,
//!   rescaled (bilinear, antialiased when shrinking: [`super::detection::resize`]) so its longer
//!   side is [`MIN_SIDE`]..=[`MAX_SIDE`] (14–48) pixels, aspect ratio kept;
//! - an item is placed at a random position where its box overlaps every box already placed by at
//!   most IoU [`MAX_IOU`] (0.3); after [`PLACEMENT_TRIES`] (20) positions that all overlap more, the
//!   item is dropped;
//! - items are pasted by maximum (Fashion-MNIST is white-on-black, so an item over another keeps
//!   both visible);
//! - box = the tight box of the item's nonzero pixels after rescaling (an item that rescales to all
//!   zeros is skipped), area = w·h, category = the item's class (the categories are the source's
//!   classes, COCO ids 1..=C);
//! - half as many scenes as the source split has images ([`SCENES_PER_SOURCE_IMAGE`]): 30000 train
//!   and 5000 test scenes for Fashion-MNIST.
//!
//! A scene is a pure function of (split, scene index): its random numbers come from ChaCha8 seeded
//! with a fixed constant, the split and the index, so scenes are rendered on the fly in
//! [`Scenes::get`] (well under a millisecond each) and nothing is cached. Image ids are the scene
//! index + 1; file names are `{split}/{image_id:06}.png`.
//!
//! A scene is gray when its items are gray and RGB (gray items replicated) as soon as one item is.

use super::detection::{resize, BoxAnn, Category, DetSample, DetectionDataset};
use super::{out_of_range, Dataset, DatasetSpec, RawImage, Split};
use crate::error::{self, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::sync::Arc;

pub const CANVAS: u32 = 64;
pub const MIN_ITEMS: usize = 1;
pub const MAX_ITEMS: usize = 4;
pub const MIN_SIDE: u32 = 14;
pub const MAX_SIDE: u32 = 48;
pub const MAX_IOU: f32 = 0.3;
pub const PLACEMENT_TRIES: usize = 20;
/// Scenes per source image: one scene for every two source images.
pub const SCENES_PER_SOURCE_IMAGE: f64 = 0.5;

/// The fixed part of every scene's seed (changing it changes every scene).
const SEED: u64 = 0x005c_e7e5_ed0f_1ea1;

/// What a scene is made of; the fingerprint records it.
#[derive(Clone, Debug, PartialEq)]
pub struct SceneParams {
    pub canvas: u32,
    pub min_items: usize,
    pub max_items: usize,
    pub min_side: u32,
    pub max_side: u32,
    pub max_iou: f32,
    pub placement_tries: usize,
    pub scenes_per_source_image: f64,
}

impl Default for SceneParams {
    fn default() -> Self {
        SceneParams {
            canvas: CANVAS,
            min_items: MIN_ITEMS,
            max_items: MAX_ITEMS,
            min_side: MIN_SIDE,
            max_side: MAX_SIDE,
            max_iou: MAX_IOU,
            placement_tries: PLACEMENT_TRIES,
            scenes_per_source_image: SCENES_PER_SOURCE_IMAGE,
        }
    }
}

/// One split of synthetic scenes over a classification dataset.
pub struct Scenes {
    spec: DatasetSpec,
    source: Arc<dyn Dataset>,
    split: Split,
    params: SceneParams,
    categories: Vec<Category>,
    len: usize,
}

impl Scenes {
    /// Scenes of `split` with the default parameters, items from that split of `spec`.
    pub fn new(spec: DatasetSpec, split: Split) -> Result<Scenes> {
        let source = super::open(&spec, split)?;
        Scenes::with_params(spec, source, split, SceneParams::default())
    }

    /// Scenes over an opened source (its split is `split`) with chosen parameters.
    pub fn with_params(
        spec: DatasetSpec,
        source: Arc<dyn Dataset>,
        split: Split,
        params: SceneParams,
    ) -> Result<Scenes> {
        let at = format!("scenes:{spec}");
        if source.is_empty() {
            return Err(error::input(
                format!("the {split} split has no images to paste"),
                at,
                "scenes need a source dataset with images in both splits",
            ));
        }
        if params.min_items == 0
            || params.min_items > params.max_items
            || params.min_side == 0
            || params.min_side > params.max_side
            || params.max_side > params.canvas
        {
            return Err(error::input(
                format!("inconsistent scene parameters {params:?}"),
                at,
                "items need 1 ≤ min ≤ max and sides 1 ≤ min ≤ max ≤ canvas",
            ));
        }
        let len = ((source.len() as f64 * params.scenes_per_source_image) as usize).max(1);
        let categories = source
            .classes()
            .iter()
            .enumerate()
            .map(|(i, name)| Category {
                id: i as u64 + 1,
                name: name.clone(),
            })
            .collect();
        Ok(Scenes {
            spec,
            source,
            split,
            params,
            categories,
            len,
        })
    }

    /// The RNG of scene `i`: a pure function of (constant, split, index).
    fn rng(&self, i: usize) -> ChaCha8Rng {
        let mut seed = [0u8; 32];
        seed[..8].copy_from_slice(&SEED.to_le_bytes());
        seed[8] = match self.split {
            Split::Train => 1,
            Split::Test => 2,
        };
        seed[16..24].copy_from_slice(&(i as u64).to_le_bytes());
        ChaCha8Rng::from_seed(seed)
    }

    /// Render scene `i`; with `paint` false only the boxes are found (the canvas stays empty).
    fn render(&self, i: usize, paint: bool) -> Result<(RawImage, Vec<BoxAnn>)> {
        if i >= self.len {
            return Err(out_of_range(i, self.len, &self.describe()));
        }
        let p = &self.params;
        let size = p.canvas as usize;
        let mut rng = self.rng(i);
        let n = rng.random_range(p.min_items..=p.max_items);
        let mut placed: Vec<(RawImage, usize, usize, BoxAnn)> = Vec::with_capacity(n);
        for _ in 0..n {
            let j = rng.random_range(0..self.source.len());
            let side = rng.random_range(p.min_side..=p.max_side) as f32;
            // Positions are drawn even for an item that is skipped, so one empty item does not
            // shift every later random number of the scene.
            let xs: Vec<f32> = (0..p.placement_tries).map(|_| rng.random()).collect();
            let ys: Vec<f32> = (0..p.placement_tries).map(|_| rng.random()).collect();
            let sample = self.source.get(j)?;
            let img = &sample.image;
            let scale = side / img.width.max(img.height) as f32;
            let w = ((img.width as f32 * scale).round() as usize).clamp(1, size);
            let h = ((img.height as f32 * scale).round() as usize).clamp(1, size);
            let item = resize(img, w, h);
            let Some([bx, by, bw, bh]) = tight_box(&item) else {
                continue;
            };
            let spot = xs.iter().zip(&ys).find_map(|(fx, fy)| {
                let x = (fx * (size - w + 1) as f32) as usize;
                let y = (fy * (size - h + 1) as f32) as usize;
                let b = [(x + bx) as f32, (y + by) as f32, bw as f32, bh as f32];
                let fits = placed.iter().all(|o| iou(&o.3.bbox, &b) <= p.max_iou);
                fits.then_some((x, y, b))
            });
            let Some((x, y, bbox)) = spot else {
                continue;
            };
            let ann = BoxAnn {
                bbox,
                category: sample.label,
                area: bbox[2] * bbox[3],
                iscrowd: false,
            };
            placed.push((item, x, y, ann));
        }
        let channels = if placed.iter().any(|p| p.0.channels == 3) {
            3
        } else {
            1
        };
        let mut canvas = RawImage {
            width: p.canvas,
            height: p.canvas,
            channels,
            pixels: Vec::new(),
        };
        if paint {
            canvas.pixels = vec![0u8; size * size * channels as usize];
            for (item, x, y, _) in &placed {
                paste_max(&mut canvas, item, *x, *y);
            }
        }
        Ok((canvas, placed.into_iter().map(|p| p.3).collect()))
    }
}

/// `[x, y, w, h]` of the nonzero pixels, `None` when there are none.
fn tight_box(img: &RawImage) -> Option<[usize; 4]> {
    let (w, c) = (img.width as usize, img.channels as usize);
    let (mut x0, mut y0, mut x1, mut y1) = (usize::MAX, usize::MAX, 0, 0);
    for (k, px) in img.pixels.chunks_exact(c).enumerate() {
        if px.iter().any(|&v| v > 0) {
            let (x, y) = (k % w, k / w);
            x0 = x0.min(x);
            y0 = y0.min(y);
            x1 = x1.max(x);
            y1 = y1.max(y);
        }
    }
    (x0 != usize::MAX).then(|| [x0, y0, x1 - x0 + 1, y1 - y0 + 1])
}

/// Intersection over union of two `[x, y, w, h]` boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let iw = ((a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0])).max(0.0);
    let ih = ((a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1])).max(0.0);
    let inter = iw * ih;
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union > 0.0 {
        inter / union
    } else {
        0.0
    }
}

/// Paste `item` at (`x`, `y`) by per-pixel maximum; a gray item on an RGB canvas is replicated.
fn paste_max(canvas: &mut RawImage, item: &RawImage, x: usize, y: usize) {
    let (cw, cc) = (canvas.width as usize, canvas.channels as usize);
    let (iw, ic) = (item.width as usize, item.channels as usize);
    for r in 0..item.height as usize {
        for col in 0..iw {
            let src = &item.pixels[(r * iw + col) * ic..(r * iw + col + 1) * ic];
            let dst = ((y + r) * cw + x + col) * cc;
            for ch in 0..cc {
                let v = src[if ic == 1 { 0 } else { ch }];
                let d = &mut canvas.pixels[dst + ch];
                *d = (*d).max(v);
            }
        }
    }
}

impl DetectionDataset for Scenes {
    fn len(&self) -> usize {
        self.len
    }
    fn categories(&self) -> &[Category] {
        &self.categories
    }
    fn image_id(&self, i: usize) -> u64 {
        i as u64 + 1
    }
    fn file_name(&self, i: usize) -> String {
        format!("{}/{:06}.png", self.split, self.image_id(i))
    }
    fn boxes(&self, i: usize) -> Result<Vec<BoxAnn>> {
        Ok(self.render(i, false)?.1)
    }
    fn get(&self, i: usize) -> Result<DetSample> {
        let (image, boxes) = self.render(i, true)?;
        Ok(DetSample {
            image_id: self.image_id(i),
            image,
            boxes,
        })
    }
    fn describe(&self) -> String {
        let p = &self.params;
        format!(
            "synthetic scenes of real images: {} {split} canvases {c}×{c}, {}–{} items of {}–{} px \
             from {}",
            self.len,
            p.min_items,
            p.max_items,
            p.min_side,
            p.max_side,
            self.source.describe(),
            split = self.split,
            c = p.canvas,
        )
    }
    fn fingerprint(&self) -> String {
        let text = format!(
            "scenes v1\0{}\0{}\0{:?}\0{SEED}",
            self.source.fingerprint(),
            self.split,
            self.params
        );
        crate::files::sha256_hex(text.as_bytes())
    }
}

impl Scenes {
    /// The classification spec the items come from.
    pub fn source_spec(&self) -> &DatasetSpec {
        &self.spec
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::data::Sample;

    /// A source of `n` 28×28 gray images, image `j` of class `j % classes`: a filled rectangle
    /// whose size and brightness vary with `j` (never all black).
    pub(crate) struct Blobs {
        ids: Vec<String>,
        classes: Vec<String>,
        tag: u8,
    }

    impl Blobs {
        pub(crate) fn arc(n: usize, classes: usize, tag: u8) -> Arc<dyn Dataset> {
            Arc::new(Blobs {
                ids: (0..n).map(|i| format!("b{i}")).collect(),
                classes: (0..classes).map(|c| format!("c{c}")).collect(),
                tag,
            })
        }
    }

    impl Dataset for Blobs {
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
            i % self.classes.len()
        }
        fn get(&self, i: usize) -> Result<Sample> {
            let (x0, y0) = (2 + i % 5, 3 + i % 7);
            let (x1, y1) = (20 + i % 6, 25 - i % 4);
            let mut pixels = vec![0u8; 28 * 28];
            for y in y0..y1 {
                for x in x0..x1 {
                    pixels[y * 28 + x] = 100 + self.tag + (i % 50) as u8;
                }
            }
            Ok(Sample {
                id: self.ids[i].clone(),
                image: RawImage {
                    width: 28,
                    height: 28,
                    channels: 1,
                    pixels,
                },
                label: self.label(i),
            })
        }
        fn describe(&self) -> String {
            format!("blobs {}", self.tag)
        }
    }

    pub(crate) fn scenes(split: Split, tag: u8) -> Scenes {
        Scenes::with_params(
            "fashion-mnist".parse().unwrap(),
            Blobs::arc(200, 5, tag),
            split,
            SceneParams::default(),
        )
        .unwrap()
    }

    #[test]
    fn a_scene_is_a_pure_function_of_split_and_index() {
        let s = scenes(Split::Train, 0);
        assert_eq!(s.len(), 100, "half the source length");
        let a = s.get(7).unwrap();
        let b = scenes(Split::Train, 0).get(7).unwrap();
        assert_eq!(a.image, b.image);
        assert_eq!(a.boxes, b.boxes);
        assert_eq!(s.boxes(7).unwrap(), a.boxes, "boxes without painting agree");
        assert_ne!(s.get(8).unwrap().image, a.image);
        // The same index of the test split is another scene, and its items are the test source's.
        let t = scenes(Split::Test, 9).get(7).unwrap();
        assert_ne!(t.image, a.image);
        assert_eq!((a.image_id, s.file_name(7)), (8, "train/000008.png".into()));
        assert_eq!(
            (a.image.width, a.image.height, a.image.channels),
            (64, 64, 1)
        );
        assert!(s.describe().contains("synthetic scenes of real images"));
        assert_ne!(s.fingerprint(), scenes(Split::Test, 0).fingerprint());
        assert_eq!(s.fingerprint(), scenes(Split::Train, 0).fingerprint());
        assert!(s.get(100).is_err());
    }

    #[test]
    fn boxes_are_tight_inside_capped_and_cover_every_class() {
        let s = scenes(Split::Train, 0);
        let mut seen = vec![0usize; 5];
        let mut counts = vec![0usize; MAX_ITEMS + 1];
        for i in 0..s.len() {
            let d = s.get(i).unwrap();
            counts[d.boxes.len()] += 1;
            let px = |x: usize, y: usize| d.image.pixels[y * 64 + x];
            for (k, b) in d.boxes.iter().enumerate() {
                seen[b.category] += 1;
                let [x, y, w, h] = b.bbox.map(|v| v as usize);
                assert!(x + w <= 64 && y + h <= 64, "scene {i} box {k} {:?}", b.bbox);
                assert!(w.max(h) <= MAX_SIDE as usize);
                assert_eq!(b.area, (w * h) as f32);
                // Tight: every edge row/column of the box holds a lit pixel, none outside all boxes.
                assert!(
                    (x..x + w).any(|c| px(c, y) > 0) && (x..x + w).any(|c| px(c, y + h - 1) > 0)
                );
                assert!(
                    (y..y + h).any(|r| px(x, r) > 0) && (y..y + h).any(|r| px(x + w - 1, r) > 0)
                );
                for o in &d.boxes[..k] {
                    assert!(iou(&o.bbox, &b.bbox) <= MAX_IOU, "scene {i}");
                }
            }
            for yy in 0..64 {
                for xx in 0..64 {
                    let inside = d.boxes.iter().any(|b| {
                        let [x, y, w, h] = b.bbox;
                        (xx as f32) >= x
                            && (xx as f32) < x + w
                            && (yy as f32) >= y
                            && (yy as f32) < y + h
                    });
                    assert!(inside || px(xx, yy) == 0, "scene {i} lit outside boxes");
                }
            }
        }
        assert!(seen.iter().all(|&n| n > 0), "{seen:?}");
        assert_eq!(counts[0], 0, "a blob never vanishes");
        assert!(
            counts[1..].iter().all(|&n| n > 0),
            "1..=4 items: {counts:?}"
        );
    }

    #[test]
    fn iou_by_hand() {
        assert_eq!(iou(&[0., 0., 2., 2.], &[1., 0., 2., 2.]), 2.0 / 6.0);
        assert_eq!(iou(&[0., 0., 1., 1.], &[5., 5., 1., 1.]), 0.0);
        assert_eq!(iou(&[1., 1., 3., 3.], &[1., 1., 3., 3.]), 1.0);
    }
}
