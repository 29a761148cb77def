//! The aspect set file (`aspects.json`): classes, questions, provenance and content hash.

use crate::error::{input, Result};
use crate::files;
use serde::{Deserialize, Serialize};
use std::path::Path;

pub const FORMAT_VERSION: u32 = 1;

/// The kinds of aspect a question may be about.
pub const KINDS: [&str; 7] = [
    "visual",
    "shape",
    "part",
    "material",
    "environment",
    "function",
    "abstract",
];

/// A kind from the question's words, for models that did not give one.
pub fn guess_kind(text: &str) -> &'static str {
    let t = format!(" {} ", text.to_lowercase());
    let has = |ws: &[&str]| ws.iter().any(|w| t.contains(w));
    if has(&[
        " made of ",
        "material",
        "leather",
        "fabric",
        "metal",
        "wood",
        "plastic",
        "cotton",
        "wool",
        "rubber",
    ]) {
        "material"
    } else if has(&[
        " wheel", " wing", " leg", "handle", "sleeve", "collar", "button", "zip", " lace", "strap",
        " heel", " sole", "pocket", " tail", " hood", " part",
    ]) {
        "part"
    } else if has(&[
        "shape",
        " round",
        "square",
        "rectangular",
        " long",
        " short",
        " thin",
        " flat",
        "curved",
        " tall",
        "symmetr",
    ]) {
        "shape"
    } else if has(&[
        "outdoor",
        "indoor",
        "water",
        " sky",
        " road",
        "background",
        "environment",
        "found in",
    ]) {
        "environment"
    } else if has(&[
        "used for", " worn", " wear", "carry", " hold", "used to", "function",
    ]) {
        "function"
    } else {
        "visual"
    }
}

/// One yes/no question about an aspect of the object.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Question {
    /// Stable short id (`q01`, …); column name in tables and reports.
    pub id: String,
    /// The question as asked, ending in `?`.
    pub text: String,
    /// visual, shape, part, material, environment, function, abstract, …
    #[serde(default)]
    pub kind: String,
}

/// How the questions were made.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Provenance {
    /// `llm` (generated and selected by a model), `import` (a text file), `hand` (written by a person).
    pub method: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prompts: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub n_generated: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub q_selected: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// The aspect set file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AspectSet {
    pub format_version: u32,
    pub classes: Vec<String>,
    pub questions: Vec<Question>,
    pub provenance: Provenance,
    /// SHA-256 over the class list and the questions' ids and texts (see [`AspectSet::compute_hash`]).
    pub hash: String,
}

/// Why a string is not a usable yes/no question, if it is not.
pub fn check_question(text: &str) -> std::result::Result<(), String> {
    let t = text.trim();
    if t.is_empty() {
        return Err("the question is empty".into());
    }
    if !t.ends_with('?') {
        return Err("a yes/no question must end with '?'".into());
    }
    if t.chars().filter(|c| c.is_alphabetic()).count() < 8 {
        return Err("the question is too short to be about an aspect".into());
    }
    if t.len() > 300 {
        return Err("the question is longer than 300 characters".into());
    }
    Ok(())
}

impl AspectSet {
    /// Build a validated set and compute its hash.
    pub fn new(
        classes: Vec<String>,
        questions: Vec<Question>,
        provenance: Provenance,
    ) -> Result<Self> {
        let mut set = AspectSet {
            format_version: FORMAT_VERSION,
            classes,
            questions,
            provenance,
            hash: String::new(),
        };
        set.validate("aspect set")?;
        set.hash = set.compute_hash();
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.questions.len()
    }

    pub fn is_empty(&self) -> bool {
        self.questions.is_empty()
    }

    /// Hash of what a score depends on: classes (in order) and questions (ids and texts, in order).
    /// Kinds and provenance are descriptive and do not change the hash.
    pub fn compute_hash(&self) -> String {
        let mut bytes = Vec::new();
        for c in &self.classes {
            bytes.extend_from_slice(b"class\0");
            bytes.extend_from_slice(c.as_bytes());
            bytes.push(0);
        }
        for q in &self.questions {
            bytes.extend_from_slice(b"question\0");
            bytes.extend_from_slice(q.id.as_bytes());
            bytes.push(0);
            bytes.extend_from_slice(q.text.as_bytes());
            bytes.push(0);
        }
        files::sha256_hex(&bytes)
    }

