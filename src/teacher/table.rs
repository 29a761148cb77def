//! The `table` teacher: P(yes) read from an annotation file instead of asked of a model.
//!
//! It lets MaKD train before any LLM is available (hand-made or imported annotations, e.g. CUB's
//! attribute labels) and makes every later stage testable without a server.
//!
//! Formats (the first column names the table's kind):
//! - CSV with header `class,<question id>,...`: one row per class name; a class's values are
//!   broadcast to every image of that class. Every class of the aspect set needs a row.
//! - CSV with header `image_id,<question id>,...`: one row per image id.
//! - JSON `{"classes": {"<class>": {"<question id>": 0.9, ...}, ...}}` or
//!   `{"images": {"<image id>": {...}, ...}}`.
//!
//! Every question of the aspect set needs a column (key). Values are probabilities in [0, 1]; an
//! empty CSV cell or a JSON `null` means the answer is unknown and the pair is stored as missing.
//!
//! A value `v` becomes `Score { p_yes: v, logit_yes: ln v, logit_no: ln(1 − v), status: ok }`:
//! the "logits" are log-probabilities, so `sigmoid(logit_yes − logit_no) = v` as for a model
//! teacher (they are −∞ at v = 0 or 1, which only the log, never training, sees).

use crate::aspects::{AspectSet, Question};
use crate::error::{input, IoContext, Result};
use crate::files;
use crate::teacher::{Score, Status, Subject, Teacher, TeacherInfo};
use std::collections::HashMap;
use std::path::Path;

/// What a table's rows are keyed by.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TableKind {
    Class,
    Image,
}

/// Answers from an annotation file.
#[derive(Debug)]
pub struct TableTeacher {
    kind: TableKind,
    file_name: String,
    sha256: String,
    classes: Vec<String>,
    /// Question id → column.
    columns: HashMap<String, usize>,
    /// Row key (class name or image id) → row.
    rows: HashMap<String, usize>,
    /// `rows × columns`, NaN where the value is unknown.
    values: Vec<f32>,
}

