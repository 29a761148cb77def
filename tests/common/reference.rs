//! What a native-teacher fixture holds: a tiny random model in a Hugging Face layout and
//! transformers' outputs for it (`reference.json`, `reference.safetensors`, made once by the
//! fixture's `generate.py`), and the checks both native families' tests make against them.

use super::{makd, ok, read_json};
use candle_core::Tensor;
use makd::data::Sample;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

pub struct Reference {
    /// The fixture folder; the images and tensors it names are read from here.
    pub dir: PathBuf,
    pub json: serde_json::Value,
    tensors: HashMap<String, Tensor>,
}

impl Reference {
    pub fn load(dir: PathBuf) -> Reference {
        Reference {
            json: read_json(&dir.join("reference.json")),
            tensors: candle_core::safetensors::load(
                dir.join("reference.safetensors"),
                &candle_core::Device::Cpu,
            )
            .unwrap()
            .into_iter()
            .collect(),
            dir,
        }
    }

    pub fn t(&self, name: &str) -> &Tensor {
        self.tensors
            .get(name)
            .unwrap_or_else(|| panic!("reference has no {name}"))
    }

    pub fn ids(&self, name: &str) -> Vec<u32> {
        self.t(name)
            .to_vec1::<i64>()
            .unwrap()
            .into_iter()
            .map(|x| x as u32)
            .collect()
    }

    pub fn questions(&self) -> Vec<String> {
        self.json["questions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|q| q.as_str().unwrap().to_string())
            .collect()
    }

    pub fn image(&self, i: usize) -> Sample {
        let file = self.json["image_files"][i].as_str().unwrap();
        Sample {
            id: file.into(),
            image: makd::data::imagefolder::decode_file(&self.dir.join(file)).unwrap(),
            label: 0,
        }
    }

    /// Which of the fixture's images a score store's image id is.
    pub fn image_index(&self, id: &str) -> usize {
        (0..3)
            .find(|&k| id.ends_with(self.json["image_files"][k].as_str().unwrap()))
            .unwrap()
    }

    /// The inputs of `makd label` on the fixture, written under `tmp`: an image folder of its 3
    /// images (classes bag, coat, shoe) and its questions imported as an aspect set. Returns the
    /// `--dataset` spec and the aspects file.
    pub fn label_inputs(&self, tmp: &Path) -> (String, PathBuf) {
        let root = tmp.join("data");
        for (i, class) in ["bag", "coat", "shoe"].iter().enumerate() {
            let d = root.join("train").join(class);
            std::fs::create_dir_all(&d).unwrap();
            let file = self.json["image_files"][i].as_str().unwrap();
            std::fs::copy(self.dir.join(file), d.join(file)).unwrap();
        }
        let qfile = tmp.join("questions.txt");
        std::fs::write(&qfile, self.questions().join("\n") + "\n").unwrap();
        let aspects = tmp.join("aspects.json");
        ok(makd()
            .args(["aspects", "import"])
            .arg(&qfile)
            .args(["--classes", "bag,coat,shoe", "-o"])
            .arg(&aspects));
        (format!("imagefolder:{}", root.display()), aspects)
    }
}

pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// P(yes) of a log-probability row from its single Yes and No tokens.
pub fn p_yes(lp: &[f32], yes: usize, no: usize) -> f32 {
    1.0 / (1.0 + (lp[no] - lp[yes]).exp())
}

/// The ids of a `tokenizer.json`'s Yes and No spellings (`Yes`, `ĠYes`, `YES`, …).
pub fn answer_variants(tokenizer_json: &Path) -> (Vec<usize>, Vec<usize>) {
    let vocab = read_json(tokenizer_json)["model"]["vocab"].clone();
    let mut variants: (Vec<usize>, Vec<usize>) = (vec![], vec![]);
    for (piece, id) in vocab.as_object().unwrap() {
        let word = piece.trim_start_matches(['Ġ', ' ']).to_lowercase();
        match word.as_str() {
            "yes" => variants.0.push(id.as_u64().unwrap() as usize),
            "no" => variants.1.push(id.as_u64().unwrap() as usize),
            _ => {}
        }
    }
    variants
}

/// P(yes) of a log-probability row with every Yes spelling against every No spelling
/// (log-sum-exp over each set), as the native teacher scores.
pub fn p_yes_over(lp: &[f32], variants: &(Vec<usize>, Vec<usize>)) -> f32 {
    let lse = |ids: &[usize]| {
        let v: Vec<f64> = ids.iter().map(|&t| lp[t] as f64).collect();
        let m = v.iter().cloned().fold(f64::MIN, f64::max);
        m + v.iter().map(|x| (x - m).exp()).sum::<f64>().ln()
    };
    let (ly, ln) = (lse(&variants.0), lse(&variants.1));
    (1.0 / (1.0 + (ln - ly).exp())) as f32
}
