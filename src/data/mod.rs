//! Datasets: where images and labels come from.
//!
//! Every source (gzipped IDX files of the MNIST family, an ImageFolder tree, a CSV manifest)
//! implements [`Dataset`]. Images have stable string ids so that a score store written by a teacher
//! can be matched to the images a student trains on; [`Dataset::fingerprint`] hashes the ordered ids
//! and labels so a store made for one dataset is never silently used with another.
//!
//! [`transform`] turns a decoded [`RawImage`] into a normalised CHW float tensor; [`loader`] batches
//! them on worker threads with prefetch.

use crate::error::{self, Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::Arc;

/// A decoded image: `height × width × channels` bytes, row-major, channels interleaved (HWC).
/// `channels` is 1 (gray) or 3 (RGB).
#[derive(Clone, Debug, PartialEq)]
pub struct RawImage {
    pub width: u32,
    pub height: u32,
    pub channels: u8,
    pub pixels: Vec<u8>,
}

/// One example of a dataset.
#[derive(Clone, Debug)]
pub struct Sample {
    pub id: String,
    pub image: RawImage,
    pub label: usize,
}

/// A labelled image collection, indexable in a fixed order.
pub trait Dataset: Send + Sync {
    /// Number of images.
    fn len(&self) -> usize;
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Class names, index = label.
    fn classes(&self) -> &[String];
    /// Stable id of image `i` (e.g. `train/000123` or a relative path); cheap, no decoding.
    fn id(&self, i: usize) -> &str;
    /// Label of image `i`; cheap, no decoding.
    fn label(&self, i: usize) -> usize;
    /// Decode image `i`. Corrupt files are an [`crate::error::Error::Input`] naming the file.
    fn get(&self, i: usize) -> Result<Sample>;
    /// One line saying what this is (kind, root, split, count).
    fn describe(&self) -> String;
    /// Stable hash of the ordered ids and labels: a score store records it, training checks it.
    fn fingerprint(&self) -> String {
        let mut bytes = Vec::new();
        for i in 0..self.len() {
            bytes.extend_from_slice(self.id(i).as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(&(self.label(i) as u64).to_le_bytes());
        }
        crate::files::sha256_hex(&bytes)
    }
}

pub mod coco;
pub mod crops;
pub mod csv;
pub mod detection;
pub mod idx;
pub mod imagefolder;
pub mod loader;
pub mod scenes;
pub mod transform;

/// Which half of a dataset: the images a student learns from, or the held-out ones it is scored on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Split {
    Train,
    #[serde(alias = "val")]
    Test,
}

impl Split {
    pub fn as_str(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Split {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            // ImageNet-style trees call the held-out half `val`; both name the same thing here.
            "test" | "val" => Ok(Split::Test),
            other => Err(error::input(
                format!("unknown split {other:?}"),
                "split",
                "use one of: train, test (or val)",
            )),
        }
    }
}

/// Where a dataset lives, as written on the command line or in a config file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DatasetSource {
    /// Fashion-MNIST, from `dir` or, when `None`, found on this machine (see [`idx::locate_fashion_mnist`]).
    FashionMnist(Option<PathBuf>),
    /// A directory of MNIST-family IDX files (optionally with `classes.txt`).
    Idx(PathBuf),
    /// A torchvision ImageFolder tree: `ROOT/{train,val|test}/<class>/*.png`.
    ImageFolder(PathBuf),
    /// A CSV manifest `path,label,split`.
    Csv(PathBuf),
    /// The images of a detection dataset (`scenes:…`, `coco:…`), one sample per image: id = the
    /// image id in decimal, label = the category of its largest box (see
    /// [`detection::DetectionImages`]).
    DetectionImages(Box<detection::DetectionSpec>),
    /// `crops:DETSPEC[@MARGIN]`: one sample per ground-truth object (see [`crops`]).
    Crops(Box<crops::CropsSpec>),
}

/// A dataset spec: `fashion-mnist`, `fashion-mnist:DIR`, `idx:DIR`, `imagefolder:ROOT`,
/// `csv:FILE`, a detection spec (`scenes:…`, `coco:…`) for its images, or `crops:DETSPEC[@MARGIN]`
/// for its objects. It serializes as that same string so configs stay readable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DatasetSpec {
    pub source: DatasetSource,
}

const SPEC_FORMS: &str =
    "use one of: fashion-mnist, fashion-mnist:DIR, idx:DIR, imagefolder:ROOT, csv:FILE, \
     scenes:SPEC, coco:ANNOTATIONS.json[:IMAGE_DIR], crops:DETECTION_SPEC[@MARGIN]";

