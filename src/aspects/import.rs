//! Hand-made aspect sets: class names and questions from text files (`makd aspects import`).

use super::set::{check_question, guess_kind, Question, KINDS};
use crate::error::{input, Result};
use std::path::Path;

/// Class names from a file (one per line) or a comma-separated list.
pub fn read_classes(spec: &str) -> Result<Vec<String>> {
    let path = Path::new(spec);
    let classes: Vec<String> = if path.is_file() {
        std::fs::read_to_string(path)
            .map_err(|e| crate::error::io(path, e))?
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(str::to_string)
            .collect()
    } else if spec.contains(',') {
        spec.split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    } else {
        return Err(input(
            format!("{spec:?} is neither a file nor a comma-separated list"),
            "--classes",
            "give a file with one class per line, or a list like 'cat,dog,bird'",
        ));
    };
    if classes.is_empty() {
        return Err(input(
            "no class names",
            "--classes",
            "list at least one class",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    for c in &classes {
        if !seen.insert(c) {
            return Err(input(
                format!("class {c:?} is listed twice"),
                format!("--classes {spec}"),
                "class names must be unique",
            ));
        }
    }
    Ok(classes)
}

/// Questions from a hand-written text file; errors name the line.
pub fn read_questions(path: &Path) -> Result<Vec<Question>> {
    let text = std::fs::read_to_string(path).map_err(|e| crate::error::io(path, e))?;
    let mut texts: Vec<(String, String)> = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let at = format!("{}:{}", path.display(), i + 1);
        let mut t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        t = t.trim_start_matches(['-', '*', '•']).trim_start();
        let d = t.chars().take_while(|c| c.is_ascii_digit()).count();
        if d > 0 && t[d..].starts_with(['.', ')']) {
            t = t[d + 1..].trim_start();
        }
        let mut kind = String::new();
        if let Some(rest) = t.strip_prefix('[') {
            let close = rest.find(']').ok_or_else(|| {
                input(
                    "`[` without `]`",
                    &at,
                    "write `[kind] question?` or just the question",
                )
            })?;
            let k = rest[..close].trim().to_lowercase();
            if !KINDS.contains(&k.as_str()) {
                return Err(input(
                    format!("unknown kind {k:?}"),
                    &at,
                    format!("kinds: {}", KINDS.join(", ")),
                ));
            }
            kind = k;
            t = rest[close + 1..].trim();
        }
        check_question(t)
            .map_err(|why| input(why, &at, "write one yes/no question ending in '?' per line"))?;
        if let Some(j) = texts.iter().position(|(q, _)| q.eq_ignore_ascii_case(t)) {
            return Err(input(
                format!("duplicate of question {} ", j + 1),
                &at,
                "remove the repeated line",
            ));
        }
        if kind.is_empty() {
            kind = guess_kind(t).to_string();
        }
        texts.push((t.to_string(), kind));
    }
    if texts.is_empty() {
        return Err(input(
            "no questions found",
            path.display().to_string(),
            "write one yes/no question per line",
        ));
    }
    let width = texts.len().to_string().len().max(2);
    Ok(texts
        .into_iter()
        .enumerate()
        .map(|(i, (text, kind))| Question {
            id: format!("q{:0width$}", i + 1),
            text,
            kind,
        })
        .collect())
}
