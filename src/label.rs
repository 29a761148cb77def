//! The label driver: runs a teacher over a dataset and writes the score store.
//!
//! Image mode asks about each image: worker threads (as many as [`Teacher::parallelism`]) take
//! images from a shared queue and send all pending questions of one image to the teacher together
//! (so a server's prefix cache sees the image once); results come back over a channel to the one
//! thread that owns the [`ScoreWriter`]. Class mode asks about each class name once and records
//! that row for every image of the class.
//!
//! Resuming is the store's job: pairs already in its log are never asked again, so a run killed at
//! any point continues with `makd label` and the same arguments. A teacher error stops the run
//! after everything answered so far is synced.

use crate::aspects::{AspectSet, Question};
use crate::data::Dataset;
use crate::error::{input, Error, Result};
use crate::scores::writer::ScoreWriter;
use crate::scores::{self, Manifest, Shard, StoreSummary};
use crate::teacher::{Mode, Score, Subject, Teacher};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::{mpsc, Arc, Mutex};

/// One labeling run.
pub struct LabelJob {
    pub dataset: Arc<dyn Dataset>,
    pub aspects: AspectSet,
    pub teacher: Arc<dyn Teacher>,
    /// The score store directory (created or resumed).
    pub out: PathBuf,
    /// `(i, n)`: label only the images with `index % n == i` (0-based i).
    pub shard: Option<Shard>,
    /// Label only the first N images of the (sharded) list; the rest stay never scored.
    pub limit: Option<usize>,
    pub mode: Mode,
}

/// What one teacher call is about.
enum Unit {
    Image {
        image: usize,
        questions: Vec<usize>,
    },
    Class {
        class: usize,
        images: Vec<usize>,
        questions: Vec<usize>,
    },
}

struct Done {
    unit: Unit,
    scores: Result<Vec<Score>>,
}

/// Label every pending pair of the job into `job.out`, then compact the store.
pub fn run(job: LabelJob) -> Result<StoreSummary> {
    let data = job.dataset.as_ref();
    if data.classes() != job.aspects.classes.as_slice() {
        return Err(input(
            format!(
                "the dataset's classes ({}) are not the aspect set's ({})",
                list(data.classes()),
                list(&job.aspects.classes)
            ),
            "--aspects",
            "use the aspects.json made for this dataset's classes, in label order (`makd aspects`)",
        ));
    }
    let mut teacher_info = job.teacher.info();
    teacher_info.mode = job.mode;
    let manifest = Manifest {
        format_version: scores::FORMAT_VERSION,
        dataset: data.describe(),
        dataset_fingerprint: data.fingerprint(),
        image_ids: (0..data.len()).map(|i| data.id(i).to_string()).collect(),
        aspect_hash: job.aspects.hash.clone(),
        question_ids: job.aspects.ids(),
        teacher: teacher_info,
        shard: job.shard,
    };
    let mut writer = ScoreWriter::open(&job.out, manifest)?;

    let images: Vec<usize> = (0..data.len())
        .filter(|&i| job.shard.is_none_or(|s| s.owns(i)))
        .take(job.limit.unwrap_or(usize::MAX))
        .collect();
    let num_q = job.aspects.len();
    let todo: u64 = images
        .iter()
        .map(|&i| (0..num_q).filter(|&q| !writer.is_done(i, q)).count() as u64)
        .sum();
    let progress = progress_bar(todo);

    let mut class_units = Vec::new();
    if job.mode == Mode::Class {
        let mut by_class: Vec<Vec<usize>> = vec![Vec::new(); job.aspects.classes.len()];
        for &i in &images {
            let label = data.label(i);
            let Some(group) = by_class.get_mut(label) else {
                return Err(input(
                    format!(
                        "image {:?} has label {label}, but there are {} classes",
                        data.id(i),
                        job.aspects.classes.len()
                    ),
                    data.describe(),
                    "the dataset's labels must index its class list",
                ));
            };
            group.push(i);
        }
        for (class, images) in by_class.into_iter().enumerate() {
            let questions: Vec<usize> = (0..num_q)
                .filter(|&q| images.iter().any(|&i| !writer.is_done(i, q)))
                .collect();
            // A class whose images are all done costs nothing on resume.
            if !questions.is_empty() {
                class_units.push(Unit::Class {
                    class,
                    images,
                    questions,
                });
            }
        }
    }
    let mut image_units = images.iter();
    let mut class_units = class_units.into_iter();
    let mut next_unit = |writer: &ScoreWriter| -> Option<Unit> {
        match job.mode {
            Mode::Class => class_units.next(),
            Mode::Image => image_units.find_map(|&image| {
                let questions = writer.pending(image);
                (!questions.is_empty()).then_some(Unit::Image { image, questions })
            }),
        }
    };

    let parallelism = job.teacher.parallelism().max(1);
    let teacher = job.teacher.as_ref();
    let questions = &job.aspects.questions;
    let classes = &job.aspects.classes;
    let mut failure: Option<Error> = None;
    std::thread::scope(|s| {
        let (work_tx, work_rx) = mpsc::channel::<Unit>();
        let work_rx = Arc::new(Mutex::new(work_rx));
        let (done_tx, done_rx) = mpsc::channel::<Done>();
        for _ in 0..parallelism {
            let work_rx = Arc::clone(&work_rx);
            let done_tx = done_tx.clone();
            s.spawn(move || loop {
                let unit = match work_rx.lock() {
                    Ok(rx) => rx.recv(),
                    Err(poisoned) => poisoned.into_inner().recv(),
                };
                let Ok(unit) = unit else { break };
                let scores = ask(teacher, data, questions, classes, &unit);
                if done_tx.send(Done { unit, scores }).is_err() {
                    break;
                }
            });
        }
        drop(done_tx);
        // Twice the teacher's parallelism in flight keeps every worker busy while results queue.
        let capacity = 2 * parallelism;
        let mut in_flight = 0;
        loop {
            while failure.is_none() && in_flight < capacity {
                let Some(unit) = next_unit(&writer) else {
                    break;
                };
                if work_tx.send(unit).is_err() {
                    break;
                }
                in_flight += 1;
            }
            if in_flight == 0 {
                break;
            }
            let Ok(done) = done_rx.recv() else { break };
            in_flight -= 1;
            let recorded = match done.scores {
                Ok(scores) => record(&mut writer, &done.unit, &scores),
                Err(e) => Err(e),
            };
            match recorded {
                Ok(n) => progress.inc(n),
                // Keep draining what is in flight: those answers are paid for.
                Err(e) => failure = failure.take().or(Some(e)),
            }
        }
        drop(work_tx);
    });

    if let Some(e) = failure {
        progress.abandon();
        writer.flush()?;
        return Err(e);
    }
    progress.finish_and_clear();
    let summary = writer.finish()?;
    eprintln!("{summary}");
    Ok(summary)
}

