use super::log::{Record, HEADER_LEN, RECORD_LEN};
use super::writer::*;
use super::*;
use crate::teacher::{Mode, Score, Status, TeacherInfo};
use std::path::PathBuf;

const IMAGES: usize = 7;
const QS: usize = 4;

fn manifest(shard: Option<[usize; 2]>) -> Manifest {
    let shard = shard.map(|[i, n]| Shard::new(i, n).unwrap());
    Manifest {
        format_version: FORMAT_VERSION,
        dataset: "test: 7 images".into(),
        dataset_fingerprint: "fp".into(),
        image_ids: (0..IMAGES).map(|i| format!("img{i}")).collect(),
        aspect_hash: "ah".into(),
        question_ids: (0..QS).map(|q| format!("q{q}")).collect(),
        teacher: TeacherInfo {
            backend: "table".into(),
            model: "t.csv".into(),
            mode: Mode::Image,
            ..Default::default()
        },
        shard,
    }
}

/// A deterministic answer with every status represented.
fn score(image: usize, q: usize) -> Score {
    let p = ((image * 7 + q * 3) % 11) as f32 / 10.0;
    match (image + q) % 5 {
        0 => Score::missing(),
        1 => Score {
            p_yes: p,
            logit_yes: -30.0,
            logit_no: 0.5,
            status: Status::Floored,
        },
        _ => Score {
            p_yes: p,
            logit_yes: p.ln(),
            logit_no: (1.0 - p).ln(),
            status: Status::Ok,
        },
    }
}

fn label_all(w: &mut ScoreWriter) {
    for i in 0..IMAGES {
        if !w.manifest().owns(i) {
            continue;
        }
        for q in w.pending(i) {
            w.record(i, q, &score(i, q)).unwrap();
        }
    }
}

fn reference(dir: &Path) -> ScoreStore {
    let mut w = ScoreWriter::open(dir, manifest(None)).unwrap();
    label_all(&mut w);
    w.finish().unwrap();
    ScoreStore::open(dir).unwrap()
}

fn assert_same(a: &ScoreStore, b: &ScoreStore) {
    assert_eq!(a.manifest, b.manifest);
    assert_eq!(a.status(), b.status());
    let bits = |s: &ScoreStore| s.p_yes().iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(a), bits(b));
    assert_eq!(a.summary(), b.summary());
}

fn is_input(e: &crate::Error) -> bool {
    matches!(e, crate::Error::Input { .. })
}

#[test]
fn finish_writes_matrix_and_counts() {
    let dir = tempfile::tempdir().unwrap();
    let s = reference(dir.path());
    assert_eq!(s.num_images(), IMAGES);
    assert_eq!(s.num_questions(), QS);
    // (image + q) % 5: 0 missing, 1 floored, else ok; over 7 × 4 pairs (sums 0..=9) that is 5/6/17.
    let sum = s.summary();
    assert_eq!(
        (sum.missing, sum.floored, sum.ok, sum.never_scored),
        (5, 6, 17, 0)
    );
    // image 2, question 3: (2+3)%5 == 0 -> missing, NaN.
    assert_eq!(s.status_row(2)[3], STATUS_MISSING);
    assert!(s.p_yes_row(2)[3].is_nan());
    // image 3, question 1: ok, p = ((21 + 3) % 11) / 10 = 0.2.
    assert_eq!(s.status_row(3)[1], STATUS_OK);
    assert_eq!(s.p_yes_row(3)[1], 0.2);
    assert_eq!(s.mask_row(2), vec![1.0, 1.0, 1.0, 0.0]);
    let (mut t, mut m) = (vec![9.0; QS], vec![9.0; QS]);
    s.fill_row(2, &mut t, &mut m);
    assert_eq!(m, vec![1.0, 1.0, 1.0, 0.0]);
    assert_eq!(t[3], 0.0);
    assert_eq!(t[0], s.p_yes_row(2)[0]);
    // The file is a plain safetensors file other tools can read.
    let bytes = std::fs::read(dir.path().join(MATRIX_FILE)).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("p_yes").unwrap().shape(), &[IMAGES, QS]);
    assert_eq!(st.tensor("status").unwrap().dtype(), safetensors::Dtype::U8);
}

