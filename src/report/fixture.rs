//! A realistic fake experiment for the report's tests: Fashion-MNIST's 10 classes, 50 questions,
//! baseline / makd / random-target × 3 seeds, 15-epoch curves, 3 example images and a 200-point
//! embedding (made by the real PCA from clustered 32-D features).

use crate::experiment::results::*;
use crate::experiment::stats::{compare_all, pca_2d, Side};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const TEXTS: [&str; 12] = [
    "Does the item have sleeves?",
    "Is the item worn on the feet?",
    "Does the item cover the legs?",
    "Does the item have a collar?",
    "Is the item typically worn in cold weather?",
    "Does the item have a handle or strap for carrying?",
    "Does the item have buttons or a zipper down the front?",
    "Is the item open at the toes?",
    "Does the item reach above the ankle?",
    "Is the item a single piece covering torso and legs?",
    "Is the item made of a heavy fabric?",
    "Does the item have laces?",
];

pub(crate) fn results() -> ExperimentResults {
    let mut rng = ChaCha8Rng::seed_from_u64(42);
    let kinds = ["visual", "shape", "part", "function", "environment"];
    let questions: Vec<QuestionInfo> = (0..50)
        .map(|i| QuestionInfo {
            id: format!("q{:02}", i + 1),
            text: TEXTS
                .get(i)
                .map(|t| t.to_string())
                .unwrap_or_else(|| format!("Does the item show visual aspect number {}?", i + 1)),
            kind: kinds[i % kinds.len()].to_string(),
        })
        .collect();

    let specs: [(&str, &str, [f64; 3], Option<f64>); 3] = [
        ("baseline", "CE only", [89.12, 89.41, 88.93], None),
        (
            "makd",
            "CE + 4.0 · BCE against the teacher's P(yes)",
            [89.95, 90.21, 90.02],
            Some(0.86),
        ),
        (
            "random-target",
            "CE + 4.0 · BCE against uniform random P(yes), same Q",
            [89.31, 88.84, 89.52],
            Some(0.5),
        ),
    ];
    let mut variants = Vec::new();
    for (name, description, finals, auc_level) in specs {
        let mut runs = Vec::new();
        for (seed, &fin) in finals.iter().enumerate() {
            let curve = (1..=15)
                .map(|epoch| {
                    let e = epoch as f64;
                    CurvePoint {
                        epoch,
                        train_loss: 1.8 * (-e / 4.0).exp() + 0.25 + rng.random_range(0.0..0.03),
                        test_top1: if epoch == 15 {
                            fin
                        } else {
                            fin - 18.0 * (-e / 3.0).exp() + rng.random_range(-0.4..0.4)
                        },
                    }
                })
                .collect();
            let auc = auc_level.map(|a| a + rng.random_range(-0.01..0.01));
            runs.push(RunResult {
                seed: seed as u64,
                run_dir: format!("runs/{name}-s{seed}"),
                test_top1: fin,
                test_top5: 99.6 + rng.random_range(0.0..0.3),
                aspect_auc: auc,
                aspect_agreement: auc.map(|a| a - 0.05),
                curve,
                seconds: 41.0 + rng.random_range(0.0..5.0),
            });
        }
        let col = |f: &dyn Fn(&RunResult) -> Option<f64>| -> Option<Stat> {
            let v: Vec<f64> = runs.iter().filter_map(f).collect();
            (!v.is_empty()).then(|| Stat::of(&v))
        };
        let per_question_auc = match auc_level {
            None => vec![],
            Some(level) => (0..50)
                .map(|q| {
                    // Two questions the teacher answers identically for every image.
                    (q % 23 != 7).then(|| (level + rng.random_range(-0.12..0.12)).clamp(0.0, 1.0))
                })
                .collect(),
        };
        variants.push(VariantResult {
            name: name.into(),
            description: description.into(),
            top1: col(&|r| Some(r.test_top1)).unwrap(),
            top5: col(&|r| Some(r.test_top5)).unwrap(),
            aspect_auc: col(&|r| r.aspect_auc),
            aspect_agreement: col(&|r| r.aspect_agreement),
            per_question_auc,
            runs,
        });
    }
    let top1: Vec<Vec<(u64, f64)>> = variants
        .iter()
        .map(|v| v.runs.iter().map(|r| (r.seed, r.test_top1)).collect())
        .collect();
    let side = |i: usize| Side {
        name: &variants[i].name,
        runs: &top1[i],
    };
    let comparisons = compare_all(
        "test_top1",
        "points",
        &[(side(1), side(0)), (side(1), side(2)), (side(2), side(0))],
    );

    let examples = [
        (17usize, "Coat", 0usize),
        (230, "Sneaker", 12),
        (4031, "Bag", 30),
    ]
    .iter()
    .map(|&(id, label, first)| {
        let qs: Vec<usize> = (first..first + 12).collect();
        let teacher: Vec<f32> = qs.iter().map(|_| rng.random_range(0.0..1.0)).collect();
        let student = teacher
            .iter()
            .map(|t| (t + rng.random_range(-0.2f32..0.2)).clamp(0.0, 1.0))
            .collect();
        ExampleResponse {
            image_id: format!("t10k-{id:05}"),
            label: label.into(),
            questions: qs,
            teacher,
            student,
        }
    })
    .collect();

    // 10 class clusters in 32-D, 20 points each.
    let centers: Vec<Vec<f32>> = (0..10)
        .map(|_| (0..32).map(|_| rng.random_range(-3.0f32..3.0)).collect())
        .collect();
    let mut rows = Vec::new();
    let mut labels = Vec::new();
    for i in 0..200 {
        let c = i % 10;
        rows.push(
            centers[c]
                .iter()
                .map(|x| x + rng.random_range(-1.2f32..1.2))
                .collect::<Vec<f32>>(),
        );
        labels.push(c);
    }
    let embedding = Embedding {
        method: "pca".into(),
        points: pca_2d(&rows).unwrap(),
        labels,
        variant: "makd (seed 0)".into(),
    };

    ExperimentResults {
        format_version: FORMAT_VERSION,
        name: "fashion-mnist-demo".into(),
        created: "2025-01-01T00:00:00Z".into(),
        config: serde_json::json!({
            "name": "fashion-mnist-demo",
            "seeds": [0, 1, 2],
            "epochs": 15,
            "variants": ["baseline", "makd", "random-target"],
            "alpha": 4.0
        }),
        dataset: "Fashion-MNIST (60000 train, 10000 test)".into(),
        classes: crate::data::idx::FASHION_MNIST_CLASSES
            .iter()
            .map(|c| c.to_string())
            .collect(),
        questions,
        variants,
        comparisons,
        examples,
        embedding: Some(embedding),
        notes: vec![
            "The teacher is a text-only 270M model answering per class: a weak teacher, good \
             for proving the mechanics, not for claims."
                .into(),
        ],
    }
}
