//! Stores derived from a teacher's store, for controls and sweeps: the same pairs with other
//! targets (random, shuffled across images), the first Q questions, and a class-mode store's rows
//! broadcast to another split's images. Every result goes through [`ScoreStore::from_parts`], so
//! it is validated exactly like a store read from disk.

use super::ScoreStore;
use crate::data::Dataset;
use crate::error::{input, Result};
use crate::teacher::{Mode, Status};
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// The two controls: what a student learns from targets with the teacher's shape but not its
/// knowledge.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Uniform random P(yes) on the pairs the teacher answered.
    RandomTarget,
    /// The teacher's rows permuted across images (same marginals, no link to the image).
    ShuffledTarget,
}

impl std::fmt::Display for Control {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Control::RandomTarget => "random-target",
            Control::ShuffledTarget => "shuffled-target",
        })
    }
}

/// A control store: uniform random P(yes) (`random-target`) or the teacher's rows permuted across
/// images (`shuffled-target`). Missing pairs stay missing so both train on the same pairs.
pub fn control_store(store: &ScoreStore, control: Control, seed: u64) -> Result<ScoreStore> {
    let (n, q) = (store.num_images(), store.num_questions());
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x5EED_C0DE);
    let mut manifest = store.manifest.clone();
    let (p_yes, status) = match control {
        Control::RandomTarget => {
            let status = store.status().to_vec();
            let p: Vec<f32> = status
                .iter()
                .map(|&s| {
                    if Status::byte_is_usable(s) {
                        rng.random::<f32>()
                    } else {
                        f32::NAN
                    }
                })
                .collect();
            (p, status)
        }
        Control::ShuffledTarget => {
            let mut perm: Vec<usize> = (0..n).collect();
            perm.shuffle(&mut rng);
            let (mut p, mut s) = (Vec::with_capacity(n * q), Vec::with_capacity(n * q));
            for &src in &perm {
                p.extend_from_slice(store.p_yes_row(src));
                s.extend_from_slice(store.status_row(src));
            }
            (p, s)
        }
    };
    manifest.teacher.backend = format!("control:{control}");
    manifest
        .teacher
        .extra
        .insert("control_seed".into(), seed.into());
    manifest.teacher.extra.insert(
        "derived_from".into(),
        store.manifest.teacher.backend.clone().into(),
    );
    ScoreStore::from_parts(manifest, p_yes, status)
}

/// The first `q` questions of a store (the aspect-count sweep); `aspect_hash` is the hash of the
/// aspect set cut to those questions.
pub fn first_questions(store: &ScoreStore, q: usize, aspect_hash: &str) -> Result<ScoreStore> {
    let n = store.num_images();
    let (mut p, mut s) = (Vec::with_capacity(n * q), Vec::with_capacity(n * q));
    for i in 0..n {
        p.extend_from_slice(&store.p_yes_row(i)[..q]);
        s.extend_from_slice(&store.status_row(i)[..q]);
    }
    let mut manifest = store.manifest.clone();
    manifest.question_ids.truncate(q);
    manifest.aspect_hash = aspect_hash.to_string();
    ScoreStore::from_parts(manifest, p, s)
}