    fn validate(&self, at: &str) -> Result<()> {
        if self.format_version != FORMAT_VERSION {
            return Err(input(
                format!(
                    "unsupported aspect set format_version {}",
                    self.format_version
                ),
                at,
                format!("this makd reads format_version {FORMAT_VERSION}"),
            ));
        }
        if self.questions.is_empty() {
            return Err(input(
                "the aspect set has no questions",
                at,
                "add at least one question",
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, q) in self.questions.iter().enumerate() {
            let where_ = format!("{at}: questions[{i}] ({})", q.id);
            if q.id.trim().is_empty() {
                return Err(input(
                    "question id is empty",
                    where_,
                    "give every question a short id like q01",
                ));
            }
            if !ids.insert(q.id.as_str()) {
                return Err(input(
                    format!("duplicate question id {:?}", q.id),
                    where_,
                    "ids must be unique",
                ));
            }
            check_question(&q.text)
                .map_err(|why| input(why, where_, "write a yes/no question ending in '?'"))?;
        }
        Ok(())
    }

    /// Read and validate `aspects.json`; a stale hash (questions edited by hand) is an error.
    pub fn load(path: &Path) -> Result<Self> {
        let set: AspectSet = files::read_json(path, "see README: aspect set format")?;
        let at = path.display().to_string();
        set.validate(&at)?;
        let expect = set.compute_hash();
        if set.hash != expect {
            return Err(input(
                "the stored hash does not match the classes and questions",
                at,
                "the file was edited by hand: run `makd aspects import` on a questions file, or fix the hash",
            ));
        }
        Ok(set)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        files::write_json_atomic(path, self)
    }

    /// The questions' ids, in order.
    pub fn ids(&self) -> Vec<String> {
        self.questions.iter().map(|q| q.id.clone()).collect()
    }

    /// A new set with only the first `q` questions (aspect-count sweeps).
    pub fn truncated(&self, q: usize) -> Result<Self> {
        let mut prov = self.provenance.clone();
        prov.note = Some(format!("first {q} of {} questions", self.len()));
        AspectSet::new(
            self.classes.clone(),
            self.questions.iter().take(q).cloned().collect(),
            prov,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(id: &str, text: &str) -> Question {
        Question {
            id: id.into(),
            text: text.into(),
            kind: "visual".into(),
        }
    }

    #[test]
    fn hash_changes_with_text_not_kind() {
        let classes = vec!["a".to_string(), "b".to_string()];
        let a = AspectSet::new(
            classes.clone(),
            vec![q("q1", "Does the object have wheels?")],
            Provenance::default(),
        )
        .unwrap();
        let mut qs = vec![q("q1", "Does the object have wheels?")];
        qs[0].kind = "part".into();
        let b = AspectSet::new(classes.clone(), qs, Provenance::default()).unwrap();
        assert_eq!(a.hash, b.hash);
        let c = AspectSet::new(
            classes,
            vec![q("q1", "Does the object have wings?")],
            Provenance::default(),
        )
        .unwrap();
        assert_ne!(a.hash, c.hash);
        assert_eq!(a.hash.len(), 64);
    }

    #[test]
    fn rejects_bad_questions() {
        let classes = vec!["a".to_string()];
        for bad in ["Does it fly", "", "Is it?"] {
            let err = AspectSet::new(classes.clone(), vec![q("q1", bad)], Provenance::default())
                .unwrap_err();
            assert!(
                matches!(err, crate::Error::Input { .. }),
                "{bad:?} accepted"
            );
        }
        let dup = vec![
            q("q1", "Does the object have wheels?"),
            q("q1", "Does the object have wings?"),
        ];
        assert!(AspectSet::new(classes, dup, Provenance::default()).is_err());
    }

    #[test]
    fn save_load_roundtrip_and_tamper_detection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("aspects.json");
        let set = AspectSet::new(
            vec!["a".into()],
            vec![q("q1", "Does the object have wheels?")],
            Provenance::default(),
        )
        .unwrap();
        set.save(&path).unwrap();
        assert_eq!(AspectSet::load(&path).unwrap(), set);
        let text = std::fs::read_to_string(&path)
            .unwrap()
            .replace("wheels", "wings");
        std::fs::write(&path, text).unwrap();
        assert!(AspectSet::load(&path)
            .unwrap_err()
            .to_string()
            .contains("hash"));
    }
}
