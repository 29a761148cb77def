//! `coco:ANNOTATIONS.json[:IMAGE_DIR]`: COCO detection JSON, read and written.
//!
//! Read: `images` (`id`, `file_name`, `width`, `height`, and an optional `split` of `train`,
//! `test` or `val`), `annotations` (`id`, `image_id`, `category_id`, `bbox` `[x, y, w, h]`,
//! `area`, `iscrowd`) and `categories` (`id`, `name`); other keys (`info`, `licenses`,
//! `segmentation`, …) are COCO's own and ignored. When images carry `split`, a split selects its
//! images; otherwise the file is one split and serves either. Everything is checked at open:
//! boxes inside the image (with 1 px of slack, as COCO's float boxes of the image's edge can
//! overshoot), known categories and images, positive sizes, and that every selected image file
//! exists (a stat per file, nothing decoded). Each error names the file and the annotation or image
//! id.
//!
//! Images decode as ImageFolder's do: gray stays one channel, everything else becomes RGB.
//!
//! Write: [`write_coco`] turns any [`DetectionDataset`] into `annotations.json` + `images/*.png`,
//! so pycocotools, torchvision or detectron2 read the same data makd trains on.

use super::detection::{BoxAnn, Category, DetSample, DetectionDataset};
use super::imagefolder::decode_file;
use super::{out_of_range, RawImage, Split};
use crate::error::{self, IoContext, Result};
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Slack for boxes on the image's edge (COCO's boxes are floats rounded from polygons).
pub const EDGE_TOLERANCE: f64 = 1.0;

#[derive(Deserialize, Serialize)]
struct CocoFile {
    images: Vec<CocoImage>,
    #[serde(default)]
    annotations: Vec<CocoAnn>,
    categories: Vec<Category>,
}

#[derive(Deserialize, Serialize)]
struct CocoImage {
    id: u64,
    file_name: String,
    width: i64,
    height: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    split: Option<String>,
}

#[derive(Deserialize, Serialize)]
struct CocoAnn {
    id: u64,
    image_id: u64,
    category_id: u64,
    bbox: [f64; 4],
    #[serde(default, skip_serializing_if = "Option::is_none")]
    area: Option<f64>,
    #[serde(default)]
    iscrowd: u8,
}

struct Image {
    id: u64,
    file_name: String,
    width: u32,
    height: u32,
    boxes: Vec<BoxAnn>,
}

/// One split of a COCO detection file.
pub struct CocoDataset {
    annotations: PathBuf,
    image_dir: PathBuf,
    split: Split,
    by_split_field: bool,
    images: Vec<Image>,
    categories: Vec<Category>,
    fingerprint: String,
}