impl FromStr for DatasetSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s == "fashion-mnist" {
            return Ok(DatasetSpec {
                source: DatasetSource::FashionMnist(None),
            });
        }
        let bad = |what: String| error::input(what, format!("dataset spec {s:?}"), SPEC_FORMS);
        let Some((kind, path)) = s.split_once(':') else {
            return Err(bad("unknown dataset spec".into()));
        };
        if path.is_empty() {
            return Err(bad(format!("`{kind}:` needs a path after the colon")));
        }
        match kind {
            "scenes" | "coco" => {
                return Ok(DatasetSpec {
                    source: DatasetSource::DetectionImages(Box::new(s.parse()?)),
                })
            }
            "crops" => {
                return Ok(DatasetSpec {
                    source: DatasetSource::Crops(Box::new(path.parse()?)),
                })
            }
            _ => {}
        }
        let path = PathBuf::from(path);
        let source = match kind {
            "fashion-mnist" => DatasetSource::FashionMnist(Some(path)),
            "idx" => DatasetSource::Idx(path),
            "imagefolder" => DatasetSource::ImageFolder(path),
            "csv" => DatasetSource::Csv(path),
            _ => return Err(bad(format!("unknown dataset kind {kind:?}"))),
        };
        Ok(DatasetSpec { source })
    }
}

impl fmt::Display for DatasetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            DatasetSource::FashionMnist(None) => f.write_str("fashion-mnist"),
            DatasetSource::FashionMnist(Some(p)) => write!(f, "fashion-mnist:{}", p.display()),
            DatasetSource::Idx(p) => write!(f, "idx:{}", p.display()),
            DatasetSource::ImageFolder(p) => write!(f, "imagefolder:{}", p.display()),
            DatasetSource::Csv(p) => write!(f, "csv:{}", p.display()),
            DatasetSource::DetectionImages(spec) => write!(f, "{spec}"),
            DatasetSource::Crops(spec) => write!(f, "{spec}"),
        }
    }
}

impl Serialize for DatasetSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for DatasetSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl DatasetSpec {
    /// The same spec with every relative path in it taken from `base`.
    pub fn absolute(&self, base: &std::path::Path) -> DatasetSpec {
        let abs = |p: &PathBuf| crate::files::absolute_from(p, base);
        let source = match &self.source {
            DatasetSource::FashionMnist(dir) => DatasetSource::FashionMnist(dir.as_ref().map(abs)),
            DatasetSource::Idx(p) => DatasetSource::Idx(abs(p)),
            DatasetSource::ImageFolder(p) => DatasetSource::ImageFolder(abs(p)),
            DatasetSource::Csv(p) => DatasetSource::Csv(abs(p)),
            DatasetSource::DetectionImages(spec) => {
                DatasetSource::DetectionImages(Box::new(spec.absolute(base)))
            }
            DatasetSource::Crops(c) => DatasetSource::Crops(Box::new(crops::CropsSpec {
                detection: c.detection.absolute(base),
                margin: c.margin,
            })),
        };
        DatasetSpec { source }
    }
}

/// Open one split of the dataset a spec names.
pub fn open(spec: &DatasetSpec, split: Split) -> Result<Arc<dyn Dataset>> {
    Ok(match &spec.source {
        DatasetSource::FashionMnist(None) => {
            let dir = idx::locate_fashion_mnist()?;
            Arc::new(idx::IdxDataset::open_fashion_mnist(&dir, split)?)
        }
        DatasetSource::FashionMnist(Some(dir)) => {
            Arc::new(idx::IdxDataset::open_fashion_mnist(dir, split)?)
        }
        DatasetSource::Idx(dir) => Arc::new(idx::IdxDataset::open(dir, split)?),
        DatasetSource::ImageFolder(root) => Arc::new(imagefolder::ImageFolder::open(root, split)?),
        DatasetSource::Csv(file) => Arc::new(csv::CsvDataset::open(file, split)?),
        DatasetSource::DetectionImages(spec) => Arc::new(detection::DetectionImages::new(
            open_detection(spec, split)?,
        )?),
        DatasetSource::Crops(spec) => Arc::new(crops::Crops::open(spec, split)?),
    })
}

/// Open one split of the detection dataset a spec names. A COCO file holds one split unless its
/// images carry a `split` field (`train` / `test` / `val`), which then selects them.
pub fn open_detection(
    spec: &detection::DetectionSpec,
    split: Split,
) -> Result<Arc<dyn detection::DetectionDataset>> {
    Ok(match &spec.source {
        detection::DetectionSource::Coco {
            annotations,
            images,
        } => Arc::new(coco::CocoDataset::open(
            annotations,
            images.as_deref(),
            split,
        )?),
        detection::DetectionSource::Scenes(source) => {
            Arc::new(scenes::Scenes::new(source.clone(), split)?)
        }
    })
}