/// One teacher call, on a worker thread. A panicking teacher becomes an error so the driver can
/// still sync what it has.
fn ask(
    teacher: &dyn Teacher,
    data: &dyn Dataset,
    all: &[Question],
    classes: &[String],
    unit: &Unit,
) -> Result<Vec<Score>> {
    let call = || -> Result<Vec<Score>> {
        let pick = |wanted: &[usize]| -> Vec<Question> {
            wanted.iter().map(|&q| all[q].clone()).collect()
        };
        let (scores, asked) = match unit {
            Unit::Image { image, questions } => {
                let sample = data.get(*image)?;
                let qs = pick(questions);
                (teacher.score(Subject::Image(&sample), &qs)?, qs.len())
            }
            Unit::Class {
                class, questions, ..
            } => {
                let qs = pick(questions);
                (
                    teacher.score(Subject::Class(&classes[*class]), &qs)?,
                    qs.len(),
                )
            }
        };
        if scores.len() != asked {
            return Err(crate::error::io(
                format!("teacher {}", teacher.info().backend),
                std::io::Error::other(format!(
                    "returned {} scores for {} questions (a bug in the teacher)",
                    scores.len(),
                    asked
                )),
            ));
        }
        Ok(scores)
    };
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(call)).unwrap_or_else(|panic| {
        let msg = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(crate::error::io(
            format!("teacher {}", teacher.info().backend),
            std::io::Error::other(format!("the teacher panicked: {msg}")),
        ))
    })
}

/// Record one unit's answers; returns the number of pairs written.
fn record(writer: &mut ScoreWriter, unit: &Unit, scores: &[Score]) -> Result<u64> {
    let mut n = 0;
    match unit {
        Unit::Image { image, questions } => {
            for (&q, score) in questions.iter().zip(scores) {
                writer.record(*image, q, score)?;
                n += 1;
            }
        }
        Unit::Class {
            images, questions, ..
        } => {
            for &image in images {
                for (&q, score) in questions.iter().zip(scores) {
                    if !writer.is_done(image, q) {
                        writer.record(image, q, score)?;
                        n += 1;
                    }
                }
            }
        }
    }
    Ok(n)
}