impl CocoDataset {
    /// Read and check `annotations`; images live in `image_dir` (default: `images/` next to the
    /// JSON).
    pub fn open(annotations: &Path, image_dir: Option<&Path>, split: Split) -> Result<CocoDataset> {
        let bytes = std::fs::read(annotations).at(annotations)?;
        let at = annotations.display().to_string();
        let file: CocoFile = serde_json::from_slice(&bytes).map_err(|e| {
            error::input(
                format!("not COCO detection JSON: {e}"),
                format!("{at}:{}:{}", e.line(), e.column()),
                "a COCO file has `images`, `annotations` and `categories` (see cocodataset.org/#format-data)",
            )
        })?;
        let image_dir = image_dir.map(Path::to_path_buf).unwrap_or_else(|| {
            annotations
                .parent()
                .unwrap_or(Path::new("."))
                .join("images")
        });
        let bad = |what: String, item: String, hint: &str| {
            error::input(what, format!("{at}: {item}"), hint)
        };

        let mut category_index = HashMap::new();
        for (k, c) in file.categories.iter().enumerate() {
            if category_index.insert(c.id, k).is_some() {
                return Err(bad(
                    format!("category id {} appears twice", c.id),
                    format!("categories[id={}]", c.id),
                    "give every category its own id",
                ));
            }
        }
        if file.categories.is_empty() {
            return Err(bad(
                "no categories".into(),
                "categories".into(),
                "list the categories as [{\"id\": 1, \"name\": \"...\"}, ...]",
            ));
        }

        let by_split_field = file.images.iter().any(|im| im.split.is_some());
        let mut images = Vec::new();
        let mut image_index = HashMap::new();
        let mut all_ids = HashMap::new();
        for im in &file.images {
            let item = format!("images[id={}]", im.id);
            if all_ids.insert(im.id, (im.width, im.height)).is_some() {
                return Err(bad(
                    format!("image id {} appears twice", im.id),
                    item,
                    "give every image its own id",
                ));
            }
            if im.width <= 0
                || im.height <= 0
                || im.width > u32::MAX as i64
                || im.height > u32::MAX as i64
            {
                return Err(bad(
                    format!("image size {}×{} is not positive", im.width, im.height),
                    item,
                    "width and height are the image's size in pixels",
                ));
            }
            if by_split_field {
                let Some(s) = &im.split else {
                    return Err(bad(
                        "this image has no `split` while others have one".into(),
                        item,
                        "give every image a split (train, test or val), or none",
                    ));
                };
                let s: Split = s.parse().map_err(|_| {
                    bad(
                        format!("unknown split {s:?}"),
                        item.clone(),
                        "use one of: train, test, val",
                    )
                })?;
                if s != split {
                    continue;
                }
            }
            image_index.insert(im.id, images.len());
            images.push(Image {
                id: im.id,
                file_name: im.file_name.clone(),
                width: im.width as u32,
                height: im.height as u32,
                boxes: Vec::new(),
            });
        }

        for a in &file.annotations {
            let item = format!("annotations[id={}]", a.id);
            if !all_ids.contains_key(&a.image_id) {
                return Err(bad(
                    format!("image_id {} is not in `images`", a.image_id),
                    item,
                    "every annotation belongs to an image listed in `images`",
                ));
            }
            let Some(&category) = category_index.get(&a.category_id) else {
                return Err(bad(
                    format!("category_id {} is not in `categories`", a.category_id),
                    item,
                    "every annotation's category_id must be one of the `categories` ids",
                ));
            };
            // Checked against its image whichever split it is in: a bad box is a bad file.
            let (width, height) = all_ids[&a.image_id];
            let [x, y, w, h] = a.bbox;
            if !(w > 0.0 && h > 0.0 && a.bbox.iter().all(|v| v.is_finite())) {
                return Err(bad(
                    format!("box {:?} has a non-positive size", a.bbox),
                    item,
                    "bbox is [x, y, width, height] with width and height above 0",
                ));
            }
            let t = EDGE_TOLERANCE;
            if x < -t || y < -t || x + w > width as f64 + t || y + h > height as f64 + t {
                return Err(bad(
                    format!(
                        "box {:?} lies outside its image {} ({width}×{height})",
                        a.bbox, a.image_id
                    ),
                    item,
                    "bbox is [x, y, width, height] in pixels from the top-left corner; \
                     check the image's width and height",
                ));
            }
            if a.iscrowd > 1 {
                return Err(bad(
                    format!("iscrowd is {}", a.iscrowd),
                    item,
                    "iscrowd is 0 or 1",
                ));
            }
            let Some(&k) = image_index.get(&a.image_id) else {
                continue; // an image of the other split
            };
            images[k].boxes.push(BoxAnn {
                bbox: a.bbox.map(|v| v as f32),
                category,
                area: a.area.unwrap_or(w * h) as f32,
                iscrowd: a.iscrowd == 1,
            });
        }

        let missing: Vec<&Image> = images
            .iter()
            .filter(|im| !image_dir.join(&im.file_name).is_file())
            .collect();
        if let Some(first) = missing.first() {
            return Err(error::input(
                format!(
                    "{} of {} image files are missing, the first {} (image id {})",
                    missing.len(),
                    images.len(),
                    image_dir.join(&first.file_name).display(),
                    first.id
                ),
                at,
                "file_name is relative to the image dir: give it as coco:ANNOTATIONS.json:IMAGE_DIR \
                 (default: images/ next to the JSON)",
            ));
        }
        let mut hashed = bytes;
        hashed.extend_from_slice(format!("\0{split} {by_split_field}").as_bytes());
        Ok(CocoDataset {
            annotations: annotations.to_path_buf(),
            image_dir,
            split,
            by_split_field,
            images,
            categories: file.categories,
            fingerprint: crate::files::sha256_hex(&hashed),
        })
    }

    fn image(&self, i: usize) -> Result<&Image> {
        self.images
            .get(i)
            .ok_or_else(|| out_of_range(i, self.images.len(), &self.describe()))
    }
}

