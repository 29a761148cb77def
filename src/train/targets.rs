//! Aspect targets for the images a student trains or is evaluated on, looked up by image id in a
//! score store. Pairs the teacher could not answer (status missing) get mask 0 and no loss.

use super::rows::{align_by_id, Rows};
use crate::data::Dataset;
use crate::error::{input, Result};
use crate::scores::ScoreStore;
use crate::teacher::Status;
use candle_core::{Device, Tensor};

/// Dense [images × Q] targets and masks, indexed like the dataset they were built for.
#[derive(Clone, Debug)]
pub struct Targets {
    pub q: usize,
    pub p_yes: Rows,
    pub mask: Rows,
}

impl Targets {
    /// Rows of `store` for every image of `ds`, matched by id. Images the store lacks are an error:
    /// training on them silently without targets would weaken the method unnoticed.
    pub fn from_store(store: &ScoreStore, ds: &dyn Dataset, at: &str) -> Result<Targets> {
        let q = store.num_questions();
        let src = align_by_id(&store.manifest.image_ids, ds, |id| {
            input(
                format!("the score store has no row for image {id:?}"),
                at,
                "label this dataset (and split) with makd label, or point aspects.scores at its store",
            )
        })?;
        let usable = |r: usize, j: usize| {
            Status::byte_is_usable(store.status_row(r)[j]) && store.p_yes_row(r)[j].is_finite()
        };
        let p_yes = Rows::from_fn(ds.len(), q, |i, row| {
            for (j, v) in row.iter_mut().enumerate() {
                if usable(src[i], j) {
                    *v = store.p_yes_row(src[i])[j];
                }
            }
        });
        let mask = Rows::from_fn(ds.len(), q, |i, row| {
            for (j, v) in row.iter_mut().enumerate() {
                *v = if usable(src[i], j) { 1.0 } else { 0.0 };
            }
        });
        Ok(Targets { q, p_yes, mask })
    }

    /// Targets and masks of the given dataset indices as [B, Q] tensors.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        Ok((
            self.p_yes.batch(indices, device)?,
            self.mask.batch(indices, device)?,
        ))
    }

    pub fn row(&self, i: usize) -> (&[f32], &[f32]) {
        (self.p_yes.row(i), self.mask.row(i))
    }
}
