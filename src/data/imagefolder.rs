//! torchvision's ImageFolder layout: `ROOT/train/<class>/…/*.png` and `ROOT/val/<class>/…` (or
//! `ROOT/test/<class>/…`).
//!
//! Classes are the sorted names of the class directories of both splits together, so a label
//! means the same class in training and evaluation even when a split lacks a class. Files with
//! extensions png, jpg, jpeg, webp (any case) are images; others (READMEs, `.DS_Store`) are
//! skipped. Ids are paths relative to ROOT with `/` separators (`train/cat/001.png`). Images are
//! decoded on [`Dataset::get`], by content rather than by extension.

use super::{out_of_range, Dataset, RawImage, Sample, Split};
use crate::error::{self, IoContext, Result};
use std::path::{Path, PathBuf};

const EXTENSIONS: [&str; 4] = ["png", "jpg", "jpeg", "webp"];
const LAYOUT_HINT: &str =
    "an imagefolder dataset is ROOT/train/<class>/*.png and ROOT/val/<class>/*.png \
(or ROOT/test/…); formats: png, jpg, jpeg, webp";

/// One split of an ImageFolder tree; only the file list lives in memory.
pub struct ImageFolder {
    root: PathBuf,
    split_dir: String,
    classes: Vec<String>,
    ids: Vec<String>,
    labels: Vec<usize>,
}

/// The directory name a split lives under: `train`, or `val` if present else `test`.
pub fn split_dir_name(root: &Path, split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test if root.join("val").is_dir() => "val",
        Split::Test => "test",
    }
}

/// Sorted names of the subdirectories of `dir` (hidden ones skipped).
fn subdirs(dir: &Path) -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir).at(dir)? {
        let entry = entry.at(dir)?;
        let name = entry.file_name().to_string_lossy().into_owned();
        // `metadata` follows symlinks, so a class directory may be a link.
        if !name.starts_with('.') && std::fs::metadata(entry.path()).is_ok_and(|m| m.is_dir()) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

fn is_image(path: &Path) -> bool {
    path.extension()
        .and_then(|e| e.to_str())
        .is_some_and(|e| EXTENSIONS.contains(&e.to_ascii_lowercase().as_str()))
}

/// Image files under `dir` (recursively, as torchvision walks), as `/`-joined paths relative to
/// `dir`, sorted.
fn images_under(dir: &Path) -> Result<Vec<String>> {
    let mut found = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, rel)) = stack.pop() {
        for entry in std::fs::read_dir(&d).at(&d)? {
            let entry = entry.at(&d)?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.starts_with('.') {
                continue;
            }
            let path = entry.path();
            let rel_name = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            match std::fs::metadata(&path) {
                Ok(m) if m.is_dir() => stack.push((path, rel_name)),
                Ok(m) if m.is_file() && is_image(&path) => found.push(rel_name),
                _ => {}
            }
        }
    }
    found.sort();
    Ok(found)
}

impl ImageFolder {
    pub fn open(root: &Path, split: Split) -> Result<ImageFolder> {
        if !root.is_dir() {
            return Err(error::input(
                "imagefolder root is not a directory",
                root.display().to_string(),
                LAYOUT_HINT,
            ));
        }
        let split_dir = split_dir_name(root, split);
        let dir = root.join(split_dir);
        if !dir.is_dir() {
            let wanted = match split {
                Split::Train => "train/",
                Split::Test => "val/ or test/",
            };
            return Err(error::input(
                format!("no {wanted} directory for the {split} split"),
                root.display().to_string(),
                LAYOUT_HINT,
            ));
        }
        let mut classes: Vec<String> = Vec::new();
        for s in ["train", split_dir_name(root, Split::Test)] {
            let d = root.join(s);
            if d.is_dir() {
                classes.extend(subdirs(&d)?);
            }
        }
        classes.sort();
        classes.dedup();
        let own_classes = subdirs(&dir)?;
        if own_classes.is_empty() {
            return Err(error::input(
                "no class directories",
                dir.display().to_string(),
                LAYOUT_HINT,
            ));
        }
        let mut ids = Vec::new();
        let mut labels = Vec::new();
        for class in &own_classes {
            let class_dir = dir.join(class);
            let files = images_under(&class_dir)?;
            if files.is_empty() {
                return Err(error::input(
                    "class directory holds no images",
                    class_dir.display().to_string(),
                    "add png/jpg/jpeg/webp files or remove the directory",
                ));
            }
            let label = classes
                .binary_search(class)
                .expect("class list holds every split's classes");
            for f in files {
                ids.push(format!("{split_dir}/{class}/{f}"));
                labels.push(label);
            }
        }
        Ok(ImageFolder {
            root: root.to_path_buf(),
            split_dir: split_dir.to_string(),
            classes,
            ids,
            labels,
        })
    }
}