impl DetectionDataset for CocoDataset {
    fn len(&self) -> usize {
        self.images.len()
    }
    fn categories(&self) -> &[Category] {
        &self.categories
    }
    fn image_id(&self, i: usize) -> u64 {
        self.images[i].id
    }
    fn file_name(&self, i: usize) -> String {
        self.images[i].file_name.clone()
    }
    fn boxes(&self, i: usize) -> Result<Vec<BoxAnn>> {
        Ok(self.image(i)?.boxes.clone())
    }
    fn get(&self, i: usize) -> Result<DetSample> {
        let im = self.image(i)?;
        let path = self.image_dir.join(&im.file_name);
        let image = decode_file(&path)?;
        if (image.width, image.height) != (im.width, im.height) {
            return Err(error::input(
                format!(
                    "the file is {}×{} but {} says {}×{} (image id {})",
                    image.width,
                    image.height,
                    self.annotations.display(),
                    im.width,
                    im.height,
                    im.id
                ),
                path.display().to_string(),
                "the annotation file and the image dir must belong together",
            ));
        }
        Ok(DetSample {
            image_id: im.id,
            image,
            boxes: im.boxes.clone(),
        })
    }
    fn describe(&self) -> String {
        let which = if self.by_split_field {
            format!("{} split", self.split)
        } else {
            "whole file".into()
        };
        format!(
            "coco {} ({which}, {} images, {} boxes, {} categories, images in {})",
            self.annotations.display(),
            self.images.len(),
            self.images.iter().map(|i| i.boxes.len()).sum::<usize>(),
            self.categories.len(),
            self.image_dir.display()
        )
    }
    fn fingerprint(&self) -> String {
        self.fingerprint.clone()
    }
}

/// Name of the marker [`write_coco`] leaves first in its directory: a directory holding it (or
/// `annotations.json`) is an export, which a new export may replace.
pub const EXPORT_MARKER: &str = ".makd-export";

/// Write `ds` as COCO: `out_dir/images/<file_name>` (PNG) for every image, then
/// `out_dir/annotations.json` with the categories and their ids, images with ids
/// [`DetectionDataset::image_id`] and annotations with ids 1, 2, … in image order. The JSON is
/// written last and atomically: after a crash there is either no `annotations.json` or a whole
/// one describing images that all exist. `progress` advances once per image.
pub fn write_coco(ds: &dyn DetectionDataset, out_dir: &Path, progress: &ProgressBar) -> Result<()> {
    std::fs::create_dir_all(out_dir).at(out_dir)?;
    let marker = out_dir.join(EXPORT_MARKER);
    std::fs::write(&marker, b"").at(&marker)?;
    let image_dir = out_dir.join("images");
    let mut file = CocoFile {
        images: Vec::with_capacity(ds.len()),
        annotations: Vec::new(),
        categories: ds.categories().to_vec(),
    };
    for i in 0..ds.len() {
        let DetSample {
            image_id,
            image,
            boxes,
        } = ds.get(i)?;
        let name = ds.file_name(i);
        let path = image_dir.join(&name);
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).at(dir)?;
        }
        std::fs::write(&path, encode_png(&image, &path)?).at(&path)?;
        file.images.push(CocoImage {
            id: image_id,
            file_name: name,
            width: image.width as i64,
            height: image.height as i64,
            split: None,
        });
        for b in boxes {
            file.annotations.push(CocoAnn {
                id: file.annotations.len() as u64 + 1,
                image_id,
                category_id: file.categories[b.category].id,
                bbox: b.bbox.map(|v| v as f64),
                area: Some(b.area as f64),
                iscrowd: b.iscrowd as u8,
            });
        }
        progress.inc(1);
    }
    crate::files::write_json_atomic(&out_dir.join("annotations.json"), &file)
}