impl TableTeacher {
    /// Read a CSV (`.csv`) or JSON (`.json`, or anything starting with `{`) table and check it
    /// against the aspect set.
    pub fn load(path: &Path, aspects: &AspectSet) -> Result<Self> {
        let bytes = std::fs::read(path).at(path)?;
        let text = String::from_utf8(bytes.clone()).map_err(|e| {
            input(
                format!("not UTF-8 text: {e}"),
                path.display().to_string(),
                "save the table as UTF-8 CSV or JSON",
            )
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let is_json = path.extension().is_some_and(|e| e == "json")
            || (path.extension().is_none_or(|e| e != "csv") && text.trim_start().starts_with('{'));
        let mut t = TableTeacher {
            kind: TableKind::Class,
            file_name: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            sha256: files::sha256_hex(&bytes),
            classes: aspects.classes.clone(),
            columns: aspects
                .questions
                .iter()
                .enumerate()
                .map(|(i, q)| (q.id.clone(), i))
                .collect(),
            rows: HashMap::new(),
            values: Vec::new(),
        };
        if is_json {
            t.parse_json(path)?;
        } else {
            t.parse_csv(text, path, aspects)?;
        }
        if t.kind == TableKind::Class {
            if let Some(c) = aspects.classes.iter().find(|c| !t.rows.contains_key(*c)) {
                return Err(input(
                    format!("class {c:?} has no row"),
                    path.display().to_string(),
                    "a per-class table needs one row for every class of the aspect set (empty cells for unknown values)",
                ));
            }
        }
        Ok(t)
    }

    pub fn kind(&self) -> TableKind {
        self.kind
    }

    fn add_row(&mut self, key: String, at: String) -> Result<usize> {
        if self.kind == TableKind::Class && !self.classes.contains(&key) {
            return Err(input(
                format!("unknown class {key:?}"),
                at,
                format!(
                    "class names must be those of the aspect set: {}",
                    self.classes.join(", ")
                ),
            ));
        }
        let row = self.rows.len();
        if self.rows.insert(key.clone(), row).is_some() {
            return Err(input(
                format!("{key:?} has two rows"),
                at,
                "give each class or image one row",
            ));
        }
        self.values
            .extend(std::iter::repeat_n(f32::NAN, self.columns.len()));
        Ok(row)
    }

    fn parse_csv(&mut self, text: &str, path: &Path, aspects: &AspectSet) -> Result<()> {
        let file = path.display().to_string();
        let mut lines = text
            .lines()
            .enumerate()
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((hl, header)) = lines.next() else {
            return Err(input(
                "the table is empty",
                file,
                "the first line is `class,<question id>,...` or `image_id,<question id>,...`",
            ));
        };
        let at_line = |l: usize| format!("{file}:{}", l + 1);
        let header = split_csv(header).map_err(|e| input(e, at_line(hl), "fix the CSV quoting"))?;
        self.kind = match header[0].trim() {
            "class" => TableKind::Class,
            "image_id" => TableKind::Image,
            other => {
                return Err(input(
                    format!("first column is {other:?}"),
                    format!("{}, column 1", at_line(hl)),
                    "name the first column `class` (one row per class) or `image_id` (one row per image)",
                ))
            }
        };
        // CSV column k (1-based k+1) → aspect question index.
        let mut col_of = Vec::with_capacity(header.len() - 1);
        for (k, name) in header.iter().enumerate().skip(1) {
            let name = name.trim();
            let at = format!("{}, column {} ({name:?})", at_line(hl), k + 1);
            let Some(&q) = self.columns.get(name) else {
                return Err(input(
                    format!("unknown question id {name:?}"),
                    at,
                    "columns are the question ids of the aspect set (q01, ...)",
                ));
            };
            if col_of.contains(&q) {
                return Err(input(
                    format!("question {name:?} has two columns"),
                    at,
                    "give each question one column",
                ));
            }
            col_of.push(q);
        }
        if let Some(q) = aspects
            .questions
            .iter()
            .find(|q| !col_of.contains(&self.columns[&q.id]))
        {
            return Err(input(
                format!("no column for question {:?}", q.id),
                at_line(hl),
                "add a column for every question of the aspect set (leave cells empty where unknown)",
            ));
        }
        let width = self.columns.len();
        for (l, line) in lines {
            let cells = split_csv(line).map_err(|e| input(e, at_line(l), "fix the CSV quoting"))?;
            if cells.len() != header.len() {
                return Err(input(
                    format!("{} cells, the header has {}", cells.len(), header.len()),
                    at_line(l),
                    "every row needs one cell per column (an empty cell for an unknown value)",
                ));
            }
            let row = self.add_row(
                cells[0].trim().to_string(),
                format!("{}, column 1", at_line(l)),
            )?;
            for (k, cell) in cells.iter().enumerate().skip(1) {
                let q = col_of[k - 1];
                let at = || {
                    format!(
                        "{}, column {} ({})",
                        at_line(l),
                        k + 1,
                        aspects.questions[q].id
                    )
                };
                let cell = cell.trim();
                if cell.is_empty() {
                    continue;
                }
                let v = cell.parse::<f32>().map_err(|_| {
                    input(
                        format!("{cell:?} is not a number"),
                        at(),
                        "values are probabilities in [0, 1], or empty for unknown",
                    )
                })?;
                self.values[row * width + q] = check_value(v as f64, at)?;
            }
        }
        Ok(())
    }

    fn parse_json(&mut self, path: &Path) -> Result<()> {
        let file = path.display().to_string();
        let hint_shape = "the file is {\"classes\": {\"<class>\": {\"<question id>\": 0.9, ...}}} or {\"images\": {\"<image id>\": {...}}}";
        let v: serde_json::Value = files::read_json(path, hint_shape)?;
        let top = v.as_object().filter(|o| o.len() == 1);
        let (key, body) = match top.and_then(|o| o.iter().next()) {
            Some((k, b)) if k == "classes" || k == "images" => (k.clone(), b),
            _ => {
                return Err(input(
                    "expected one key, `classes` or `images`",
                    file,
                    hint_shape,
                ))
            }
        };
        self.kind = if key == "classes" {
            TableKind::Class
        } else {
            TableKind::Image
        };
        let Some(rows) = body.as_object() else {
            return Err(input(format!("`{key}` is not an object"), file, hint_shape));
        };
        let width = self.columns.len();
        for (name, row_v) in rows {
            let at_row = format!("{file}: {key}.{name:?}");
            let row = self.add_row(name.clone(), at_row.clone())?;
            let Some(cells) = row_v.as_object() else {
                return Err(input("not an object", at_row, hint_shape));
            };
            for (qid, cell) in cells {
                let at = || format!("{at_row}.{qid:?}");
                let Some(&q) = self.columns.get(qid) else {
                    return Err(input(
                        format!("unknown question id {qid:?}"),
                        at(),
                        "keys are the question ids of the aspect set (q01, ...)",
                    ));
                };
                let value = match cell {
                    serde_json::Value::Null => f32::NAN,
                    serde_json::Value::Number(n) => {
                        check_value(n.as_f64().unwrap_or(f64::NAN), at)?
                    }
                    other => {
                        return Err(input(
                            format!("{other} is not a number"),
                            at(),
                            "values are probabilities in [0, 1], or null for unknown",
                        ))
                    }
                };
                self.values[row * width + q] = value;
            }
            let mut ids: Vec<(&String, &usize)> = self.columns.iter().collect();
            ids.sort_by_key(|(_, &q)| q);
            if let Some((qid, _)) = ids.iter().find(|(id, _)| !cells.contains_key(id.as_str())) {
                return Err(input(
                    format!("no value for question {qid:?}"),
                    at_row,
                    "give every question a value (null where unknown)",
                ));
            }
        }
        Ok(())
    }

    fn row_for(&self, subject: Subject<'_>) -> Result<usize> {
        let (key, what) = match (self.kind, subject) {
            (TableKind::Class, Subject::Class(name)) => (name, "class"),
            (TableKind::Class, Subject::Image(s)) => match self.classes.get(s.label) {
                Some(c) => (c.as_str(), "class"),
                None => {
                    return Err(input(
                        format!(
                            "image {:?} has label {} but the aspect set has {} classes",
                            s.id,
                            s.label,
                            self.classes.len()
                        ),
                        self.file_name.clone(),
                        "the dataset and the aspect set disagree on the classes",
                    ))
                }
            },
            (TableKind::Image, Subject::Image(s)) => (s.id.as_str(), "image id"),
            (TableKind::Image, Subject::Class(_)) => {
                return Err(input(
                    "a per-image table cannot answer questions about a class",
                    self.file_name.clone(),
                    "use --mode image with an image_id table, or a class table",
                ))
            }
        };
        self.rows.get(key).copied().ok_or_else(|| {
            input(
                format!("{what} {key:?} has no row"),
                self.file_name.clone(),
                "add a row for it (empty cells where unknown)",
            )
        })
    }
}

fn check_value(v: f64, at: impl Fn() -> String) -> Result<f32> {
    if !(0.0..=1.0).contains(&v) {
        return Err(input(
            format!("value {v} is not a probability"),
            at(),
            "values are P(yes) in [0, 1]; leave the cell empty (CSV) or null (JSON) when unknown",
        ));
    }
    Ok(v as f32)
}

/// One CSV line into cells: commas separate, double quotes quote (`""` is a quote inside).
fn split_csv(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut cells = Vec::new();
    let mut cell = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match (quoted, c) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (false, '"') if cell.trim().is_empty() => {
                cell.clear();
                quoted = true;
            }
            (false, ',') => cells.push(std::mem::take(&mut cell)),
            _ => cell.push(c),
        }
    }
    if quoted {
        return Err("unterminated quote".into());
    }
    cells.push(cell);
    Ok(cells)
}