#[test]
fn resume_after_a_torn_tail_at_every_byte_equals_an_uninterrupted_run() {
    let base = tempfile::tempdir().unwrap();
    let want = reference(&base.path().join("ref"));
    let full_log = std::fs::read(base.path().join("ref").join(LOG_FILE)).unwrap();
    assert_eq!(full_log.len(), HEADER_LEN + IMAGES * QS * RECORD_LEN);
    for cut in full_log.len() - RECORD_LEN..=full_log.len() {
        let dir = base.path().join(format!("cut{cut}"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::copy(
            base.path().join("ref").join(MANIFEST_FILE),
            dir.join(MANIFEST_FILE),
        )
        .unwrap();
        std::fs::write(dir.join(LOG_FILE), &full_log[..cut]).unwrap();
        let mut w = ScoreWriter::open(&dir, manifest(None)).unwrap();
        let torn = cut < full_log.len();
        assert_eq!(w.recovered().valid as usize, IMAGES * QS - torn as usize);
        // Only the torn last pair is pending; every complete record survived.
        let last = (IMAGES - 1, QS - 1);
        assert_eq!(w.is_done(last.0, last.1), !torn, "cut at {cut}");
        assert_eq!(w.pending(last.0).len(), torn as usize);
        label_all(&mut w);
        w.finish().unwrap();
        // The tail was cut before appending: the log is exactly as long as an uninterrupted one.
        assert_eq!(
            std::fs::metadata(dir.join(LOG_FILE)).unwrap().len() as usize,
            full_log.len()
        );
        assert_same(&ScoreStore::open(&dir).unwrap(), &want);
    }
}

#[test]
fn writer_dropped_midway_then_resumed_equals_uninterrupted() {
    let base = tempfile::tempdir().unwrap();
    let want = reference(&base.path().join("ref"));
    let dir = base.path().join("killed");
    {
        let mut w = ScoreWriter::open(&dir, manifest(None)).unwrap();
        for i in 0..3 {
            for q in 0..QS {
                w.record(i, q, &score(i, q)).unwrap();
            }
        }
        w.record(3, 1, &score(3, 1)).unwrap();
        // Dropped without finish: no matrix, the log holds 13 records.
    }
    assert!(!dir.join(MATRIX_FILE).exists());
    let err = ScoreStore::open(&dir).unwrap_err();
    assert!(err.report().contains("run `makd label` again"), "{err}");
    let mut w = ScoreWriter::open(&dir, manifest(None)).unwrap();
    assert_eq!(w.recovered().valid, 13);
    assert_eq!(w.pending(3), vec![0, 2, 3]);
    assert!(w.pending(2).is_empty());
    let s = w.summary();
    assert_eq!(s.never_scored, IMAGES * QS - 13);
    label_all(&mut w);
    w.finish().unwrap();
    assert_same(&ScoreStore::open(&dir).unwrap(), &want);
}

#[test]
fn later_records_win_and_corrupt_middle_records_are_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ScoreWriter::open(dir.path(), manifest(None)).unwrap();
    let s1 = Score {
        p_yes: 0.25,
        logit_yes: 0.0,
        logit_no: 0.0,
        status: Status::Ok,
    };
    let s2 = Score { p_yes: 0.75, ..s1 };
    w.record(0, 0, &s1).unwrap();
    w.record(0, 1, &s1).unwrap();
    w.record(0, 0, &s2).unwrap();
    w.record(0, 2, &s1).unwrap();
    w.flush().unwrap();
    drop(w);
    let log_path = dir.path().join(LOG_FILE);
    let mut bytes = std::fs::read(&log_path).unwrap();
    // Corrupt the second record (0, 1).
    bytes[HEADER_LEN + RECORD_LEN + 9] ^= 0xFF;
    std::fs::write(&log_path, &bytes).unwrap();
    let w = ScoreWriter::open(dir.path(), manifest(None)).unwrap();
    assert_eq!(w.recovered().valid, 3);
    assert_eq!(w.recovered().corrupt, 1);
    assert_eq!(w.pending(0), vec![1, 3]);
    let sum = w.finish().unwrap();
    assert_eq!(sum.ok, 2);
    let s = ScoreStore::open(dir.path()).unwrap();
    assert_eq!(s.p_yes_row(0)[0], 0.75);
    assert_eq!(s.p_yes_row(0)[2], 0.25);
}

#[test]
fn record_rejects_bad_values_and_foreign_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ScoreWriter::open(dir.path(), manifest(Some([1, 3]))).unwrap();
    let bad = Score {
        p_yes: 1.5,
        logit_yes: 0.0,
        logit_no: 0.0,
        status: Status::Ok,
    };
    assert!(w.record(1, 0, &bad).is_err());
    let nan = Score {
        p_yes: f32::NAN,
        ..bad
    };
    assert!(w.record(1, 0, &nan).is_err());
    // Image 0 belongs to shard 0/3, not 1/3.
    assert!(w.record(0, 0, &score(0, 0)).is_err());
    assert!(w.record(IMAGES, 0, &score(0, 0)).is_err());
    w.record(4, 0, &score(4, 0)).unwrap();
}

