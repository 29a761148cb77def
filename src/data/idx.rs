//! IDX files of the MNIST family (MNIST, Fashion-MNIST, KMNIST…), gzipped or plain.
//!
//! The format (LeCun's): two zero bytes, a type byte (0x08 = unsigned byte, the only one these
//! datasets use), the number of dimensions, each dimension as a big-endian u32, then the data.
//! A split is a pair of files, `{train,t10k}-images-idx3-ubyte[.gz]` (N × rows × cols) and
//! `{train,t10k}-labels-idx1-ubyte[.gz]` (N). Everything is kept in memory: Fashion-MNIST's
//! training split is 47 MB.

use super::{out_of_range, Dataset, RawImage, Sample, Split};
use crate::error::{self, IoContext, Result};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Fashion-MNIST's classes (Xiao et al. 2017), index = label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// Where the Debian package `dataset-fashion-mnist` puts the files.
pub const DEBIAN_FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The canonical download location (the files are named as on disk, gzipped).
pub const FASHION_MNIST_URL: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";

const INSTALL_HINT: &str =
    "run `apt-get install -y dataset-fashion-mnist`, or point at a directory holding \
the four IDX files with --data-dir or `fashion-mnist:DIR`";

/// One parsed IDX file: its dimensions and its bytes.
#[derive(Clone, Debug, PartialEq)]
pub struct IdxArray {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Parse IDX bytes (already decompressed); `at` names the file in errors.
pub fn parse_idx(bytes: &[u8], at: &str) -> Result<IdxArray> {
    let bad = |what: String| {
        error::input(
            what,
            at,
            "is this an MNIST-family IDX file? re-download or reinstall it",
        )
    };
    if bytes.len() < 4 {
        return Err(bad(format!(
            "truncated: expected at least a 4-byte header, found {} bytes",
            bytes.len()
        )));
    }
    if bytes[0] != 0 || bytes[1] != 0 {
        return Err(bad(format!(
            "bad magic number {:02x}{:02x}{:02x}{:02x}: an IDX file starts with two zero bytes",
            bytes[0], bytes[1], bytes[2], bytes[3]
        )));
    }
    if bytes[2] != 0x08 {
        return Err(bad(format!(
            "unsupported IDX element type 0x{:02x}: only unsigned bytes (0x08) are supported",
            bytes[2]
        )));
    }
    let ndims = bytes[3] as usize;
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(bad(format!(
            "truncated: expected a {header}-byte header, found {} bytes",
            bytes.len()
        )));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|d| {
            let o = 4 + 4 * d;
            u32::from_be_bytes([bytes[o], bytes[o + 1], bytes[o + 2], bytes[o + 3]]) as usize
        })
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .and_then(|n| n.checked_add(header))
        .ok_or_else(|| bad(format!("dimensions {dims:?} are too large")))?;
    if bytes.len() != expected {
        let kind = if bytes.len() < expected {
            "truncated"
        } else {
            "trailing data"
        };
        return Err(bad(format!(
            "{kind}: dimensions {dims:?} need {expected} bytes, found {}",
            bytes.len()
        )));
    }
    Ok(IdxArray {
        dims,
        data: bytes[header..].to_vec(),
    })
}

/// Read and parse an IDX file, gunzipping it when its name ends in `.gz`.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let raw = std::fs::read(path).at(path)?;
    let gzipped = path.extension().is_some_and(|e| e == "gz");
    decode_idx(&raw, gzipped, &path.display().to_string())
}

/// Parse IDX bytes as stored, gunzipping them first when `gzipped`.
fn decode_idx(raw: &[u8], gzipped: bool, at: &str) -> Result<IdxArray> {
    if !gzipped {
        return parse_idx(raw, at);
    }
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(raw)
        .read_to_end(&mut out)
        .map_err(|e| {
            error::input(
                format!("corrupt or truncated gzip stream: {e}"),
                at,
                "re-download or reinstall the file",
            )
        })?;
    parse_idx(&out, at)
}

/// `DIR/{prefix}-{kind}-ubyte.gz`, else the plain file, else `None`.
fn find_file(dir: &Path, prefix: &str, kind: &str) -> Option<PathBuf> {
    let plain = dir.join(format!("{prefix}-{kind}-ubyte"));
    let gz = dir.join(format!("{prefix}-{kind}-ubyte.gz"));
    [gz, plain].into_iter().find(|p| p.is_file())
}

