//! Aspect targets for the images a student trains or is evaluated on, looked up by image id in a
//! score store. Pairs the teacher could not answer (status missing) get mask 0 and no loss.

use crate::data::Dataset;
use crate::error::{input, Result};
use crate::scores::ScoreStore;
use candle_core::{Device, Tensor};
use std::collections::HashMap;

/// Dense [images × Q] targets and masks, indexed like the dataset they were built for.
#[derive(Clone, Debug)]
pub struct Targets {
    pub q: usize,
    pub p_yes: Vec<f32>,
    pub mask: Vec<f32>,
}

impl Targets {
    /// Rows of `store` for every image of `ds`, matched by id. Images the store lacks are an error:
    /// training on them silently without targets would weaken the method unnoticed.
    pub fn from_store(store: &ScoreStore, ds: &dyn Dataset, at: &str) -> Result<Targets> {
        let q = store.num_questions();
        let row_of: HashMap<&str, usize> = store
            .manifest
            .image_ids
            .iter()
            .enumerate()
            .map(|(i, id)| (id.as_str(), i))
            .collect();
        let mut p_yes = vec![0f32; ds.len() * q];
        let mut mask = vec![0f32; ds.len() * q];
        for i in 0..ds.len() {
            let Some(&r) = row_of.get(ds.id(i)) else {
                return Err(input(
                    format!("the score store has no row for image {:?}", ds.id(i)),
                    at,
                    "label this dataset (and split) with makd label, or point aspects.scores at its store",
                ));
            };
            let (p, s) = (store.p_yes_row(r), store.status_row(r));
            for j in 0..q {
                if s[j] != crate::teacher::Status::Missing as u8 && p[j].is_finite() {
                    p_yes[i * q + j] = p[j];
                    mask[i * q + j] = 1.0;
                }
            }
        }
        Ok(Targets { q, p_yes, mask })
    }

    /// Targets and masks of the given dataset indices as [B, Q] tensors.
    pub fn batch(&self, indices: &[usize], device: &Device) -> Result<(Tensor, Tensor)> {
        let q = self.q;
        let mut t = Vec::with_capacity(indices.len() * q);
        let mut m = Vec::with_capacity(indices.len() * q);
        for &i in indices {
            t.extend_from_slice(&self.p_yes[i * q..(i + 1) * q]);
            m.extend_from_slice(&self.mask[i * q..(i + 1) * q]);
        }
        let shape = (indices.len(), q);
        Ok((
            Tensor::from_vec(t, shape, device)?,
            Tensor::from_vec(m, shape, device)?,
        ))
    }

    pub fn row(&self, i: usize) -> (&[f32], &[f32]) {
        (
            &self.p_yes[i * self.q..(i + 1) * self.q],
            &self.mask[i * self.q..(i + 1) * self.q],
        )
    }
}