#[test]
fn reopening_with_another_manifest_is_an_input_error() {
    let dir = tempfile::tempdir().unwrap();
    ScoreWriter::open(dir.path(), manifest(None)).unwrap();
    let cases: Vec<(Manifest, &str)> = vec![
        (
            Manifest {
                dataset_fingerprint: "other".into(),
                ..manifest(None)
            },
            "another dataset",
        ),
        (
            Manifest {
                aspect_hash: "other".into(),
                ..manifest(None)
            },
            "another aspect set",
        ),
        (
            {
                let mut m = manifest(None);
                m.teacher.model = "other.csv".into();
                m
            },
            "another teacher",
        ),
        (manifest(Some([0, 2])), "another shard"),
    ];
    for (m, want) in cases {
        let err = ScoreWriter::open(dir.path(), m).err().unwrap();
        assert!(is_input(&err));
        let text = err.report();
        assert!(
            text.contains(want) && text.contains("--out"),
            "{want}: {text}"
        );
    }
    // The same manifest resumes.
    ScoreWriter::open(dir.path(), manifest(None)).unwrap();
    // So does the same teacher served from elsewhere (another port, more endpoints).
    let mut moved = manifest(None);
    moved.teacher.extra.insert(
        "endpoints".into(),
        serde_json::json!(["http://10.0.0.2:8000/v1"]),
    );
    ScoreWriter::open(dir.path(), moved).unwrap();
    let mut other = manifest(None);
    other
        .teacher
        .extra
        .insert("top_logprobs".into(), serde_json::json!(5));
    assert!(ScoreWriter::open(dir.path(), other).is_err());
}

fn write_safetensors(dir: &Path, p_yes: &[f32], status: &[u8], shape: [usize; 2]) {
    std::fs::create_dir_all(dir).unwrap();
    crate::files::write_json_atomic(&dir.join(MANIFEST_FILE), &manifest(None)).unwrap();
    let pb: Vec<u8> = p_yes.iter().flat_map(|v| v.to_le_bytes()).collect();
    let tensors = vec![
        (
            "p_yes",
            safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.to_vec(), &pb)
                .unwrap(),
        ),
        (
            "status",
            safetensors::tensor::TensorView::new(safetensors::Dtype::U8, shape.to_vec(), status)
                .unwrap(),
        ),
    ];
    let bytes = safetensors::serialize(tensors, None).unwrap();
    std::fs::write(dir.join(MATRIX_FILE), bytes).unwrap();
}