impl Teacher for TableTeacher {
    fn info(&self) -> TeacherInfo {
        let mut extra = serde_json::Map::new();
        extra.insert(
            "table".into(),
            match self.kind {
                TableKind::Class => "class",
                TableKind::Image => "image",
            }
            .into(),
        );
        // The content hash, not the path, identifies the table: a moved file still resumes,
        // an edited one does not silently mix with old answers.
        extra.insert("sha256".into(), self.sha256.clone().into());
        TeacherInfo {
            backend: "table".into(),
            model: self.file_name.clone(),
            extra,
            ..TeacherInfo::default()
        }
    }

    fn score(&self, subject: Subject<'_>, questions: &[Question]) -> Result<Vec<Score>> {
        let row = self.row_for(subject)?;
        let width = self.columns.len();
        questions
            .iter()
            .map(|q| {
                let Some(&col) = self.columns.get(&q.id) else {
                    return Err(input(
                        format!("question {:?} is not in the table", q.id),
                        self.file_name.clone(),
                        "label with the aspects.json the table was made for",
                    ));
                };
                let v = self.values[row * width + col];
                Ok(if v.is_nan() {
                    Score::missing()
                } else {
                    Score {
                        p_yes: v,
                        logit_yes: v.ln(),
                        logit_no: (1.0 - v).ln(),
                        status: Status::Ok,
                    }
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aspects::Provenance;
    use crate::data::{RawImage, Sample};
    use std::path::PathBuf;

    fn aspects() -> AspectSet {
        let q = |id: &str, text: &str| Question {
            id: id.into(),
            text: text.into(),
            kind: "part".into(),
        };
        AspectSet::new(
            vec!["shirt".into(), "Ankle boot".into()],
            vec![
                q("q1", "Does the object have sleeves?"),
                q("q2", "Is the object worn on the feet?"),
                q("q3", "Does the object have laces?"),
            ],
            Provenance::default(),
        )
        .unwrap()
    }

    fn corpus(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus/table")
            .join(name)
    }

    fn sample(id: &str, label: usize) -> Sample {
        Sample {
            id: id.into(),
            image: RawImage {
                width: 1,
                height: 1,
                channels: 1,
                pixels: vec![0],
            },
            label,
        }
    }

    fn p_yes(scores: &[Score]) -> Vec<Option<f32>> {
        scores
            .iter()
            .map(|s| (s.status == Status::Ok).then_some(s.p_yes))
            .collect()
    }

    #[test]
    fn class_tables_in_csv_and_json_agree() {
        let a = aspects();
        for file in ["good_class.csv", "good_class.json"] {
            let t = TableTeacher::load(&corpus(file), &a).unwrap();
            assert_eq!(t.kind(), TableKind::Class);
            let shirt = t.score(Subject::Class("shirt"), &a.questions).unwrap();
            assert_eq!(p_yes(&shirt), vec![Some(0.25), Some(1.0), None], "{file}");
            assert_eq!(shirt[2].status, Status::Missing);
            // An image is answered with its class's row; questions in any order.
            let qs = vec![a.questions[2].clone(), a.questions[0].clone()];
            let boot = t.score(Subject::Image(&sample("x", 1)), &qs).unwrap();
            assert_eq!(p_yes(&boot), vec![Some(0.5), Some(0.75)], "{file}");
            // logits are log-probabilities: ln 0.75 and ln 0.25.
            assert!((boot[1].logit_yes - (-0.287_682)).abs() < 1e-5);
            assert!((boot[1].logit_no - (-1.386_294)).abs() < 1e-5);
            let info = t.info();
            assert_eq!(info.backend, "table");
            assert_eq!(info.model, file);
            assert_eq!(info.extra["table"], "class");
            assert_eq!(info.extra["sha256"].as_str().unwrap().len(), 64);
            assert!(t.score(Subject::Image(&sample("x", 2)), &qs).is_err());
        }
    }

    #[test]
    fn image_tables_in_csv_and_json() {
        let a = aspects();
        let t = TableTeacher::load(&corpus("good_image.csv"), &a).unwrap();
        assert_eq!(t.kind(), TableKind::Image);
        let s = t
            .score(Subject::Image(&sample("train/2,odd", 0)), &a.questions)
            .unwrap();
        assert_eq!(p_yes(&s), vec![Some(1.0), None, Some(0.0)]);
        assert_eq!(s[0].logit_no, f32::NEG_INFINITY);
        let e = t
            .score(Subject::Image(&sample("train/3", 0)), &a.questions)
            .unwrap_err();
        assert!(e.to_string().contains("\"train/3\" has no row"), "{e}");
        assert!(t.score(Subject::Class("shirt"), &a.questions).is_err());
        let t = TableTeacher::load(&corpus("good_image.json"), &a).unwrap();
        let s = t
            .score(Subject::Image(&sample("train/1", 1)), &a.questions)
            .unwrap();
        assert_eq!(p_yes(&s), vec![Some(0.1), Some(0.2), Some(0.3)]);
    }

    #[test]
    fn bad_tables_name_file_line_and_column() {
        let a = aspects();
        let cases = [
            (
                "bad_range.csv",
                "bad_range.csv:3, column 3 (q2)",
                "1.5 is not a probability",
            ),
            (
                "bad_nan.csv",
                "bad_nan.csv:2, column 4 (q3)",
                "NaN is not a probability",
            ),
            (
                "bad_class.csv",
                "bad_class.csv:3, column 1",
                "unknown class \"hat\"",
            ),
            (
                "bad_qid.csv",
                "bad_qid.csv:1, column 3",
                "unknown question id \"q9\"",
            ),
            (
                "bad_missing_col.csv",
                "bad_missing_col.csv:1",
                "no column for question \"q3\"",
            ),
            (
                "bad_first.csv",
                "bad_first.csv:1, column 1",
                "first column is \"name\"",
            ),
            (
                "bad_cells.csv",
                "bad_cells.csv:2",
                "3 cells, the header has 4",
            ),
            (
                "bad_norow.csv",
                "bad_norow.csv",
                "class \"Ankle boot\" has no row",
            ),
            (
                "bad_text.csv",
                "bad_text.csv:2, column 2 (q1)",
                "\"yes\" is not a number",
            ),
            (
                "bad_duprow.csv",
                "bad_duprow.csv:3, column 1",
                "\"shirt\" has two rows",
            ),
            (
                "bad_range.json",
                "classes.\"shirt\".\"q2\"",
                "-0.5 is not a probability",
            ),
            (
                "bad_qid.json",
                "classes.\"shirt\".\"q4\"",
                "unknown question id",
            ),
            (
                "bad_missing_key.json",
                "images.\"train/1\"",
                "no value for question \"q2\"",
            ),
            ("bad_top.json", "bad_top.json", "`classes` or `images`"),
            ("bad_syntax.json", "bad_syntax.json:2:1", "invalid JSON"),
        ];
        for (file, at, what) in cases {
            let err = TableTeacher::load(&corpus(file), &a).unwrap_err();
            let text = err.to_string();
            assert!(matches!(err, crate::Error::Input { .. }), "{file}: {text}");
            assert!(text.contains(at), "{file}: want {at:?} in {text}");
            assert!(text.contains(what), "{file}: want {what:?} in {text}");
            assert!(err.hint().is_some_and(|h| !h.is_empty()), "{file}: {text}");
        }
    }

    #[test]
    fn fashion_mnist_example_aspects_and_table() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("examples/fashion-mnist");
        let a = AspectSet::load(&dir.join("aspects.json")).unwrap();
        assert_eq!(a.len(), 50);
        assert_eq!(a.classes.len(), 10);
        assert_eq!(a.classes[0], "T-shirt/top");
        assert_eq!(a.classes[9], "Ankle boot");
        assert_eq!(a.questions[49].id, "q50");
        // The file is exactly what AspectSet::new + save writes.
        let rebuilt =
            AspectSet::new(a.classes.clone(), a.questions.clone(), a.provenance.clone()).unwrap();
        assert_eq!(rebuilt, a);
        let mut bytes = serde_json::to_vec_pretty(&rebuilt).unwrap();
        bytes.push(b'\n');
        assert_eq!(bytes, std::fs::read(dir.join("aspects.json")).unwrap());

        let t = TableTeacher::load(&dir.join("aspect_table.csv"), &a).unwrap();
        let rows: Vec<Vec<f32>> = a
            .classes
            .iter()
            .map(|c| {
                t.score(Subject::Class(c), &a.questions)
                    .unwrap()
                    .iter()
                    .map(|s| {
                        assert_eq!(s.status, Status::Ok, "{c}: every cell is filled");
                        s.p_yes
                    })
                    .collect()
            })
            .collect();
        // Spot checks: q01 sleeves, q02 worn on the feet, q35 carries belongings.
        assert_eq!(rows[0][0], 0.85);
        assert_eq!(rows[1][0], 0.0);
        assert_eq!(rows[5][1], 1.0);
        assert_eq!(rows[8][34], 1.0);
        // Every pair of classes differs clearly somewhere (L1 distance over the 50 answers).
        for i in 0..10 {
            for j in i + 1..10 {
                let d: f32 = rows[i]
                    .iter()
                    .zip(&rows[j])
                    .map(|(x, y)| (x - y).abs())
                    .sum();
                assert!(d > 2.0, "{} vs {}: {d}", a.classes[i], a.classes[j]);
            }
        }
    }

    #[test]
    fn csv_cells_split_with_quotes() {
        assert_eq!(
            split_csv("a,\"b,c\",\"d\"\"e\",").unwrap(),
            vec!["a", "b,c", "d\"e", ""]
        );
        assert!(split_csv("a,\"b").is_err());
    }
}
