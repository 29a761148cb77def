//! Batches of transformed images, decoded on worker threads while the model trains.
//!
//! Batch `k` holds `order[k·B .. (k+1)·B]` (the last one may be shorter: test images are never
//! dropped). Worker `w` builds batches `w, w + W, w + 2W, …` and hands them over a bounded
//! channel of its own, so batches come out in order without a reorder buffer and no worker runs
//! more than `prefetch` batches ahead. Every sample's augmentation draws from an RNG seeded by
//! `(seed, dataset index)` alone, so the numbers do not depend on the number of workers or on
//! which thread built the batch.

use super::transform::Transform;
use super::Dataset;
use crate::error::{Error, Result};
use candle_core::{Device, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::JoinHandle;

/// One batch: `images` is `shape = [n, channels, size, size]` floats, row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    pub images: Vec<f32>,
    pub shape: [usize; 4],
    pub labels: Vec<u32>,
    /// Dataset indices of the images, in batch order (to look up ids and aspect targets).
    pub indices: Vec<usize>,
}

impl Batch {
    /// The images as an `[n, c, h, w]` f32 tensor on `device`.
    pub fn images_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.images, &self.shape, device)?)
    }

    /// The labels as an `[n]` u32 tensor on `device`.
    pub fn labels_tensor(&self, device: &Device) -> Result<Tensor> {
        Ok(Tensor::from_slice(&self.labels, self.labels.len(), device)?)
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }

    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
}

/// The seed of one epoch, so each epoch augments differently yet reproducibly.
pub fn epoch_seed(seed: u64, epoch: u64) -> u64 {
    splitmix64(seed ^ splitmix64(epoch.wrapping_add(0x5eed)))
}

/// `0..n` shuffled by `seed` (an epoch's visiting order).
pub fn shuffled(n: usize, seed: u64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut ChaCha8Rng::seed_from_u64(seed));
    order
}

/// SplitMix64's finaliser: nearby inputs give unrelated outputs, so `(seed, index)` pairs never
/// share an RNG stream.
fn splitmix64(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// The RNG of one sample's augmentation: a function of `(seed, dataset index)` alone.
pub fn sample_rng(seed: u64, index: usize) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(splitmix64(splitmix64(seed) ^ index as u64))
}

/// Classification batches: images through a [`Transform`], with their labels.
pub struct Job {
    ds: Arc<dyn Dataset>,
    order: Arc<Vec<usize>>,
    batch_size: usize,
    transform: Arc<Transform>,
    train: bool,
    seed: u64,
}

/// What the loader threads run: batch `k` of a pass, built on any thread. Classification's
/// [`Batch`]es come from [`batches`]; other tasks (detection) implement their own builder and
/// get the same ordered, prefetching, panic-safe threads from [`spawn`].
pub trait BatchBuilder: Send + Sync + 'static {
    type Batch: Send + 'static;
    /// Number of batches in the pass.
    fn num_batches(&self) -> usize;
    /// Build batch `k`.
    fn build(&self, k: usize) -> Result<Self::Batch>;
}

impl BatchBuilder for Job {
    type Batch = Batch;

    fn num_batches(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }

    fn build(&self, k: usize) -> Result<Batch> {
        let indices = self.order
            [k * self.batch_size..((k + 1) * self.batch_size).min(self.order.len())]
            .to_vec();
        let [c, h, w] = self.transform.output_shape();
        let mut images = Vec::with_capacity(indices.len() * c * h * w);
        let mut labels = Vec::with_capacity(indices.len());
        for &i in &indices {
            let sample = self.ds.get(i)?;
            images.extend(self.transform.apply(
                &sample.image,
                self.train,
                &mut sample_rng(self.seed, i),
            ));
            labels.push(sample.label as u32);
        }
        Ok(Batch {
            images,
            shape: [indices.len(), c, h, w],
            labels,
            indices,
        })
    }
}

/// Iterator over the batches of one pass; see [`batches`] and [`spawn`].
pub struct BatchIter<J: BatchBuilder = Job> {
    job: Arc<J>,
    next: usize,
    done: bool,
    receivers: Vec<Receiver<Result<J::Batch>>>,
    workers: Vec<Option<JoinHandle<()>>>,
}

/// Batches of `order` (dataset indices, visited in this order), `batch_size` at a time, built
/// by `workers` threads (0: on the calling thread) each at most `prefetch` batches ahead.
/// The first error ends the iteration. Dropping the iterator stops and joins the workers.
#[allow(clippy::too_many_arguments)]
pub fn batches(
    ds: Arc<dyn Dataset>,
    order: Vec<usize>,
    batch_size: usize,
    transform: Arc<Transform>,
    train: bool,
    seed: u64,
    workers: usize,
    prefetch: usize,
) -> BatchIter {
    let job = Arc::new(Job {
        ds,
        order: Arc::new(order),
        batch_size: batch_size.max(1),
        transform,
        train,
        seed,
    });
    spawn(job, workers, prefetch)
}