fn prefix(split: Split) -> &'static str {
    match split {
        Split::Train => "train",
        Split::Test => "t10k",
    }
}

fn split_files(dir: &Path, split: Split) -> Result<(PathBuf, PathBuf)> {
    let p = prefix(split);
    let images = find_file(dir, p, "images-idx3");
    let labels = find_file(dir, p, "labels-idx1");
    match (images, labels) {
        (Some(i), Some(l)) => Ok((i, l)),
        _ => Err(error::input(
            format!("missing {p}-images-idx3-ubyte[.gz] or {p}-labels-idx1-ubyte[.gz]"),
            dir.display().to_string(),
            "an IDX dataset directory holds {train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]",
        )),
    }
}

fn has_all_files(dir: &Path) -> bool {
    [Split::Train, Split::Test]
        .into_iter()
        .all(|s| split_files(dir, s).is_ok())
}

/// Labels of a split, checked to be one-dimensional.
fn read_labels(path: &Path) -> Result<Vec<u8>> {
    let a = read_idx(path)?;
    if a.dims.len() != 1 {
        return Err(error::input(
            format!(
                "a label file has 1 dimension, this one has {} ({:?})",
                a.dims.len(),
                a.dims
            ),
            path.display().to_string(),
            "images and labels may be swapped: labels are the *-labels-idx1-ubyte files",
        ));
    }
    Ok(a.data)
}

/// One split of an MNIST-family dataset, all in memory.
pub struct IdxDataset {
    dir: PathBuf,
    kind: &'static str,
    split: Split,
    rows: usize,
    cols: usize,
    images: Vec<u8>,
    labels: Vec<u8>,
    ids: Vec<String>,
    classes: Vec<String>,
}

impl IdxDataset {
    /// A generic IDX directory: classes from `DIR/classes.txt` (one per line) when present,
    /// else `"0"..="K-1"` where K−1 is the largest label in either split (so both splits agree).
    pub fn open(dir: &Path, split: Split) -> Result<IdxDataset> {
        let classes_file = dir.join("classes.txt");
        let classes = if classes_file.is_file() {
            let text = std::fs::read_to_string(&classes_file).at(&classes_file)?;
            let classes: Vec<String> = text
                .lines()
                .map(|l| l.trim().to_string())
                .filter(|l| !l.is_empty())
                .collect();
            if classes.is_empty() {
                return Err(error::input(
                    "no class names",
                    classes_file.display().to_string(),
                    "write one class name per line, in label order, or delete the file",
                ));
            }
            classes
        } else {
            let mut max = None;
            for s in [Split::Train, Split::Test] {
                if let Some(l) = find_file(dir, prefix(s), "labels-idx1") {
                    let m = read_labels(&l)?.into_iter().max();
                    max = max.max(m);
                }
            }
            let k = max.map_or(0, |m| m as usize + 1);
            (0..k).map(|c| c.to_string()).collect()
        };
        Self::load(dir, split, classes, "idx")
    }

    /// Fashion-MNIST from `dir`, with its ten named classes.
    pub fn open_fashion_mnist(dir: &Path, split: Split) -> Result<IdxDataset> {
        let classes = FASHION_MNIST_CLASSES
            .iter()
            .map(|c| c.to_string())
            .collect();
        Self::load(dir, split, classes, "fashion-mnist")
    }

    fn load(
        dir: &Path,
        split: Split,
        classes: Vec<String>,
        kind: &'static str,
    ) -> Result<IdxDataset> {
        let (images_path, labels_path) = split_files(dir, split)?;
        let images = read_idx(&images_path)?;
        let at_images = images_path.display().to_string();
        if images.dims.len() != 3 {
            return Err(error::input(
                format!(
                    "an image file has 3 dimensions (count, rows, cols), this one has {:?}",
                    images.dims
                ),
                at_images,
                "images and labels may be swapped: images are the *-images-idx3-ubyte files",
            ));
        }
        let (n, rows, cols) = (images.dims[0], images.dims[1], images.dims[2]);
        if n == 0 || rows == 0 || cols == 0 {
            return Err(error::input(
                format!("empty image file: dimensions {:?}", images.dims),
                at_images,
                "re-download or reinstall the dataset",
            ));
        }
        let labels = read_labels(&labels_path)?;
        let at_labels = labels_path.display().to_string();
        if labels.len() != n {
            return Err(error::input(
                format!("{} labels for {n} images in {at_images}", labels.len()),
                at_labels,
                "the image and label files must come from the same split of the same dataset",
            ));
        }
        if let Some((i, &l)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= classes.len())
        {
            return Err(error::input(
                format!(
                    "label {l} of image {i} is out of range: there are {} classes",
                    classes.len()
                ),
                at_labels,
                "list every class, in label order, in classes.txt next to the IDX files",
            ));
        }
        let width = (n - 1).to_string().len().max(5);
        let ids = (0..n)
            .map(|i| format!("{}/{i:0width$}", split.as_str()))
            .collect();
        Ok(IdxDataset {
            dir: dir.to_path_buf(),
            kind,
            split,
            rows,
            cols,
            images: images.data,
            labels,
            ids,
            classes,
        })
    }
}