#[test]
fn damaged_matrices_are_rejected_naming_the_pair() {
    let n = IMAGES * QS;
    let base = tempfile::tempdir().unwrap();
    let good_p = vec![0.5f32; n];
    let good_s = vec![STATUS_OK; n];
    let d = base.path().join("good");
    write_safetensors(&d, &good_p, &good_s, [IMAGES, QS]);
    assert_eq!(ScoreStore::open(&d).unwrap().summary().ok, n);

    // Pair index 9 = image 2, question 1.
    let mut cases: Vec<(Vec<f32>, Vec<u8>, &str)> = Vec::new();
    let mut p = good_p.clone();
    p[9] = f32::NAN;
    cases.push((p, good_s.clone(), "p_yes NaN"));
    let mut p = good_p.clone();
    p[9] = 1.5;
    cases.push((p, good_s.clone(), "p_yes 1.5"));
    let mut p = good_p.clone();
    p[9] = -0.01;
    let mut s = good_s.clone();
    s[9] = STATUS_FLOORED;
    cases.push((p, s, "p_yes -0.01"));
    let mut s = good_s.clone();
    s[9] = 7;
    cases.push((good_p.clone(), s, "unknown status byte 7"));
    for (k, (p, s, want)) in cases.into_iter().enumerate() {
        let d = base.path().join(format!("bad{k}"));
        write_safetensors(&d, &p, &s, [IMAGES, QS]);
        let err = ScoreStore::open(&d).unwrap_err();
        assert!(is_input(&err));
        let text = err.report();
        assert!(text.contains(want), "{text}");
        assert!(
            text.contains("\"img2\"") && text.contains("\"q1\""),
            "{text}"
        );
    }
    // A missing pair may hold NaN.
    let mut p = good_p.clone();
    p[9] = f32::NAN;
    let mut s = good_s.clone();
    s[9] = STATUS_MISSING;
    let d = base.path().join("nan-missing");
    write_safetensors(&d, &p, &s, [IMAGES, QS]);
    assert_eq!(ScoreStore::open(&d).unwrap().summary().missing, 1);
    // Shapes must match the manifest.
    let d = base.path().join("shape");
    write_safetensors(&d, &good_p, &good_s, [QS, IMAGES]);
    let err = ScoreStore::open(&d).unwrap_err();
    assert!(err.to_string().contains("manifest needs"), "{err}");
    // Not a safetensors file at all.
    std::fs::write(d.join(MATRIX_FILE), b"garbage").unwrap();
    assert!(is_input(&ScoreStore::open(&d).unwrap_err()));
}

#[test]
fn check_names_what_differs() {
    let dir = tempfile::tempdir().unwrap();
    let s = reference(dir.path());
    s.check("fp", "ah").unwrap();
    let e = s.check("fp2", "ah").unwrap_err().report();
    assert!(e.contains("another dataset") && e.contains("hint"), "{e}");
    let e = s.check("fp", "ah2").unwrap_err().report();
    assert!(
        e.contains("another aspect set") && e.contains("aspects.json"),
        "{e}"
    );
}

#[test]
fn from_parts_save_open_roundtrip() {
    let base = tempfile::tempdir().unwrap();
    let n = IMAGES * QS;
    let p: Vec<f32> = (0..n).map(|k| k as f32 / n as f32).collect();
    let mut st = vec![STATUS_OK; n];
    st[3] = STATUS_FLOORED;
    let store = ScoreStore::from_parts(manifest(None), p.clone(), st.clone()).unwrap();
    let d = base.path().join("derived");
    store.save(&d).unwrap();
    let back = ScoreStore::open(&d).unwrap();
    assert_same(&back, &store);
    assert!(ScoreStore::from_parts(manifest(None), p[1..].to_vec(), st.clone()).is_err());
    let mut bad = p.clone();
    bad[0] = 2.0;
    assert!(ScoreStore::from_parts(manifest(None), bad, st).is_err());
    // Saving over a label run would desynchronise its log.
    let run = base.path().join("run");
    let _ = reference(&run);
    assert!(is_input(&store.save(&run).unwrap_err()));
    // A writer opened on a store without a log keeps its answers instead of redoing them.
    let w = ScoreWriter::open(&d, manifest(None)).unwrap();
    assert!(w.pending(0).is_empty());
    assert_eq!(w.summary().ok + w.summary().floored, n);
}