/// The batches of `job`, built by `workers` threads (0: on the calling thread) each at most
/// `prefetch` batches ahead, returned in order. Worker `w` builds batches `w, w + W, …`.
pub fn spawn<J: BatchBuilder>(job: Arc<J>, workers: usize, prefetch: usize) -> BatchIter<J> {
    let workers = workers.min(job.num_batches());
    let mut receivers = Vec::with_capacity(workers);
    let mut handles = Vec::with_capacity(workers);
    for w in 0..workers {
        let (tx, rx) = sync_channel(prefetch.max(1));
        let job = Arc::clone(&job);
        let handle = std::thread::Builder::new()
            .name(format!("makd-loader-{w}"))
            .spawn(move || {
                for k in (w..job.num_batches()).step_by(workers) {
                    // A panic here (a bug in a dataset or transform) becomes an error the caller
                    // sees in order, instead of killing the process from another thread.
                    let batch =
                        std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| job.build(k)))
                            .unwrap_or_else(|payload| Err(panicked(k, payload.as_ref())));
                    let failed = batch.is_err();
                    // A closed channel means the iterator was dropped: stop quietly.
                    if tx.send(batch).is_err() || failed {
                        return;
                    }
                }
            })
            .expect("spawning a loader thread");
        receivers.push(rx);
        handles.push(Some(handle));
    }
    BatchIter {
        job,
        next: 0,
        done: false,
        receivers,
        workers: handles,
    }
}

/// The error for a loader thread that panicked while building batch `k`.
fn panicked(k: usize, payload: &(dyn std::any::Any + Send)) -> Error {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".into());
    Error::Internal {
        what: format!("a data loader thread panicked while building batch {k}: {msg}"),
    }
}

impl<J: BatchBuilder> BatchIter<J> {
    /// Number of batches in the whole pass (including ones already returned).
    pub fn num_batches(&self) -> usize {
        self.job.num_batches()
    }
}

impl<J: BatchBuilder> Iterator for BatchIter<J> {
    type Item = Result<J::Batch>;

    fn next(&mut self) -> Option<Result<J::Batch>> {
        if self.done || self.next >= self.job.num_batches() {
            return None;
        }
        let k = self.next;
        self.next += 1;
        let batch = if self.receivers.is_empty() {
            self.job.build(k)
        } else {
            let w = k % self.receivers.len();
            match self.receivers[w].recv() {
                Ok(b) => b,
                Err(_) => {
                    // The worker hung up without sending (it cannot panic past catch_unwind, but
                    // a panic while sending would end it too): an error, not a process panic.
                    let why = match self.workers[w].take().map(JoinHandle::join) {
                        Some(Err(payload)) => panicked(k, payload.as_ref()),
                        _ => Error::Internal {
                            what: format!("loader thread {w} exited before sending batch {k}"),
                        },
                    };
                    Err(why)
                }
            }
        };
        if batch.is_err() {
            self.done = true;
        }
        Some(batch)
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = if self.done {
            0
        } else {
            self.job.num_batches() - self.next
        };
        (0, Some(left))
    }
}

impl<J: BatchBuilder> Drop for BatchIter<J> {
    fn drop(&mut self) {
        // Closing the channels makes every blocked or finishing worker's next send fail.
        self.receivers.clear();
        for h in self.workers.iter_mut().filter_map(Option::take) {
            let _ = h.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::transform::{Augment, TransformConfig};
    use crate::data::{RawImage, Sample};
    use crate::error::{self, Error};

    /// A `Synthetic` of this size panics in `get(bad)` instead of failing.
    const PANICKY: usize = 13;

    /// `n` 3×3 gray images; image `i` is filled with value `i % 256`, label `i % 3`;
    /// `get(bad)` fails.
    struct Synthetic {
        n: usize,
        bad: Option<usize>,
        ids: Vec<String>,
        classes: Vec<String>,
    }

    impl Synthetic {
        fn make(n: usize, bad: Option<usize>) -> Arc<dyn Dataset> {
            Arc::new(Synthetic {
                n,
                bad,
                ids: (0..n).map(|i| format!("s/{i}")).collect(),
                classes: vec!["a".into(), "b".into(), "c".into()],
            })
        }
    }

    impl Dataset for Synthetic {
        fn len(&self) -> usize {
            self.n
        }
        fn classes(&self) -> &[String] {
            &self.classes
        }
        fn id(&self, i: usize) -> &str {
            &self.ids[i]
        }
        fn label(&self, i: usize) -> usize {
            i % 3
        }
        fn get(&self, i: usize) -> Result<Sample> {
            if Some(i) == self.bad && self.n == PANICKY {
                panic!("bug in get({i})");
            }
            if Some(i) == self.bad {
                return Err(error::input("corrupt", format!("s/{i}"), "none"));
            }
            Ok(Sample {
                id: self.ids[i].clone(),
                image: RawImage {
                    width: 3,
                    height: 3,
                    channels: 1,
                    pixels: (0..9).map(|p| (i * 7 + p) as u8).collect(),
                },
                label: i % 3,
            })
        }
        fn describe(&self) -> String {
            "synthetic".into()
        }
    }

    fn transform(augment: Augment) -> Arc<Transform> {
        Arc::new(
            Transform::new(TransformConfig {
                size: 3,
                channels: 1,
                mean: vec![0.0],
                std: vec![1.0 / 255.0],
                augment,
            })
            .unwrap(),
        )
    }

    fn collect(workers: usize, order: Vec<usize>) -> Vec<Batch> {
        let ds = Synthetic::make(23, None);
        batches(
            ds,
            order,
            5,
            transform(Augment::CropFlip),
            true,
            42,
            workers,
            2,
        )
        .collect::<Result<Vec<_>>>()
        .unwrap()
    }

    #[test]
    fn every_index_once_with_the_partial_last_batch() {
        let order = shuffled(23, 1);
        let out = collect(2, order.clone());
        assert_eq!(
            out.iter().map(Batch::len).collect::<Vec<_>>(),
            [5, 5, 5, 5, 3]
        );
        let seen: Vec<usize> = out.iter().flat_map(|b| b.indices.clone()).collect();
        assert_eq!(seen, order);
        let mut sorted = seen.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..23).collect::<Vec<_>>());
        let last = out.last().unwrap();
        assert_eq!(last.shape, [3, 1, 3, 3]);
        assert_eq!(last.images.len(), 27);
        assert_eq!(
            last.labels,
            last.indices
                .iter()
                .map(|&i| (i % 3) as u32)
                .collect::<Vec<_>>()
        );
    }

