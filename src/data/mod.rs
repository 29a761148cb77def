//! Datasets: where images and labels come from.
//!
//! Every source (gzipped IDX files of the MNIST family, an ImageFolder tree, a CSV manifest)
//! implements [`Dataset`]. Images have stable string ids so that a score store written by a teacher
//! can be matched to the images a student trains on; [`Dataset::fingerprint`] hashes the ordered ids
//! and labels so a store made for one dataset is never silently used with another.
//!
//! [`transform`] turns a decoded [`RawImage`] into a normalised CHW float tensor; [`loader`] batches
//! them on worker threads with prefetch.

use crate::error::Result;

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