/// A store for `to` whose row for each image is the `from` store's row for that image's class.
/// Valid only for class-mode stores, where all images of a class share one row (the demo labels
/// the classes once and gives the test split the same rows for its aspect metrics).
pub fn broadcast_classes(
    from: &ScoreStore,
    from_ds: &dyn Dataset,
    to: &dyn Dataset,
) -> Result<ScoreStore> {
    if from.manifest.teacher.mode != Mode::Class {
        return Err(input(
            "only a class-mode store can be broadcast to another split",
            from.manifest.dataset.clone(),
            "label that split itself (`makd label --split test ...`)",
        ));
    }
    let q = from.num_questions();
    let mut row_of_class = vec![None; from_ds.classes().len()];
    for i in 0..from_ds.len() {
        row_of_class[from_ds.label(i)].get_or_insert(i);
    }
    let (mut p, mut s) = (
        Vec::with_capacity(to.len() * q),
        Vec::with_capacity(to.len() * q),
    );
    for i in 0..to.len() {
        let r = row_of_class
            .get(to.label(i))
            .copied()
            .flatten()
            .ok_or_else(|| {
                input(
                    format!("class {} has no image in the labeled split", to.label(i)),
                    to.describe(),
                    "broadcast only between splits with the same classes",
                )
            })?;
        p.extend_from_slice(from.p_yes_row(r));
        s.extend_from_slice(from.status_row(r));
    }
    let mut m = from.manifest.clone();
    m.dataset = to.describe();
    m.dataset_fingerprint = to.fingerprint();
    m.image_ids = (0..to.len()).map(|i| to.id(i).to_string()).collect();
    ScoreStore::from_parts(m, p, s)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scores::{Manifest, STATUS_MISSING, STATUS_OK};
    use crate::teacher::TeacherInfo;

    fn teacher_store(n: usize, q: usize) -> ScoreStore {
        let manifest = Manifest {
            format_version: crate::scores::FORMAT_VERSION,
            dataset: "t".into(),
            dataset_fingerprint: "fp".into(),
            image_ids: (0..n).map(|i| format!("img{i}")).collect(),
            aspect_hash: "ah".into(),
            question_ids: (0..q).map(|j| format!("q{j}")).collect(),
            teacher: TeacherInfo {
                backend: "table".into(),
                ..Default::default()
            },
            shard: None,
        };
        // Row i holds i/n in every column; every 7th pair is missing.
        let mut p = Vec::new();
        let mut s = Vec::new();
        for i in 0..n {
            for j in 0..q {
                let missing = (i * q + j) % 7 == 3;
                p.push(if missing {
                    f32::NAN
                } else {
                    i as f32 / n as f32
                });
                s.push(if missing { STATUS_MISSING } else { STATUS_OK });
            }
        }
        ScoreStore::from_parts(manifest, p, s).unwrap()
    }

    #[test]
    fn shuffled_control_permutes_whole_rows() {
        let (n, q) = (200, 5);
        let t = teacher_store(n, q);
        let c = control_store(&t, Control::ShuffledTarget, 3).unwrap();
        assert_eq!((c.num_images(), c.num_questions()), (n, q));
        assert_eq!(c.manifest.aspect_hash, t.manifest.aspect_hash);
        assert_eq!(
            c.manifest.dataset_fingerprint,
            t.manifest.dataset_fingerprint
        );
        assert_eq!(c.manifest.teacher.backend, "control:shuffled-target");
        // Same multiset of rows (marginals kept), but most images got another image's row.
        let key = |s: &ScoreStore, i: usize| {
            (
                s.p_yes_row(i)
                    .iter()
                    .map(|x| x.to_bits())
                    .collect::<Vec<_>>(),
                s.status_row(i).to_vec(),
            )
        };
        let mut a: Vec<_> = (0..n).map(|i| key(&t, i)).collect();
        let mut b: Vec<_> = (0..n).map(|i| key(&c, i)).collect();
        let moved = (0..n).filter(|&i| a[i] != b[i]).count();
        assert!(moved > n * 9 / 10, "only {moved} of {n} rows moved");
        a.sort();
        b.sort();
        assert_eq!(a, b);
        // Deterministic per seed, different across seeds.
        let again = control_store(&t, Control::ShuffledTarget, 3).unwrap();
        assert_eq!(
            c.p_yes().iter().map(|x| x.to_bits()).collect::<Vec<_>>(),
            again
                .p_yes()
                .iter()
                .map(|x| x.to_bits())
                .collect::<Vec<_>>()
        );
        let other = control_store(&t, Control::ShuffledTarget, 4).unwrap();
        assert_ne!(c.status(), other.status());
    }

    #[test]
    fn random_control_is_uniform_on_the_same_pairs() {
        let (n, q) = (400, 10);
        let t = teacher_store(n, q);
        let c = control_store(&t, Control::RandomTarget, 0).unwrap();
        assert_eq!(c.status(), t.status(), "missing pairs must stay missing");
        let vals: Vec<f64> = c
            .p_yes()
            .iter()
            .filter(|x| x.is_finite())
            .map(|&x| x as f64)
            .collect();
        assert_eq!(
            vals.len(),
            t.p_yes().iter().filter(|x| x.is_finite()).count()
        );
        // Uniform(0,1): mean 1/2, variance 1/12; with ~3400 draws the standard error of the mean is ~0.005.
        let mean = vals.iter().sum::<f64>() / vals.len() as f64;
        let var = vals.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / vals.len() as f64;
        assert!(
            (mean - 0.5).abs() < 0.025 && (var - 1.0 / 12.0).abs() < 0.01,
            "mean {mean} var {var}"
        );
        assert!(vals.iter().all(|&v| (0.0..1.0).contains(&v)));
        // No link to the teacher: correlation with the teacher's values is near 0.
        let tv: Vec<f64> = t
            .p_yes()
            .iter()
            .filter(|x| x.is_finite())
            .map(|&x| x as f64)
            .collect();
        let tm = tv.iter().sum::<f64>() / tv.len() as f64;
        let cov = vals
            .iter()
            .zip(&tv)
            .map(|(a, b)| (a - mean) * (b - tm))
            .sum::<f64>()
            / vals.len() as f64;
        let tvar = tv.iter().map(|b| (b - tm).powi(2)).sum::<f64>() / tv.len() as f64;
        let corr = cov / (var.sqrt() * tvar.sqrt());
        assert!(corr.abs() < 0.1, "correlation {corr}");
    }
}