#[test]
fn limited_run_counts_never_scored_and_resumes_with_more() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ScoreWriter::open(dir.path(), manifest(None)).unwrap();
    for q in 0..QS {
        w.record(0, q, &score(0, q)).unwrap();
    }
    let sum = w.finish().unwrap();
    assert_eq!(sum.never_scored, (IMAGES - 1) * QS);
    let s = ScoreStore::open(dir.path()).unwrap();
    assert_eq!(s.summary(), sum);
    let mut w = ScoreWriter::open(dir.path(), manifest(None)).unwrap();
    assert!(w.pending(0).is_empty());
    label_all(&mut w);
    assert_eq!(w.finish().unwrap().never_scored, 0);
}

fn shard(dir: &Path, i: usize, n: usize) -> PathBuf {
    let d = dir.join(format!("shard{i}of{n}"));
    let mut w = ScoreWriter::open(&d, manifest(Some([i, n]))).unwrap();
    label_all(&mut w);
    w.finish().unwrap();
    d
}

#[test]
fn merge_of_three_shards_equals_an_unsharded_run() {
    let base = tempfile::tempdir().unwrap();
    let want = reference(&base.path().join("ref"));
    let shards: Vec<PathBuf> = [2, 0, 1]
        .iter()
        .map(|&i| shard(base.path(), i, 3))
        .collect();
    let out = base.path().join("merged");
    let sum = merge(&shards, &out).unwrap();
    assert_eq!(sum, want.summary());
    assert_same(&ScoreStore::open(&out).unwrap(), &want);
    // Merging again into the same place is harmless.
    merge(&shards, &out).unwrap();
    assert_same(&ScoreStore::open(&out).unwrap(), &want);
}

#[test]
fn merge_rejects_overlapping_missing_and_foreign_shards() {
    let base = tempfile::tempdir().unwrap();
    let s0 = shard(base.path(), 0, 3);
    let s1 = shard(base.path(), 1, 3);
    let s2 = shard(base.path(), 2, 3);
    let out = base.path().join("out");
    let e = merge(&[s0.clone(), s1.clone(), s1.clone()], &out).unwrap_err();
    assert!(e.to_string().contains("given twice"), "{e}");
    let e = merge(&[s0.clone(), s2.clone()], &out).unwrap_err();
    assert!(e.to_string().contains("shard 1/3 is missing"), "{e}");
    let other = shard(base.path(), 1, 2);
    let e = merge(&[s0.clone(), other, s2.clone()], &out).unwrap_err();
    assert!(e.to_string().contains("1/2"), "{e}");
    let plain = base.path().join("plain");
    let _ = reference(&plain);
    let e = merge(&[s0.clone(), plain], &out).unwrap_err();
    assert!(e.to_string().contains("not a shard"), "{e}");
    let foreign = base.path().join("foreign");
    {
        let mut m = manifest(Some([1, 3]));
        m.aspect_hash = "zz".into();
        ScoreWriter::open(&foreign, m).unwrap().finish().unwrap();
    }
    let e = merge(&[s0, foreign, s2], &out).unwrap_err();
    assert!(e.to_string().contains("another aspect set"), "{e}");
    assert!(!out.exists());
}

#[test]
fn synthetic_log_resumes_in_one_pass() {
    let dir = tempfile::tempdir().unwrap();
    let m = write_synthetic_log(dir.path(), 100, 5).unwrap();
    let w = ScoreWriter::open(dir.path(), m).unwrap();
    assert_eq!(w.recovered().valid, 500);
    assert!(w.pending(99).is_empty());
    let s = w.finish().unwrap();
    assert_eq!(s.ok, 500);
    let store = ScoreStore::open(dir.path()).unwrap();
    // image 3, question 2: ((93 + 34) % 101) / 100 = 0.26.
    assert_eq!(store.p_yes_row(3)[2], 0.26);
}

