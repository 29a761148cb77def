//! Per-image rows joined to a dataset by image id: what aspect targets (from a score store) and
//! KD logits (from a logits file) both are. The join and the batching live here once.

use crate::data::Dataset;
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use std::collections::HashMap;

/// For every image of `ds`, the index of its row among `source_ids` (a store's or a logits
/// file's row order). An image the source lacks is the error `missing(id)`: training on it
/// without its row would weaken the method unnoticed.
pub fn align_by_id(
    source_ids: &[String],
    ds: &dyn Dataset,
    missing: impl Fn(&str) -> Error,
) -> Result<Vec<usize>> {
    let row_of: HashMap<&str, usize> = source_ids
        .iter()
        .enumerate()
        .map(|(i, id)| (id.as_str(), i))
        .collect();
    (0..ds.len())
        .map(|i| {
            row_of
                .get(ds.id(i))
                .copied()
                .ok_or_else(|| missing(ds.id(i)))
        })
        .collect()
}

/// Dense `[images × width]` f32 rows in a dataset's order.
#[derive(Clone, Debug, PartialEq)]
pub struct Rows {
    pub width: usize,
    pub data: Vec<f32>,
}

impl Rows {
    /// `n` rows of `width`, each filled by `fill(i, row)` (rows start zeroed).
    pub fn from_fn(n: usize, width: usize, mut fill: impl FnMut(usize, &mut [f32])) -> Rows {
        let mut data = vec![0f32; n * width];
        if width > 0 {
            for (i, row) in data.chunks_exact_mut(width).enumerate() {
                fill(i, row);
            }
        }
        Rows { width, data }
    }

    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.width..(i + 1) * self.width]
    }

    /// The rows of the given dataset indices as a `[B, width]` tensor.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<Tensor> {
        let mut v = Vec::with_capacity(indices.len() * self.width);
        for &i in indices {
            v.extend_from_slice(self.row(i));
        }
        Ok(Tensor::from_vec(v, (indices.len(), self.width), device)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{RawImage, Sample};

    struct Ids(Vec<String>, Vec<String>);
    impl Dataset for Ids {
        fn len(&self) -> usize {
            self.0.len()
        }
        fn classes(&self) -> &[String] {
            &self.1
        }
        fn id(&self, i: usize) -> &str {
            &self.0[i]
        }
        fn label(&self, _: usize) -> usize {
            0
        }
        fn get(&self, i: usize) -> Result<Sample> {
            Ok(Sample {
                id: self.0[i].clone(),
                image: RawImage {
                    width: 1,
                    height: 1,
                    channels: 1,
                    pixels: vec![0],
                },
                label: 0,
            })
        }
        fn describe(&self) -> String {
            "ids".into()
        }
    }

    #[test]
    fn rows_follow_the_dataset_order_and_missing_ids_are_errors() {
        let source: Vec<String> = ["a", "b", "c"].map(String::from).to_vec();
        let ds = Ids(vec!["c".into(), "a".into()], vec!["x".into()]);
        let idx = align_by_id(&source, &ds, |id| crate::error::input(id, "t", "h")).unwrap();
        assert_eq!(idx, vec![2, 0]);
        let rows = Rows::from_fn(2, 2, |i, r| r.fill(idx[i] as f32));
        assert_eq!(rows.row(0), &[2.0, 2.0]);
        let t = rows.batch(&[1, 0], &Device::Cpu).unwrap();
        assert_eq!(
            t.to_vec2::<f32>().unwrap(),
            vec![vec![0.0, 0.0], vec![2.0, 2.0]]
        );
        let ds = Ids(vec!["z".into()], vec!["x".into()]);
        let err = align_by_id(&source, &ds, |id| crate::error::input(id, "t", "h")).unwrap_err();
        assert!(matches!(err, Error::Input { what, .. } if what == "z"));
    }
}