/// A dataset seen through a chosen list of its indices (a labelling budget, a quick run).
/// Ids, labels and classes pass through unchanged, so a score store written for a subset matches
/// the same images in the full dataset by id.
pub struct Subset {
    inner: Arc<dyn Dataset>,
    indices: Vec<usize>,
    how: String,
}

impl Subset {
    /// The images at `indices` of `inner`, in that order.
    pub fn new(inner: Arc<dyn Dataset>, indices: Vec<usize>) -> Result<Subset> {
        let len = inner.len();
        if let Some(&bad) = indices.iter().find(|&&i| i >= len) {
            return Err(error::input(
                format!("subset index {bad} is out of range (dataset has {len} images)"),
                inner.describe(),
                "pick indices below the dataset's length",
            ));
        }
        let how = format!("{} chosen", indices.len());
        Ok(Subset {
            inner,
            indices,
            how,
        })
    }

    /// The first `n` images (all of them when `n` exceeds the length).
    pub fn first(inner: Arc<dyn Dataset>, n: usize) -> Subset {
        let n = n.min(inner.len());
        Subset {
            inner,
            indices: (0..n).collect(),
            how: format!("first {n}"),
        }
    }

    /// `n` images (all of them when `n` exceeds the length) with classes as balanced as the data
    /// allows: every class gets `n / C` or one more, and a class with too few images gives its
    /// share to the others. The same `(dataset, n, seed)` always picks the same images, and they
    /// come out in dataset order so ids stay sorted as in the full set.
    pub fn stratified(inner: Arc<dyn Dataset>, n: usize, seed: u64) -> Subset {
        let n = n.min(inner.len());
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); inner.classes().len()];
        for i in 0..inner.len() {
            let label = inner.label(i);
            if label >= by_class.len() {
                by_class.resize(label + 1, Vec::new());
            }
            by_class[label].push(i);
        }
        for members in &mut by_class {
            members.shuffle(&mut rng);
        }
        // Round-robin over classes; the visiting order is shuffled once so the classes that get
        // the remainder (`n % C` of them get one extra) are not always the first ones.
        let mut class_order: Vec<usize> = (0..by_class.len()).collect();
        class_order.shuffle(&mut rng);
        let mut chosen = Vec::with_capacity(n);
        let mut round = 0;
        while chosen.len() < n {
            for &c in &class_order {
                if chosen.len() == n {
                    break;
                }
                if let Some(&i) = by_class[c].get(round) {
                    chosen.push(i);
                }
            }
            round += 1;
        }
        chosen.sort_unstable();
        Subset {
            inner,
            indices: chosen,
            how: format!("stratified {n}, seed {seed}"),
        }
    }

    /// The indices into the underlying dataset, in subset order.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }
}

impl Dataset for Subset {
    fn len(&self) -> usize {
        self.indices.len()
    }
    fn classes(&self) -> &[String] {
        self.inner.classes()
    }
    fn id(&self, i: usize) -> &str {
        self.inner.id(self.indices[i])
    }
    fn label(&self, i: usize) -> usize {
        self.inner.label(self.indices[i])
    }
    fn get(&self, i: usize) -> Result<Sample> {
        match self.indices.get(i) {
            Some(&j) => self.inner.get(j),
            None => Err(out_of_range(i, self.len(), &self.describe())),
        }
    }
    fn describe(&self) -> String {
        format!("{} (subset: {})", self.inner.describe(), self.how)
    }
}