impl Dataset for IdxDataset {
    fn len(&self) -> usize {
        self.labels.len()
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn id(&self, i: usize) -> &str {
        &self.ids[i]
    }
    fn label(&self, i: usize) -> usize {
        self.labels[i] as usize
    }
    fn get(&self, i: usize) -> Result<Sample> {
        if i >= self.len() {
            return Err(out_of_range(i, self.len(), &self.describe()));
        }
        let size = self.rows * self.cols;
        Ok(Sample {
            id: self.ids[i].clone(),
            image: RawImage {
                width: self.cols as u32,
                height: self.rows as u32,
                channels: 1,
                pixels: self.images[i * size..(i + 1) * size].to_vec(),
            },
            label: self.labels[i] as usize,
        })
    }
    fn describe(&self) -> String {
        format!(
            "{} {} split at {} ({} images, {}×{} gray, {} classes)",
            self.kind,
            self.split,
            self.dir.display(),
            self.len(),
            self.cols,
            self.rows,
            self.classes.len()
        )
    }
}

/// The cache directory for downloads: `$XDG_CACHE_HOME/makd` or `~/.cache/makd`.
pub fn cache_dir() -> Option<PathBuf> {
    let base = std::env::var_os("XDG_CACHE_HOME")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("HOME")
                .filter(|v| !v.is_empty())
                .map(|h| PathBuf::from(h).join(".cache"))
        })?;
    Some(base.join("makd"))
}

/// Where Fashion-MNIST is looked for, in order: `$MAKD_DATA_DIR/fashion-mnist`, the Debian
/// package's directory, then the download cache.
pub fn fashion_mnist_candidates() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(d) = std::env::var_os("MAKD_DATA_DIR").filter(|v| !v.is_empty()) {
        dirs.push(PathBuf::from(d).join("fashion-mnist"));
    }
    dirs.push(PathBuf::from(DEBIAN_FASHION_MNIST_DIR));
    if let Some(c) = cache_dir() {
        dirs.push(c.join("fashion-mnist"));
    }
    dirs
}