    #[test]
    fn identical_for_any_number_of_workers() {
        let order = shuffled(23, 9);
        let one = collect(1, order.clone());
        assert_eq!(one, collect(3, order.clone()));
        assert_eq!(one, collect(0, order.clone()));
        // Augmentation really happened (some padding zeros), so the equality above is not vacuous.
        assert!(one.iter().any(|b| b.images.contains(&0.0)));
        // Test mode is the plain image: value (i·7 + p) at pixel p.
        let ds = Synthetic::make(23, None);
        let plain: Vec<Batch> = batches(
            ds,
            vec![4, 0],
            8,
            transform(Augment::CropFlip),
            false,
            42,
            3,
            1,
        )
        .collect::<Result<_>>()
        .unwrap();
        assert_eq!(plain.len(), 1);
        let expected: Vec<f32> = (0..9).map(|p| (28 + p) as f32).collect();
        for (got, want) in plain[0].images[..9].iter().zip(&expected) {
            assert!((got - want).abs() < 1e-3);
        }
    }

    #[test]
    fn first_error_ends_the_iteration() {
        let ds = Synthetic::make(10, Some(7));
        let out: Vec<Result<Batch>> = batches(
            ds,
            (0..10).collect(),
            3,
            transform(Augment::None),
            false,
            0,
            2,
            2,
        )
        .collect();
        assert_eq!(out.len(), 3);
        assert!(out[0].is_ok() && out[1].is_ok());
        assert!(matches!(&out[2], Err(Error::Input { at, .. }) if at == "s/7"));
    }

    #[test]
    fn dropping_early_does_not_hang() {
        let ds = Synthetic::make(1000, None);
        let mut it = batches(
            ds,
            (0..1000).collect(),
            2,
            transform(Augment::Flip),
            true,
            0,
            4,
            1,
        );
        assert_eq!(it.num_batches(), 500);
        assert!(it.next().unwrap().is_ok());
        drop(it); // joins the workers, which are blocked on full channels
        let empty: Vec<_> = batches(
            Synthetic::make(3, None),
            vec![],
            4,
            transform(Augment::None),
            false,
            0,
            2,
            2,
        )
        .collect();
        assert!(empty.is_empty());
    }

    #[test]
    fn tensors_have_the_batch_shape() {
        let b = collect(1, (0..23).collect()).pop().unwrap();
        let t = b.images_tensor(&Device::Cpu).unwrap();
        assert_eq!(t.dims(), [3, 1, 3, 3]);
        let l = b.labels_tensor(&Device::Cpu).unwrap();
        assert_eq!(l.to_vec1::<u32>().unwrap(), [2, 0, 1]);
    }

    #[test]
    fn a_panicking_worker_is_an_internal_error_not_a_process_panic() {
        // Threads only: with 0 workers a panic happens on the caller's own thread.
        for workers in [1, 2] {
            let ds = Synthetic::make(PANICKY, Some(5));
            let it = batches(
                ds,
                (0..PANICKY).collect(),
                2,
                transform(Augment::None),
                false,
                0,
                workers,
                2,
            );
            let results: Vec<Result<Batch>> = it.collect();
            let err = results
                .iter()
                .find_map(|r| r.as_ref().err())
                .expect("an error");
            assert!(
                matches!(err, Error::Internal { what } if what.contains("bug in get(5)")),
                "{err}"
            );
            assert_eq!(err.exit_code(), 1);
            // Batches before the failing one (batch 2) arrive intact.
            assert!(results[0].is_ok() && results[1].is_ok());
        }
    }
}