/// The error for `get(i)` past the end: a caller bug, but reported, never a panic.
pub(crate) fn out_of_range(i: usize, len: usize, what: &str) -> Error {
    error::input(
        format!("image index {i} is out of range (dataset has {len} images)"),
        what.to_string(),
        "this is a bug in the caller: indices must be below Dataset::len()",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_round_trip_as_strings() {
        for s in [
            "fashion-mnist",
            "fashion-mnist:/d/f",
            "idx:data/kmnist",
            "imagefolder:/x/y",
            "csv:m.csv",
            "scenes:fashion-mnist",
            "scenes:idx:/d/k",
            "coco:a.json",
            "coco:a.json:imgs",
            "crops:scenes:fashion-mnist",
            "crops:scenes:imagefolder:/x@0.25",
            "crops:coco:a.json:imgs@2",
        ] {
            let spec: DatasetSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
            assert_eq!(serde_json::to_string(&spec).unwrap(), format!("\"{s}\""));
            let back: DatasetSpec = serde_json::from_str(&format!("\"{s}\"")).unwrap();
            assert_eq!(back, spec);
        }
        let spec: DatasetSpec = "imagefolder:C:/a".parse().unwrap();
        assert_eq!(spec.source, DatasetSource::ImageFolder("C:/a".into()));
        for bad in ["mnist", "idx:", "folder:/x", ""] {
            let e = bad.parse::<DatasetSpec>().unwrap_err();
            assert!(matches!(e, Error::Input { .. }));
            assert!(
                e.hint()
                    .is_some_and(|h| h.contains("use one of: fashion-mnist, fashion-mnist:DIR")),
                "{e}"
            );
        }
        assert!(serde_json::from_str::<DatasetSpec>("\"nope\"").is_err());
    }

    #[test]
    fn splits_parse_and_print() {
        assert_eq!("train".parse::<Split>().unwrap(), Split::Train);
        assert_eq!("val".parse::<Split>().unwrap(), Split::Test);
        assert_eq!("Test".parse::<Split>().unwrap(), Split::Test);
        assert_eq!(Split::Test.to_string(), "test");
        assert!("dev".parse::<Split>().is_err());
        assert_eq!(serde_json::to_string(&Split::Train).unwrap(), "\"train\"");
        assert_eq!(
            serde_json::from_str::<Split>("\"val\"").unwrap(),
            Split::Test
        );
    }

    /// 12 images: labels 0,0,0,0,0,0,0,0,1,1,1,2 (class 2 has a single image).
    struct Labels(Vec<usize>, Vec<String>, Vec<String>);

    impl Dataset for Labels {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn classes(&self) -> &[String] {
            &self.2
        }
        fn id(&self, i: usize) -> &str {
            &self.1[i]
        }
        fn label(&self, i: usize) -> usize {
            self.0[i]
        }
        fn get(&self, i: usize) -> Result<Sample> {
            Ok(Sample {
                id: self.1[i].clone(),
                image: RawImage {
                    width: 1,
                    height: 1,
                    channels: 1,
                    pixels: vec![i as u8],
                },
                label: self.0[i],
            })
        }
        fn describe(&self) -> String {
            "labels".into()
        }
    }

    fn labels() -> Arc<dyn Dataset> {
        let l = vec![0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1, 2];
        let ids = (0..l.len()).map(|i| format!("im{i}")).collect();
        Arc::new(Labels(l, ids, vec!["a".into(), "b".into(), "c".into()]))
    }

    #[test]
    fn stratified_subset_balances_classes_deterministically() {
        let ds = labels();
        let count = |s: &Subset, c: usize| (0..s.len()).filter(|&i| s.label(i) == c).count();
        let s = Subset::stratified(ds.clone(), 6, 3);
        // 6 over 3 classes is 2 each, but class 2 has one image: its share goes to the others.
        let mut counts = [count(&s, 0), count(&s, 1), count(&s, 2)];
        assert_eq!(counts[2], 1);
        counts.sort_unstable();
        assert_eq!(counts, [1, 2, 3]);
        assert!(
            s.indices().windows(2).all(|w| w[0] < w[1]),
            "dataset order kept"
        );
        assert_eq!(Subset::stratified(ds.clone(), 6, 3).indices(), s.indices());
        let s3 = Subset::stratified(ds.clone(), 3, 11);
        assert_eq!([count(&s3, 0), count(&s3, 1), count(&s3, 2)], [1, 1, 1]);
        // Ids, labels and images pass through.
        let j = s.indices()[0];
        assert_eq!(s.id(0), format!("im{j}"));
        assert_eq!(s.get(0).unwrap().image.pixels, vec![j as u8]);
        assert!(s.get(6).is_err());
        assert_eq!(Subset::stratified(ds.clone(), 100, 0).len(), 12);
        let differs =
            (0..20).any(|seed| Subset::stratified(ds.clone(), 6, seed).indices() != s.indices());
        assert!(differs, "the seed matters");
    }

    #[test]
    fn first_and_explicit_subsets() {
        let ds = labels();
        let f = Subset::first(ds.clone(), 4);
        assert_eq!((f.len(), f.id(3), f.label(3)), (4, "im3", 0));
        assert_eq!(Subset::first(ds.clone(), 99).len(), 12);
        assert_ne!(f.fingerprint(), ds.fingerprint());
        assert_eq!(f.fingerprint(), Subset::first(ds.clone(), 4).fingerprint());
        let n = Subset::new(ds.clone(), vec![11, 0]).unwrap();
        assert_eq!((n.id(0), n.label(0)), ("im11", 2));
        assert!(matches!(
            Subset::new(ds, vec![12]),
            Err(Error::Input { .. })
        ));
    }
}