#[test]
fn record_layout_is_24_bytes() {
    let r = Record {
        image: 1,
        question: 2,
        status: 0,
        p_yes: 0.5,
        logit_yes: 0.0,
        logit_no: 0.0,
    };
    assert_eq!(r.encode().len(), 24);
}

#[test]
fn a_torn_record_in_the_middle_does_not_misalign_the_rest() {
    // Two writers without a lock, or a disk fault, can leave part of a record between whole ones:
    // everything after it must still be read (it used to be skipped as corrupt, and then cut).
    let dir = tempfile::tempdir().unwrap();
    let mut w = ScoreWriter::open(dir.path(), manifest(None)).unwrap();
    let s = |p: f32| Score {
        p_yes: p,
        logit_yes: 0.0,
        logit_no: 0.0,
        status: Status::Ok,
    };
    w.record(0, 0, &s(0.1)).unwrap();
    w.record(0, 1, &s(0.2)).unwrap();
    w.flush().unwrap();
    drop(w);
    let log_path = dir.path().join(LOG_FILE);
    let mut bytes = std::fs::read(&log_path).unwrap();
    let torn = bytes[HEADER_LEN..HEADER_LEN + 10].to_vec();
    bytes.extend_from_slice(&torn);
    for (q, p) in [(2u16, 0.3f32), (3, 0.4)] {
        let r = log::Record {
            image: 1,
            question: q,
            status: STATUS_OK,
            p_yes: p,
            logit_yes: 0.0,
            logit_no: 0.0,
        };
        bytes.extend_from_slice(&r.encode());
    }
    std::fs::write(&log_path, &bytes).unwrap();
    let w = ScoreWriter::open(dir.path(), manifest(None)).unwrap();
    assert_eq!(w.recovered().valid, 4);
    assert_eq!(w.recovered().corrupt, 1);
    assert_eq!(w.recovered().valid_end, bytes.len() as u64);
    assert!(w.pending(1).iter().all(|&q| q != 2 && q != 3));
}

#[test]
fn a_second_writer_on_the_same_store_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let w = ScoreWriter::open(dir.path(), manifest(None)).unwrap();
    let err = ScoreWriter::open(dir.path(), manifest(None))
        .err()
        .expect("a second writer is refused");
    assert!(
        matches!(&err, crate::Error::Input { what, .. } if what.contains("another")),
        "{err}"
    );
    drop(w);
    // Released with the writer.
    ScoreWriter::open(dir.path(), manifest(None)).unwrap();
}

#[test]
fn a_matrix_older_than_its_log_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mut w = ScoreWriter::open(dir.path(), manifest(None)).unwrap();
    let s = Score {
        p_yes: 0.5,
        logit_yes: 0.0,
        logit_no: 0.0,
        status: Status::Ok,
    };
    w.record(0, 0, &s).unwrap();
    w.finish().unwrap();
    ScoreStore::open(dir.path()).unwrap();
    // A later run appends (say, a larger --limit) and is killed before it compacts.
    let mut w = ScoreWriter::open(dir.path(), manifest(None)).unwrap();
    w.record(0, 1, &s).unwrap();
    w.flush().unwrap();
    drop(w);
    let err = ScoreStore::open(dir.path()).expect_err("a stale matrix is refused");
    assert!(
        matches!(&err, crate::Error::Input { what, .. } if what.contains("older than")),
        "{err}"
    );
    // Finishing the run compacts again and the store opens.
    ScoreWriter::open(dir.path(), manifest(None))
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(ScoreStore::open(dir.path()).unwrap().summary().ok, 2);
}

#[test]
fn status_bytes_round_trip_and_one_usable_rule() {
    for s in [Status::Ok, Status::Floored, Status::Missing] {
        assert_eq!(Status::from_u8(s.as_u8()), Some(s));
    }
    assert_eq!(Status::from_u8(7), None);
    assert_eq!(
        (0u8..=3).map(Status::byte_is_usable).collect::<Vec<_>>(),
        vec![true, true, false, false]
    );
}