fn progress_bar(pairs: u64) -> indicatif::ProgressBar {
    let target = if std::io::stderr().is_terminal() {
        indicatif::ProgressDrawTarget::stderr()
    } else {
        indicatif::ProgressDrawTarget::hidden()
    };
    let bar = indicatif::ProgressBar::with_draw_target(Some(pairs), target);
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "labeling {wide_bar} {human_pos}/{human_len} pairs  {per_sec}  ETA {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

fn list(names: &[String]) -> String {
    const SHOWN: usize = 6;
    let mut s = names
        .iter()
        .take(SHOWN)
        .map(|n| format!("{n:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    if names.len() > SHOWN {
        s.push_str(&format!(", … {} in all", names.len()));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aspects::Provenance;
    use crate::data::{RawImage, Sample};
    use crate::scores::{ScoreStore, STATUS_MISSING, STATUS_OK};
    use crate::teacher::table::TableTeacher;
    use crate::teacher::TeacherInfo;
    use std::path::Path;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const N: usize = 23;
    const CLASSES: [&str; 3] = ["shirt", "boot", "bag"];

    struct TinyData;

    impl Dataset for TinyData {
        fn len(&self) -> usize {
            N
        }
        fn classes(&self) -> &[String] {
            static C: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
            C.get_or_init(|| CLASSES.iter().map(|c| c.to_string()).collect())
        }
        fn id(&self, i: usize) -> &str {
            static IDS: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();
            &IDS.get_or_init(|| (0..N).map(|i| format!("img{i}")).collect())[i]
        }
        fn label(&self, i: usize) -> usize {
            (i * 7) % 3
        }
        fn get(&self, i: usize) -> Result<Sample> {
            Ok(Sample {
                id: self.id(i).to_string(),
                image: RawImage {
                    width: 1,
                    height: 1,
                    channels: 1,
                    pixels: vec![i as u8],
                },
                label: self.label(i),
            })
        }
        fn describe(&self) -> String {
            format!("tiny test set, {N} images")
        }
    }

    fn aspects() -> AspectSet {
        let q = |id: &str, text: &str| Question {
            id: id.into(),
            text: text.into(),
            kind: "part".into(),
        };
        AspectSet::new(
            CLASSES.iter().map(|c| c.to_string()).collect(),
            vec![
                q("q1", "Does the object have sleeves?"),
                q("q2", "Is the object worn on the feet?"),
                q("q3", "Does the object have a handle?"),
                q("q4", "Is the object made of leather?"),
            ],
            Provenance::default(),
        )
        .unwrap()
    }

    /// Per-image values: v(i, q) = ((3i + 5q) % 11) / 10, with cell (i, q) empty when (i+q) % 6 == 0.
    fn image_table(dir: &Path) -> PathBuf {
        let mut text = String::from("image_id,q1,q2,q3,q4\n");
        for i in 0..N {
            text.push_str(&format!("img{i}"));
            for q in 0..4 {
                if (i + q) % 6 == 0 {
                    text.push(',');
                } else {
                    text.push_str(&format!(",{}", ((3 * i + 5 * q) % 11) as f32 / 10.0));
                }
            }
            text.push('\n');
        }
        let p = dir.join("image_table.csv");
        std::fs::write(&p, text).unwrap();
        p
    }

    fn class_table(dir: &Path) -> PathBuf {
        let p = dir.join("class_table.csv");
        std::fs::write(
            &p,
            "class,q1,q2,q3,q4\nshirt,1,0,0,0.1\nboot,0,1,,0.8\nbag,0,0,1,0.5\n",
        )
        .unwrap();
        p
    }

    /// A teacher wrapper: claims `parallelism`, counts questions asked, fails on call `fail_at`.
    struct Wrap {
        inner: TableTeacher,
        parallelism: usize,
        calls: AtomicUsize,
        asked: AtomicUsize,
        fail_at: Option<usize>,
    }

    impl Wrap {
        fn new(inner: TableTeacher, parallelism: usize, fail_at: Option<usize>) -> Arc<Wrap> {
            Arc::new(Wrap {
                inner,
                parallelism,
                calls: AtomicUsize::new(0),
                asked: AtomicUsize::new(0),
                fail_at,
            })
        }
    }

    impl Teacher for Wrap {
        fn info(&self) -> TeacherInfo {
            self.inner.info()
        }
        fn parallelism(&self) -> usize {
            self.parallelism
        }
        fn score(&self, subject: Subject<'_>, questions: &[Question]) -> Result<Vec<Score>> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            if Some(call) == self.fail_at {
                return Err(crate::error::Error::Remote {
                    endpoint: "test".into(),
                    what: "server gone".into(),
                    hint: "retry".into(),
                });
            }
            self.asked.fetch_add(questions.len(), Ordering::SeqCst);
            // Stagger answers so parallel runs finish out of order.
            if let Subject::Image(s) = subject {
                std::thread::sleep(std::time::Duration::from_micros(
                    (s.image.pixels[0] % 5) as u64 * 300,
                ));
            }
            self.inner.score(subject, questions)
        }
    }

    fn job(out: &Path, teacher: Arc<dyn Teacher>, mode: Mode) -> LabelJob {
        LabelJob {
            dataset: Arc::new(TinyData),
            aspects: aspects(),
            teacher,
            out: out.to_path_buf(),
            shard: None,
            limit: None,
            mode,
        }
    }

    fn same_matrix(a: &ScoreStore, b: &ScoreStore) {
        assert_eq!(a.status(), b.status());
        let bits = |s: &ScoreStore| s.p_yes().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(a), bits(b));
    }

    #[test]
    fn image_mode_parallel_equals_serial_and_matches_the_table() {
        let base = tempfile::tempdir().unwrap();
        let table = image_table(base.path());
        let a = aspects();
        let mut stores = Vec::new();
        for par in [1, 4] {
            let out = base.path().join(format!("p{par}"));
            let t = Wrap::new(TableTeacher::load(&table, &a).unwrap(), par, None);
            let sum = run(job(&out, t.clone(), Mode::Image)).unwrap();
            // Cells empty when (i+q) % 6 == 0: 15 of 92 pairs.
            assert_eq!((sum.ok, sum.missing, sum.never_scored), (77, 15, 0));
            // One call per image with all its questions.
            assert_eq!(t.calls.load(Ordering::SeqCst), N);
            stores.push(ScoreStore::open(&out).unwrap());
        }
        same_matrix(&stores[0], &stores[1]);
        let s = &stores[1];
        s.check(&TinyData.fingerprint(), &a.hash).unwrap();
        // img7, q2 (index 1): (21 + 5) % 11 / 10 = 0.4; img5, q2: (5+1) % 6 == 0 -> missing.
        assert_eq!(s.p_yes_row(7)[1], 0.4);
        assert_eq!(s.status_row(5)[1], STATUS_MISSING);
        assert_eq!(s.manifest.teacher.mode, Mode::Image);
        assert_eq!(s.manifest.shard, None);
        assert_eq!(s.manifest.image_ids[3], "img3");
        // A second run finds nothing to do and asks nothing.
        let t = Wrap::new(TableTeacher::load(&table, &a).unwrap(), 4, None);
        run(job(&base.path().join("p4"), t.clone(), Mode::Image)).unwrap();
        assert_eq!(t.calls.load(Ordering::SeqCst), 0);
    }

    #[test]
    fn class_mode_broadcasts_one_answer_per_class() {
        let base = tempfile::tempdir().unwrap();
        let table = class_table(base.path());
        let a = aspects();
        let mut stores = Vec::new();
        for par in [1, 3] {
            let out = base.path().join(format!("c{par}"));
            let t = Wrap::new(TableTeacher::load(&table, &a).unwrap(), par, None);
            run(job(&out, t.clone(), Mode::Class)).unwrap();
            assert_eq!(t.calls.load(Ordering::SeqCst), 3);
            stores.push(ScoreStore::open(&out).unwrap());
        }
        same_matrix(&stores[0], &stores[1]);
        // The same table asked per image gives the same matrix.
        let out = base.path().join("img");
        let t = Wrap::new(TableTeacher::load(&table, &a).unwrap(), 2, None);
        run(job(&out, t, Mode::Image)).unwrap();
        same_matrix(&stores[0], &ScoreStore::open(&out).unwrap());
        let s = &stores[0];
        assert_eq!(s.manifest.teacher.mode, Mode::Class);
        // img1 has label 7 % 3 = 1 (boot): q2 = 1, q3 unknown, q4 = 0.8.
        assert_eq!(s.p_yes_row(1)[1], 1.0);
        assert_eq!(s.status_row(1)[2], STATUS_MISSING);
        assert_eq!(s.p_yes_row(1)[3], 0.8);
    }

    #[test]
    fn a_teacher_error_keeps_what_was_done_and_a_rerun_asks_only_the_rest() {
        let base = tempfile::tempdir().unwrap();
        let table = image_table(base.path());
        let a = aspects();
        let reference = base.path().join("ref");
        run(job(
            &reference,
            Wrap::new(TableTeacher::load(&table, &a).unwrap(), 1, None),
            Mode::Image,
        ))
        .unwrap();
        let out = base.path().join("out");
        let failing = Wrap::new(TableTeacher::load(&table, &a).unwrap(), 3, Some(9));
        let err = run(job(&out, failing.clone(), Mode::Image)).err().unwrap();
        assert!(err.to_string().contains("server gone"), "{err}");
        let answered = failing.asked.load(Ordering::SeqCst);
        assert!(answered > 0 && answered < N * 4);
        let t = Wrap::new(TableTeacher::load(&table, &a).unwrap(), 3, None);
        run(job(&out, t.clone(), Mode::Image)).unwrap();
        // Nothing lost, nothing repeated.
        assert_eq!(answered + t.asked.load(Ordering::SeqCst), N * 4);
        same_matrix(
            &ScoreStore::open(&out).unwrap(),
            &ScoreStore::open(&reference).unwrap(),
        );
    }

    #[test]
    fn class_mode_resume_skips_finished_classes() {
        let base = tempfile::tempdir().unwrap();
        let table = class_table(base.path());
        let a = aspects();
        let out = base.path().join("out");
        let failing = Wrap::new(TableTeacher::load(&table, &a).unwrap(), 1, Some(2));
        assert!(run(job(&out, failing, Mode::Class)).is_err());
        let t = Wrap::new(TableTeacher::load(&table, &a).unwrap(), 1, None);
        let sum = run(job(&out, t.clone(), Mode::Class)).unwrap();
        assert_eq!(t.calls.load(Ordering::SeqCst), 1);
        assert_eq!(sum.never_scored, 0);
    }

    #[test]
    fn shard_and_limit() {
        let base = tempfile::tempdir().unwrap();
        let table = image_table(base.path());
        let a = aspects();
        let out = base.path().join("s1");
        let mut j = job(
            &out,
            Wrap::new(TableTeacher::load(&table, &a).unwrap(), 2, None),
            Mode::Image,
        );
        j.shard = Some(Shard::new(1, 3).unwrap());
        j.limit = Some(2);
        let sum = run(j).unwrap();
        // Shard 1/3 is images 1, 4, 7, ...; the limit keeps 1 and 4.
        assert_eq!(sum.never_scored, (N - 2) * 4);
        let s = ScoreStore::open(&out).unwrap();
        assert_eq!(s.manifest.shard, Some(Shard::new(1, 3).unwrap()));
        assert_eq!(s.status_row(4)[0], STATUS_OK);
        assert_eq!(s.status_row(7)[0], STATUS_MISSING);
        // Three full shards merge into the unsharded store.
        let reference = base.path().join("ref");
        run(job(
            &reference,
            Wrap::new(TableTeacher::load(&table, &a).unwrap(), 1, None),
            Mode::Image,
        ))
        .unwrap();
        let mut dirs = Vec::new();
        for i in 0..3 {
            let d = base.path().join(format!("shard{i}"));
            let mut j = job(
                &d,
                Wrap::new(TableTeacher::load(&table, &a).unwrap(), 2, None),
                Mode::Image,
            );
            j.shard = Some(Shard::new(i, 3).unwrap());
            run(j).unwrap();
            dirs.push(d);
        }
        let merged = base.path().join("merged");
        crate::scores::writer::merge(&dirs, &merged).unwrap();
        let m = ScoreStore::open(&merged).unwrap();
        let r = ScoreStore::open(&reference).unwrap();
        same_matrix(&m, &r);
        assert_eq!(m.manifest, r.manifest);
        // A bad shard spec is an input error (now refused where a Shard is made).
        assert!(matches!(Shard::new(3, 3), Err(Error::Input { .. })));
    }

    #[test]
    fn classes_must_match_the_aspect_set() {
        let base = tempfile::tempdir().unwrap();
        let table = class_table(base.path());
        let mut j = job(
            &base.path().join("o"),
            Wrap::new(TableTeacher::load(&table, &aspects()).unwrap(), 1, None),
            Mode::Image,
        );
        j.aspects.classes.swap(0, 1);
        let e = run(j).err().unwrap();
        assert!(matches!(e, Error::Input { .. }));
        assert!(e.to_string().contains("are not the aspect set's"), "{e}");
        assert!(!base.path().join("o").exists());
    }
}
