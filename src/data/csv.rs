//! A CSV manifest: a header line naming the columns `path`, `label` and `split` (any order;
//! other columns are ignored), then one image per line.
//!
//! ```text
//! path,label,split
//! images/0001.png,cat,train
//! images/0002.png,dog,test
//! ```
//! Paths are relative to the CSV's directory (absolute paths are kept); the id of an image is its
//! path as written. Labels are class names; the classes are the sorted distinct names of all
//! rows, both splits together, so a label means the same class in training and evaluation.
//! `split` is `train`, `test` or `val` (= test). Fields may be double-quoted (`"a,b.png"`, with
//! `""` for a quote). Blank lines are skipped.

use super::imagefolder::decode_file;
use super::{out_of_range, Dataset, Sample, Split};
use crate::error::{self, IoContext, Result};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

const FORMAT_HINT: &str =
    "a manifest is a CSV with the header `path,label,split` and one image per line, \
e.g. `images/0001.png,cat,train` (split: train, test or val)";

/// One split of a CSV manifest; images are decoded on [`Dataset::get`].
pub struct CsvDataset {
    file: PathBuf,
    dir: PathBuf,
    split: Split,
    classes: Vec<String>,
    ids: Vec<String>,
    labels: Vec<usize>,
    lines: Vec<usize>,
}

/// Split one CSV line into fields, honouring double quotes.
fn fields(line: &str) -> std::result::Result<Vec<String>, String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = line.chars().peekable();
    let mut quoted = false;
    let mut at_start = true;
    while let Some(c) = chars.next() {
        if quoted {
            match c {
                '"' if chars.peek() == Some(&'"') => {
                    chars.next();
                    cur.push('"');
                }
                '"' => {
                    quoted = false;
                    // After a closing quote only the separator (or the end) may follow.
                    match chars.peek() {
                        None | Some(',') => {}
                        Some(other) => {
                            return Err(format!("unexpected {other:?} after a closing quote"))
                        }
                    }
                }
                _ => cur.push(c),
            }
        } else {
            match c {
                ',' => {
                    out.push(std::mem::take(&mut cur));
                    at_start = true;
                    continue;
                }
                '"' if at_start && cur.trim().is_empty() => {
                    cur.clear();
                    quoted = true;
                }
                _ => cur.push(c),
            }
        }
        at_start = false;
    }
    if quoted {
        return Err("unterminated quoted field".into());
    }
    out.push(cur);
    Ok(out)
}

struct Row {
    line: usize,
    path: String,
    label: String,
    split: Split,
}

impl CsvDataset {
    pub fn open(file: &Path, split: Split) -> Result<CsvDataset> {
        let text = std::fs::read_to_string(file).at(file)?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(&text);
        let name = file.display().to_string();
        let at = |line: usize| format!("{name}:{line}");

        let mut lines = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim_end_matches('\r')))
            .filter(|(_, l)| !l.trim().is_empty());
        let Some((header_line, header)) = lines.next() else {
            return Err(error::input("empty manifest", name, FORMAT_HINT));
        };
        let header: Vec<String> = fields(header)
            .map_err(|e| error::input(e, at(header_line), FORMAT_HINT))?
            .into_iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        let column = |n: &str| header.iter().position(|h| h == n);
        let (Some(path_col), Some(label_col)) = (column("path"), column("label")) else {
            return Err(error::input(
                format!("header {header:?} lacks a `path` or `label` column"),
                at(header_line),
                FORMAT_HINT,
            ));
        };
        let Some(split_col) = column("split") else {
            return Err(error::input(
                "no `split` column: without it the same images would serve for training and testing",
                at(header_line),
                "add a `split` column (train, test or val) so evaluation uses held-out images",
            ));
        };

        let mut rows = Vec::new();
        for (line, text) in lines {
            let f = fields(text).map_err(|e| error::input(e, at(line), FORMAT_HINT))?;
            if f.len() != header.len() {
                return Err(error::input(
                    format!("{} fields, the header has {}", f.len(), header.len()),
                    at(line),
                    "quote fields that contain commas: \"a,b.png\"",
                ));
            }
            let path = f[path_col].trim().to_string();
            let label = f[label_col].trim().to_string();
            if path.is_empty() || label.is_empty() {
                return Err(error::input("empty path or label", at(line), FORMAT_HINT));
            }
            let row_split = f[split_col].trim().parse::<Split>().map_err(|_| {
                error::input(
                    format!("unknown split {:?}", f[split_col].trim()),
                    at(line),
                    "split is train, test or val",
                )
            })?;
            rows.push(Row {
                line,
                path,
                label,
                split: row_split,
            });
        }

        let classes: Vec<String> = rows
            .iter()
            .map(|r| r.label.clone())
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        let mut first_line: HashMap<&str, usize> = HashMap::new();
        let (mut ids, mut labels, mut line_of) = (Vec::new(), Vec::new(), Vec::new());
        for r in rows.iter().filter(|r| r.split == split) {
            if let Some(prev) = first_line.insert(&r.path, r.line) {
                return Err(error::input(
                    format!(
                        "{} is listed twice in the {split} split (also on line {prev})",
                        r.path
                    ),
                    at(r.line),
                    "list every image once per split",
                ));
            }
            ids.push(r.path.clone());
            labels.push(
                classes
                    .binary_search(&r.label)
                    .expect("classes hold every label"),
            );
            line_of.push(r.line);
        }
        if ids.is_empty() {
            return Err(error::input(
                format!("no rows for the {split} split"),
                name,
                "give some rows split=train and some split=test (or val)",
            ));
        }
        let dir = file
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."))
            .to_path_buf();
        Ok(CsvDataset {
            file: file.to_path_buf(),
            dir,
            split,
            classes,
            ids,
            labels,
            lines: line_of,
        })
    }
}