/// Decode an image file into gray (1 channel) or RGB (3 channels); anything wrong with the
/// bytes is an input error naming `path`.
pub fn decode_file(path: &Path) -> Result<RawImage> {
    let bytes = std::fs::read(path).at(path)?;
    decode_bytes(&bytes, &path.display().to_string())
}

/// Decode image bytes; `at` names their source in errors.
pub fn decode_bytes(bytes: &[u8], at: &str) -> Result<RawImage> {
    let bad = |what: String| {
        error::input(
            what,
            at,
            "the file is corrupt or not an image: replace or remove it",
        )
    };
    if bytes.is_empty() {
        return Err(bad("empty file (0 bytes)".into()));
    }
    let reader = image::ImageReader::new(std::io::Cursor::new(bytes))
        .with_guessed_format()
        .map_err(|e| bad(format!("cannot read: {e}")))?;
    if reader.format().is_none() {
        return Err(bad("not a png, jpeg or webp image".into()));
    }
    let img = reader
        .decode()
        .map_err(|e| bad(format!("cannot decode: {e}")))?;
    use image::DynamicImage as D;
    let (width, height) = (img.width(), img.height());
    let (channels, pixels) = match img {
        D::ImageLuma8(g) => (1, g.into_raw()),
        // Gray with alpha or more depth is still gray: keep one channel.
        g @ (D::ImageLumaA8(_) | D::ImageLuma16(_) | D::ImageLumaA16(_)) => {
            (1, g.to_luma8().into_raw())
        }
        D::ImageRgb8(c) => (3, c.into_raw()),
        other => (3, other.to_rgb8().into_raw()),
    };
    if width == 0 || height == 0 {
        return Err(bad(format!("image has no pixels ({width}×{height})")));
    }
    Ok(RawImage {
        width,
        height,
        channels,
        pixels,
    })
}