fn encode_png(image: &RawImage, path: &Path) -> Result<Vec<u8>> {
    use image::ImageEncoder;
    let color = match image.channels {
        1 => image::ExtendedColorType::L8,
        _ => image::ExtendedColorType::Rgb8,
    };
    let mut bytes = Vec::new();
    image::codecs::png::PngEncoder::new(&mut bytes)
        .write_image(&image.pixels, image.width, image.height, color)
        .map_err(|e| crate::error::Error::Internal {
            what: format!("encoding {}: {e}", path.display()),
        })?;
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn write(dir: &Path, json: &str, files: &[&str]) -> PathBuf {
        let images = dir.join("images");
        std::fs::create_dir_all(&images).unwrap();
        for f in files {
            image::GrayImage::from_fn(10, 8, |x, y| image::Luma([(x * 20 + y) as u8]))
                .save(images.join(f))
                .unwrap();
        }
        let p = dir.join("ann.json");
        std::fs::write(&p, json).unwrap();
        p
    }

    const CATS: &str = r#""categories": [{"id": 3, "name": "cat"}, {"id": 7, "name": "dog"}]"#;

    fn file(images: &str, anns: &str) -> String {
        format!(r#"{{"info": {{}}, "images": [{images}], "annotations": [{anns}], {CATS}}}"#)
    }

    const IMAGES: &str = r#"{"id": 11, "file_name": "a.png", "width": 10, "height": 8, "split": "train"},
        {"id": 12, "file_name": "b.png", "width": 10, "height": 8, "split": "val"}"#;

    #[test]
    fn reads_boxes_categories_and_splits() {
        let t = tempfile::tempdir().unwrap();
        let anns = r#"{"id": 1, "image_id": 11, "category_id": 7, "bbox": [0, 0, 10, 8], "area": 50, "iscrowd": 0, "segmentation": []},
            {"id": 2, "image_id": 12, "category_id": 3, "bbox": [1.5, 2, 3, 4], "iscrowd": 1},
            {"id": 3, "image_id": 11, "category_id": 3, "bbox": [-0.5, 0, 10.9, 8.5]}"#;
        let p = write(t.path(), &file(IMAGES, anns), &["a.png", "b.png"]);
        let train = CocoDataset::open(&p, None, Split::Train).unwrap();
        assert_eq!(train.len(), 1);
        assert_eq!(train.categories()[1].name, "dog");
        let s = train.get(0).unwrap();
        assert_eq!(
            (s.image_id, s.image.channels, s.image.pixels[1]),
            (11, 1, 20)
        );
        assert_eq!(s.boxes.len(), 2);
        assert_eq!((s.boxes[0].category, s.boxes[0].area), (1, 50.0));
        assert!((s.boxes[1].area - 92.65).abs() < 1e-3);
        let test = CocoDataset::open(&p, None, Split::Test).unwrap();
        let b = &test.boxes(0).unwrap()[0];
        assert_eq!(
            (test.image_id(0), b.bbox, b.category, b.iscrowd),
            (12, [1.5, 2., 3., 4.], 0, true)
        );
        assert_eq!(b.area, 12.0, "area defaults to w·h");
        assert_ne!(train.fingerprint(), test.fingerprint());

        // Without split fields the whole file serves either split.
        let plain = IMAGES
            .replace(r#", "split": "train""#, "")
            .replace(r#", "split": "val""#, "");
        let p = write(t.path(), &file(&plain, ""), &[]);
        for split in [Split::Train, Split::Test] {
            assert_eq!(CocoDataset::open(&p, None, split).unwrap().len(), 2);
        }
    }

    fn open_err(images: &str, anns: &str, files: &[&str]) -> String {
        let t = tempfile::tempdir().unwrap();
        let p = write(t.path(), &file(images, anns), files);
        match CocoDataset::open(&p, None, Split::Train) {
            Err(e @ Error::Input { .. }) => {
                let msg = e.report();
                assert!(msg.contains(&p.display().to_string()), "{msg}");
                msg
            }
            Err(e) => panic!("not an input error: {e:?}"),
            Ok(_) => panic!("opened"),
        }
    }

    #[test]
    fn bad_files_are_input_errors_naming_the_annotation() {
        let ann = |id: u64, image: u64, cat: u64, bbox: &str| {
            format!(r#"{{"id": {id}, "image_id": {image}, "category_id": {cat}, "bbox": {bbox}}}"#)
        };
        let both = ["a.png", "b.png"];
        let m = open_err(IMAGES, &ann(41, 11, 3, "[5, 5, 6.5, 2]"), &both);
        assert!(
            m.contains("annotations[id=41]") && m.contains("outside"),
            "{m}"
        );
        let m = open_err(IMAGES, &ann(42, 11, 3, "[-1.5, 0, 2, 2]"), &both);
        assert!(
            m.contains("annotations[id=42]") && m.contains("outside"),
            "{m}"
        );
        let m = open_err(IMAGES, &ann(43, 11, 5, "[1, 1, 2, 2]"), &both);
        assert!(
            m.contains("annotations[id=43]") && m.contains("category_id 5"),
            "{m}"
        );
        let m = open_err(IMAGES, &ann(44, 99, 3, "[1, 1, 2, 2]"), &both);
        assert!(
            m.contains("annotations[id=44]") && m.contains("image_id 99"),
            "{m}"
        );
        let m = open_err(IMAGES, &ann(45, 11, 3, "[1, 1, 0, 2]"), &both);
        assert!(
            m.contains("annotations[id=45]") && m.contains("non-positive"),
            "{m}"
        );
        // Boxes of the other split are checked too.
        let m = open_err(IMAGES, &ann(46, 12, 3, "[1, 1, 20, 2]"), &both);
        assert!(m.contains("annotations[id=46]"), "{m}");
        let m = open_err(IMAGES, "", &["b.png"]);
        assert!(
            m.contains("a.png") && m.contains("image id 11") && m.contains("1 of 1"),
            "{m}"
        );
        let m = open_err(&IMAGES.replace("\"width\": 10", "\"width\": 0"), "", &both);
        assert!(
            m.contains("images[id=11]") && m.contains("not positive"),
            "{m}"
        );
        let m = open_err(&IMAGES.replace("\"val\"", "\"dev\""), "", &both);
        assert!(m.contains("images[id=12]") && m.contains("dev"), "{m}");
        let m = open_err("{\"id\": 1}", "", &both);
        assert!(m.contains("not COCO"), "{m}");
    }
}