impl Dataset for CsvDataset {
    fn len(&self) -> usize {
        self.ids.len()
    }
    fn classes(&self) -> &[String] {
        &self.classes
    }
    fn id(&self, i: usize) -> &str {
        &self.ids[i]
    }
    fn label(&self, i: usize) -> usize {
        self.labels[i]
    }
    fn get(&self, i: usize) -> Result<Sample> {
        let Some(id) = self.ids.get(i) else {
            return Err(out_of_range(i, self.len(), &self.describe()));
        };
        let path = self.dir.join(id);
        if !path.is_file() {
            return Err(error::input(
                format!("image {} not found", path.display()),
                format!("{}:{}", self.file.display(), self.lines[i]),
                "paths in a manifest are relative to the CSV file's directory",
            ));
        }
        Ok(Sample {
            id: id.clone(),
            image: decode_file(&path)?,
            label: self.labels[i],
        })
    }
    fn describe(&self) -> String {
        format!(
            "csv {} {} split ({} images, {} classes)",
            self.file.display(),
            self.split,
            self.len(),
            self.classes.len()
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;

    fn corpus(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/corpus/data/csv")
            .join(name)
    }

    fn input_msg(e: Error) -> String {
        match e {
            Error::Input { .. } => e.report(),
            other => panic!("expected Error::Input, got {other:?}"),
        }
    }

    fn manifest(text: &str) -> (tempfile::TempDir, PathBuf) {
        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("img")).unwrap();
        for (name, v) in [("a.png", 10u8), ("b.png", 20), ("c,d.png", 30)] {
            image::GrayImage::from_pixel(2, 2, image::Luma([v]))
                .save(t.path().join("img").join(name))
                .unwrap();
        }
        let p = t.path().join("m.csv");
        std::fs::write(&p, text).unwrap();
        (t, p)
    }

    #[test]
    fn reads_rows_of_a_split_with_shared_classes() {
        let (_t, p) = manifest(
            "\u{feff}label,path,split,note\r\n\
             zebra,img/a.png,train,x\r\n\
             \r\n\
             ant,\"img/c,d.png\",TRAIN,\"say \"\"hi\"\"\"\r\n\
             mole,img/b.png,val,\r\n",
        );
        let train = CsvDataset::open(&p, Split::Train).unwrap();
        assert_eq!(train.classes(), ["ant", "mole", "zebra"]);
        assert_eq!(train.len(), 2);
        assert_eq!((train.id(0), train.label(0)), ("img/a.png", 2));
        assert_eq!((train.id(1), train.label(1)), ("img/c,d.png", 0));
        assert_eq!(train.get(1).unwrap().image.pixels, vec![30; 4]);
        let test = CsvDataset::open(&p, Split::Test).unwrap();
        assert_eq!(test.classes(), train.classes());
        assert_eq!((test.id(0), test.label(0)), ("img/b.png", 1));
        assert_eq!(test.get(0).unwrap().image.pixels, vec![20; 4]);
    }

    #[test]
    fn missing_image_names_manifest_line() {
        let (_t, p) = manifest("path,label,split\nimg/a.png,x,train\nimg/nope.png,y,train\n");
        let ds = CsvDataset::open(&p, Split::Train).unwrap();
        let msg = input_msg(ds.get(1).err().unwrap());
        assert!(
            msg.starts_with(&format!("{}:3: image ", p.display())),
            "{msg}"
        );
        assert!(msg.contains("nope.png not found"), "{msg}");
    }

    #[test]
    fn bad_manifests_name_file_and_line() {
        let cases = [
            ("no-split-column.csv", Split::Train, ":1: no `split` column"),
            ("no-path-column.csv", Split::Train, ":1: header"),
            (
                "wrong-field-count.csv",
                Split::Train,
                ":3: 2 fields, the header has 3",
            ),
            (
                "bad-split.csv",
                Split::Train,
                ":4: unknown split \"validation\"",
            ),
            (
                "unterminated-quote.csv",
                Split::Train,
                ":2: unterminated quoted field",
            ),
            ("empty-label.csv", Split::Test, ":3: empty path or label"),
            (
                "duplicate.csv",
                Split::Train,
                ":4: a.png is listed twice in the train split (also on line 2)",
            ),
            (
                "only-train.csv",
                Split::Test,
                ": no rows for the test split",
            ),
            ("empty.csv", Split::Train, ": empty manifest"),
        ];
        for (file, split, want) in cases {
            let p = corpus(file);
            let msg = input_msg(
                CsvDataset::open(&p, split)
                    .err()
                    .unwrap_or_else(|| panic!("{file} opened")),
            );
            let want = format!("{}{want}", p.display());
            assert!(msg.starts_with(&want), "{file}: {msg}\nwanted: {want}");
            assert!(msg.contains("\nhint: "), "{msg}");
        }
    }

    #[test]
    fn field_splitting() {
        assert_eq!(fields("a,,b").unwrap(), ["a", "", "b"]);
        assert_eq!(fields("\"x,y\",z").unwrap(), ["x,y", "z"]);
        assert_eq!(fields("\"\"\"q\"\"\"").unwrap(), ["\"q\""]);
        assert!(fields("\"a\"b,c").is_err());
    }
}