impl Dataset for ImageFolder {
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
        let Some(id) = self.ids.get(i) else {
            return Err(out_of_range(i, self.len(), &self.describe()));
        };
        let image = decode_file(&self.root.join(id))?;
        Ok(Sample {
            id: id.clone(),
            image,
            label: self.labels[i],
        })
    }
    fn describe(&self) -> String {
        format!(
            "imagefolder {}/{} ({} images, {} classes)",
            self.root.display(),
            self.split_dir,
            self.len(),
            self.classes.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn corpus(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus/data/imagefolder")
            .join(name)
    }

    fn input_msg(e: Error) -> String {
        match e {
            Error::Input { .. } => e.report(),
            other => panic!("expected Error::Input, got {other:?}"),
        }
    }

    /// train/{bird,cat}, val/{cat,dog}: png + jpeg, gray + rgb + rgba.
    fn tree() -> tempfile::TempDir {
        let t = tempfile::tempdir().unwrap();
        let r = t.path();
        for d in ["train/cat", "train/bird/sub", "val/cat", "val/dog"] {
            std::fs::create_dir_all(r.join(d)).unwrap();
        }
        let gray = image::GrayImage::from_fn(3, 2, |x, y| image::Luma([(10 * x + y) as u8]));
        gray.save(r.join("train/cat/b.png")).unwrap();
        let rgb = image::RgbImage::from_fn(4, 4, |x, _| image::Rgb([200, 100, x as u8 * 50]));
        rgb.save(r.join("train/cat/a.JPG")).unwrap();
        let rgba = image::RgbaImage::from_fn(2, 2, |_, _| image::Rgba([1, 2, 3, 4]));
        rgba.save(r.join("train/bird/sub/c.png")).unwrap();
        std::fs::write(r.join("train/bird/notes.txt"), "not an image").unwrap();
        gray.save(r.join("val/cat/x.png")).unwrap();
        gray.save(r.join("val/dog/y.jpeg")).unwrap();
        t
    }

    #[test]
    fn reads_a_tree_with_png_and_jpeg_gray_and_rgb() {
        let t = tree();
        let train = ImageFolder::open(t.path(), Split::Train).unwrap();
        assert_eq!(train.classes(), ["bird", "cat", "dog"]);
        let ids: Vec<&str> = (0..train.len()).map(|i| train.id(i)).collect();
        assert_eq!(
            ids,
            ["train/bird/sub/c.png", "train/cat/a.JPG", "train/cat/b.png"]
        );
        assert_eq!(
            (0..3).map(|i| train.label(i)).collect::<Vec<_>>(),
            [0, 1, 1]
        );

        let rgba = train.get(0).unwrap().image;
        assert_eq!((rgba.channels, rgba.pixels), (3, [1, 2, 3].repeat(4)));
        let jpeg = train.get(1).unwrap().image;
        assert_eq!((jpeg.width, jpeg.height, jpeg.channels), (4, 4, 3));
        // JPEG is lossy: the flat red channel comes back near 200.
        assert!(jpeg.pixels[0].abs_diff(200) < 8, "{}", jpeg.pixels[0]);
        let png = train.get(2).unwrap();
        assert_eq!(
            (png.image.width, png.image.height, png.image.channels),
            (3, 2, 1)
        );
        assert_eq!(png.image.pixels, vec![0, 10, 20, 1, 11, 21]);
        assert_eq!(png.label, 1);

        let test = ImageFolder::open(t.path(), Split::Test).unwrap();
        assert_eq!(test.classes(), train.classes());
        assert_eq!(test.id(1), "val/dog/y.jpeg");
        assert_eq!(test.label(1), 2);
        assert_eq!(test.get(1).unwrap().image.channels, 1);
        assert_ne!(test.fingerprint(), train.fingerprint());
    }

    #[test]
    fn test_split_falls_back_to_test_dir() {
        let t = tree();
        std::fs::rename(t.path().join("val"), t.path().join("test")).unwrap();
        let test = ImageFolder::open(t.path(), Split::Test).unwrap();
        assert_eq!(test.id(0), "test/cat/x.png");
    }

    #[test]
    fn corrupt_files_are_input_errors_naming_the_file() {
        let root = corpus("bad-files");
        let ds = ImageFolder::open(&root, Split::Train).unwrap();
        let mut bad = 0;
        for i in 0..ds.len() {
            let id = ds.id(i).to_string();
            match ds.get(i) {
                Ok(s) => assert!(
                    id.starts_with("train/good/"),
                    "{id} decoded: {:?}",
                    s.image.width
                ),
                Err(e) => {
                    let msg = input_msg(e);
                    assert!(msg.contains(&root.join(&id).display().to_string()), "{msg}");
                    assert!(id.starts_with("train/bad/"), "{id}: {msg}");
                    bad += 1;
                }
            }
        }
        // zero-byte.png, truncated.png, truncated.jpg, not-an-image.png, garbage.webp
        assert_eq!(bad, 5);
    }

    #[test]
    fn bad_layouts_are_input_errors_naming_the_path() {
        let empty_class = corpus("empty-class");
        let msg = input_msg(ImageFolder::open(&empty_class, Split::Train).err().unwrap());
        assert!(
            msg.contains(&empty_class.join("train/b").display().to_string()),
            "{msg}"
        );
        assert!(msg.contains("no images"), "{msg}");

        let no_test = corpus("no-test-split");
        let msg = input_msg(ImageFolder::open(&no_test, Split::Test).err().unwrap());
        assert!(
            msg.contains(&no_test.display().to_string()) && msg.contains("val/ or test/"),
            "{msg}"
        );
        assert!(ImageFolder::open(&no_test, Split::Train).is_ok());

        let missing = corpus("does-not-exist");
        let msg = input_msg(ImageFolder::open(&missing, Split::Train).err().unwrap());
        assert!(msg.contains("does-not-exist"), "{msg}");

        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("train")).unwrap();
        let msg = input_msg(ImageFolder::open(t.path(), Split::Train).err().unwrap());
        assert!(msg.contains("no class directories"), "{msg}");
    }
}