/// A directory holding all four Fashion-MNIST files: the first complete candidate, else a fresh
/// download into the cache. Fails with an install hint when offline.
pub fn locate_fashion_mnist() -> Result<PathBuf> {
    if let Some(dir) = fashion_mnist_candidates()
        .into_iter()
        .find(|d| has_all_files(d))
    {
        return Ok(dir);
    }
    let searched = fashion_mnist_candidates()
        .iter()
        .map(|d| d.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let Some(cache) = cache_dir().map(|c| c.join("fashion-mnist")) else {
        return Err(error::input(
            format!("Fashion-MNIST not found (looked in {searched}) and no cache directory to download into"),
            "fashion-mnist",
            INSTALL_HINT,
        ));
    };
    download_fashion_mnist(&cache).map_err(|why| {
        error::input(
            format!("Fashion-MNIST not found (looked in {searched}) and downloading it from {FASHION_MNIST_URL} failed: {why}"),
            "fashion-mnist",
            INSTALL_HINT,
        )
    })?;
    Ok(cache)
}

/// Fetch the four gzipped files into `dir`; each lands atomically and is parsed before it is
/// kept, so an interrupted or garbled download never poses as a dataset.
fn download_fashion_mnist(dir: &Path) -> std::result::Result<(), String> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(10)))
        .timeout_global(Some(Duration::from_secs(300)))
        .build()
        .into();
    for split in ["train", "t10k"] {
        for kind in ["images-idx3", "labels-idx1"] {
            let name = format!("{split}-{kind}-ubyte.gz");
            let path = dir.join(&name);
            if path.is_file() {
                continue;
            }
            let url = format!("{FASHION_MNIST_URL}{name}");
            eprintln!("downloading {url}");
            let bytes = agent
                .get(&url)
                .call()
                .map_err(|e| format!("{url}: {e}"))?
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_vec()
                .map_err(|e| format!("{url}: {e}"))?;
            decode_idx(&bytes, true, &url).map_err(|e| e.to_string())?;
            crate::files::write_atomic(&path, &bytes).map_err(|e| e.to_string())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use std::io::Write;

    fn idx_bytes(dims: &[u32], data: &[u8]) -> Vec<u8> {
        let mut b = vec![0, 0, 8, dims.len() as u8];
        for d in dims {
            b.extend_from_slice(&d.to_be_bytes());
        }
        b.extend_from_slice(data);
        b
    }

    fn gz(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    /// A 3-image 2×2 train split and a 1-image test split, gzipped or plain.
    fn tiny_dir(gzip: bool, train_labels: &[u8]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let ext = if gzip { ".gz" } else { "" };
        let n = train_labels.len() as u32;
        let pixels: Vec<u8> = (0..n * 4).map(|v| v as u8 * 10).collect();
        let files = [
            ("train-images-idx3-ubyte", idx_bytes(&[n, 2, 2], &pixels)),
            ("train-labels-idx1-ubyte", idx_bytes(&[n], train_labels)),
            (
                "t10k-images-idx3-ubyte",
                idx_bytes(&[1, 2, 2], &[1, 2, 3, 4]),
            ),
            ("t10k-labels-idx1-ubyte", idx_bytes(&[1], &[0])),
        ];
        for (name, bytes) in files {
            let bytes = if gzip { gz(&bytes) } else { bytes };
            std::fs::write(dir.path().join(format!("{name}{ext}")), bytes).unwrap();
        }
        dir
    }

    fn input_msg(e: Error) -> String {
        match e {
            Error::Input { .. } => e.report(),
            other => panic!("expected Error::Input, got {other:?}"),
        }
    }

    #[test]
    fn parses_tiny_files_gz_and_plain() {
        for gzip in [true, false] {
            let dir = tiny_dir(gzip, &[2, 0, 1]);
            let train = IdxDataset::open(dir.path(), Split::Train).unwrap();
            assert_eq!(train.len(), 3);
            assert_eq!(train.classes(), ["0", "1", "2"]);
            assert_eq!(train.id(2), "train/00002");
            assert_eq!(train.label(0), 2);
            let s = train.get(1).unwrap();
            assert_eq!(s.image.pixels, vec![40, 50, 60, 70]);
            assert_eq!((s.image.width, s.image.height, s.image.channels), (2, 2, 1));
            assert_eq!(s.label, 0);
            let test = IdxDataset::open(dir.path(), Split::Test).unwrap();
            // Classes come from both splits, so the 1-image test split still has 3 classes.
            assert_eq!(test.classes().len(), 3);
            assert_eq!(test.id(0), "test/00000");
            assert_eq!(test.get(0).unwrap().image.pixels, vec![1, 2, 3, 4]);
            assert!(test.get(1).is_err());
        }
    }

    #[test]
    fn classes_txt_names_the_classes_and_bounds_the_labels() {
        let dir = tiny_dir(false, &[2, 0, 1]);
        std::fs::write(dir.path().join("classes.txt"), "cat\ndog\nemu\n").unwrap();
        let ds = IdxDataset::open(dir.path(), Split::Train).unwrap();
        assert_eq!(ds.classes(), ["cat", "dog", "emu"]);
        std::fs::write(dir.path().join("classes.txt"), "cat\ndog\n").unwrap();
        let msg = input_msg(IdxDataset::open(dir.path(), Split::Train).err().unwrap());
        assert!(msg.contains("label 2 of image 0 is out of range"), "{msg}");
        assert!(msg.contains("train-labels-idx1-ubyte"), "{msg}");
    }

    #[test]
    fn fashion_mnist_labels_must_be_below_ten() {
        let dir = tiny_dir(true, &[9, 10, 0]);
        let msg = input_msg(
            IdxDataset::open_fashion_mnist(dir.path(), Split::Train)
                .err()
                .unwrap(),
        );
        assert!(msg.contains("label 10 of image 1"), "{msg}");
    }

    #[test]
    fn bad_magic_is_an_input_error() {
        let mut b = idx_bytes(&[1], &[0]);
        b[0] = 0x1f;
        let msg = input_msg(parse_idx(&b, "x.idx").unwrap_err());
        assert!(msg.starts_with("x.idx: bad magic number 1f000801"), "{msg}");
        let mut b = idx_bytes(&[1], &[0]);
        b[2] = 0x0d; // float
        assert!(input_msg(parse_idx(&b, "x").unwrap_err()).contains("element type 0x0d"));
    }

    #[test]
    fn truncated_file_names_file_and_sizes() {
        let dir = tiny_dir(false, &[0, 1, 2]);
        let p = dir.path().join("train-images-idx3-ubyte");
        let full = std::fs::read(&p).unwrap();
        std::fs::write(&p, &full[..full.len() - 5]).unwrap();
        let msg = input_msg(IdxDataset::open(dir.path(), Split::Train).err().unwrap());
        assert!(msg.contains(&p.display().to_string()), "{msg}");
        assert!(
            msg.contains("truncated: dimensions [3, 2, 2] need 28 bytes, found 23"),
            "{msg}"
        );
        // A header cut short, and trailing bytes, are reported too.
        assert!(input_msg(parse_idx(&full[..9], "h").unwrap_err()).contains("16-byte header"));
        let mut long = full.clone();
        long.push(0);
        assert!(input_msg(parse_idx(&long, "t").unwrap_err()).contains("trailing data"));
    }

    #[test]
    fn truncated_gzip_is_an_input_error() {
        let dir = tiny_dir(true, &[0, 1, 2]);
        let p = dir.path().join("train-images-idx3-ubyte.gz");
        let full = std::fs::read(&p).unwrap();
        std::fs::write(&p, &full[..full.len() / 2]).unwrap();
        let msg = input_msg(IdxDataset::open(dir.path(), Split::Train).err().unwrap());
        assert!(
            msg.contains(&p.display().to_string()) && msg.contains("gzip"),
            "{msg}"
        );
    }

    #[test]
    fn mismatched_counts_and_missing_files() {
        let dir = tiny_dir(false, &[0, 1, 2]);
        std::fs::write(
            dir.path().join("train-labels-idx1-ubyte"),
            idx_bytes(&[2], &[0, 1]),
        )
        .unwrap();
        let msg = input_msg(
            IdxDataset::open_fashion_mnist(dir.path(), Split::Train)
                .err()
                .unwrap(),
        );
        assert!(msg.contains("2 labels for 3 images"), "{msg}");
        std::fs::remove_file(dir.path().join("t10k-labels-idx1-ubyte")).unwrap();
        let msg = input_msg(
            IdxDataset::open_fashion_mnist(dir.path(), Split::Test)
                .err()
                .unwrap(),
        );
        assert!(msg.contains("t10k-labels-idx1-ubyte"), "{msg}");
    }

    #[test]
    fn fashion_mnist_alias_loads_the_debian_files() {
        if !has_all_files(Path::new(DEBIAN_FASHION_MNIST_DIR)) {
            eprintln!("SKIPPED: {DEBIAN_FASHION_MNIST_DIR} missing (apt-get install -y dataset-fashion-mnist)");
            return;
        }
        let spec: super::super::DatasetSpec = "fashion-mnist".parse().unwrap();
        let train = super::super::open(&spec, Split::Train).unwrap();
        let test = super::super::open(&spec, Split::Test).unwrap();
        assert_eq!((train.len(), test.len()), (60000, 10000));
        assert_eq!(train.classes().len(), 10);
        assert_eq!(train.label(0), 9);
        assert_eq!(train.classes()[train.label(0)], "Ankle boot");
        assert_eq!(train.id(0), "train/00000");
        assert_eq!(test.id(9999), "test/09999");
        let s = train.get(59999).unwrap();
        assert_eq!(
            (s.image.width, s.image.height, s.image.pixels.len()),
            (28, 28, 784)
        );
        let again = super::super::open(&spec, Split::Train).unwrap();
        assert_eq!(train.fingerprint(), again.fingerprint());
        assert_ne!(train.fingerprint(), test.fingerprint());
        assert_eq!(train.fingerprint().len(), 64);
    }
}
