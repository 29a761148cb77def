//! Aspect generation in the paper's two steps, over any OpenAI-compatible chat endpoint.
//!
//! Step 1 asks for N yes/no questions about the classes; step 2 asks the model to select the Q
//! most relevant and distinct ones. Both prompts keep the paper's wording and add a request for a
//! JSON answer. Models do not always comply, so [`parse_questions`] reads JSON (bare, fenced, or
//! inside prose) and falls back to one question per line (numbered, bulleted, labelled); every
//! candidate must be a yes/no question ([`is_yes_no_question`]) and is dropped if it duplicates
//! or nearly duplicates one already kept. A step that yields too little is asked again, up to a
//! bounded number of rounds, and then fails with a clear error instead of writing a short set.

use super::set::{check_question, guess_kind, AspectSet, Provenance, Question, KINDS};
use crate::error::{Error, Result};
use crate::llm::client::Client;
use crate::llm::logprobs;
use serde_json::{json, Value};
use std::collections::HashSet;

/// What to generate.
#[derive(Clone, Debug)]
pub struct GenerateOptions {
    pub classes: Vec<String>,
    /// Number of images in the dataset, when known (the paper's prompt states it).
    pub n_images: Option<usize>,
    /// Questions to generate in step 1.
    pub n: usize,
    /// Questions to select in step 2.
    pub q: usize,
    /// Model name as the server knows it (empty: the server's default).
    pub model: String,
    /// Requests per step before giving up.
    pub max_rounds: u32,
    pub temperature: f32,
    pub max_tokens: u32,
}

impl Default for GenerateOptions {
    fn default() -> Self {
        GenerateOptions {
            classes: Vec::new(),
            n_images: None,
            n: 150,
            q: 50,
            model: String::new(),
            max_rounds: 4,
            temperature: 0.7,
            max_tokens: 8192,
        }
    }
}

/// A parsed question and the kind the model gave (or empty).
#[derive(Clone, Debug, PartialEq)]
pub struct Candidate {
    pub text: String,
    pub kind: String,
}

const JSON_ASK: &str = "Answer with only a JSON array of objects {\"question\": \"...\", \"kind\": \"...\"} where kind is one of visual, shape, part, material, environment, function, abstract.";

/// The paper's step-1 prompt.
pub fn step1_prompt(classes: &[String], n_images: Option<usize>, n: usize) -> String {
    let size = match n_images {
        Some(m) => format!("{} classes and {m} images", classes.len()),
        None => format!("{} classes", classes.len()),
    };
    format!(
        "The dataset consists of {size}. The class list is as follows: [{}]. Generate {n} feature-specific yes or no questions, focusing on clear and distinct aspects of the objects in the images in the dataset. {JSON_ASK}",
        classes.join(", ")
    )
}

/// The paper's step-2 prompt over a numbered list.
pub fn step2_prompt(classes: &[String], pool: &[Candidate], q: usize) -> String {
    let list: String = pool
        .iter()
        .enumerate()
        .map(|(i, c)| format!("{}. {}\n", i + 1, c.text))
        .collect();
    format!(
        "The class list of the dataset is as follows: [{}]. Here is a list of yes or no questions:\n{list}Select {q} of the most relevant and distinct questions from the list, focusing on various key features that distinguish different classes in the dataset. Answer with only a JSON array of the selected question numbers.",
        classes.join(", ")
    )
}

const AUX: [&str; 17] = [
    "is", "are", "does", "do", "can", "has", "have", "was", "were", "will", "would", "could",
    "should", "may", "might", "did", "am",
];

/// A yes/no question: passes [`check_question`] and opens with an auxiliary verb ("Is", "Does",
/// "Can", …), which rules out open questions ("What colour…?").
pub fn is_yes_no_question(text: &str) -> std::result::Result<(), String> {
    check_question(text)?;
    let first = text.split_whitespace().next().unwrap_or("").to_lowercase();
    if !AUX.contains(&first.as_str()) {
        return Err(format!(
            "not a yes/no question (starts with {first:?}, not Is/Does/Can/Has…)"
        ));
    }
    Ok(())
}

fn known_kind(s: &str) -> Option<&'static str> {
    let l = s.trim().to_lowercase();
    KINDS.iter().copied().find(|k| *k == l)
}

fn candidate_from_json(v: &Value) -> Option<Candidate> {
    match v {
        Value::String(s) => Some(Candidate {
            text: s.trim().to_string(),
            kind: String::new(),
        }),
        Value::Object(o) => {
            let text = ["question", "text", "q"]
                .iter()
                .find_map(|k| o.get(*k).and_then(Value::as_str))?;
            let kind = ["kind", "type", "category", "aspect"]
                .iter()
                .find_map(|k| o.get(*k).and_then(Value::as_str))
                .and_then(known_kind)
                .unwrap_or("");
            Some(Candidate {
                text: text.trim().to_string(),
                kind: kind.into(),
            })
        }
        _ => None,
    }
}

/// The JSON array in a reply: bare, inside a ``` fence, inside prose, or under an object key.
fn json_array(text: &str) -> Option<Vec<Value>> {
    let (start, end) = (text.find('[')?, text.rfind(']')?);
    if end > start {
        if let Ok(Value::Array(a)) = serde_json::from_str(&text[start..=end]) {
            return Some(a);
        }
    }
    let (start, end) = (text.find('{')?, text.rfind('}')?);
    if end > start {
        if let Ok(Value::Object(o)) = serde_json::from_str(&text[start..=end]) {
            return o.into_iter().find_map(|(_, v)| match v {
                Value::Array(a) => Some(a),
                _ => None,
            });
        }
    }
    None
}

/// Strip list markers: `1.`, `1)`, `(1)`, `Q1:`, `-`, `*`, `•`, markdown bold, quotes.
fn strip_marker(line: &str) -> &str {
    let mut t = line.trim();
    loop {
        let before = t;
        t = t
            .trim_start_matches(['-', '*', '•', '·', '>', '#'])
            .trim_start();
        let digits_start = t
            .strip_prefix(['Q', 'q'])
            .filter(|r| r.starts_with(|c: char| c.is_ascii_digit()))
            .unwrap_or(t);
        let d = digits_start
            .char_indices()
            .take_while(|(_, c)| c.is_ascii_digit())
            .count();
        if d > 0 {
            let rest = &digits_start[d..];
            if let Some(r) = rest.strip_prefix(['.', ')', ':']) {
                t = r.trim_start();
            }
        }
        if let Some(r) = t.strip_prefix('(') {
            let d = r.chars().take_while(|c| c.is_ascii_digit()).count();
            if d > 0 && r[d..].starts_with(')') {
                t = r[d + 1..].trim_start();
            }
        }
        t = t.trim_matches(|c| c == '"' || c == '\'' || c == '`').trim();
        if t == before {
            return t;
        }
    }
}

/// Questions in a model's reply, whatever its shape. Validation happens later.
pub fn parse_questions(text: &str) -> Vec<Candidate> {
    if let Some(items) = json_array(text) {
        let got: Vec<Candidate> = items.iter().filter_map(candidate_from_json).collect();
        if !got.is_empty() {
            return got;
        }
    }
    let mut out = Vec::new();
    for line in text.lines() {
        let mut t = strip_marker(line).replace("**", "");
        let mut kind = String::new();
        // "Visual: Is it red?" or "[shape] Is it round?"
        if let Some(rest) = t.strip_prefix('[') {
            if let Some(close) = rest.find(']') {
                if let Some(k) = known_kind(&rest[..close]) {
                    kind = k.into();
                    t = rest[close + 1..].trim().to_string();
                }
            }
        }
        if let Some(colon) = t.find(':') {
            if let Some(k) = known_kind(&t[..colon]) {
                kind = k.into();
                t = t[colon + 1..].trim().to_string();
            }
        }
        let Some(q) = t.find('?') else { continue };
        let tail = t[q + 1..].trim();
        if kind.is_empty() {
            let inner = tail.trim_matches(|c| matches!(c, '(' | ')' | '[' | ']' | '-' | ' '));
            if let Some(k) = known_kind(inner) {
                kind = k.into();
            }
        }
        out.push(Candidate {
            text: t[..=q].trim().to_string(),
            kind,
        });
    }
    out
}

const STOP: [&str; 16] = [
    "the", "a", "an", "object", "objects", "image", "it", "this", "of", "in", "is", "does", "do",
    "are", "have", "has",
];

fn words(text: &str) -> Vec<String> {
    text.to_lowercase()
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_string)
        .collect()
}

/// Questions accepted so far, with what duplicate detection needs.
#[derive(Default)]
pub struct Pool {
    pub items: Vec<Candidate>,
    keys: HashSet<String>,
    content: Vec<HashSet<String>>,
    pub rejected_invalid: usize,
    pub rejected_duplicate: usize,
}

impl Pool {
    /// Keep `c` if it is a valid yes/no question and neither a duplicate (same words) nor a near
    /// duplicate (content words overlap ≥ 80 %, Jaccard) of one kept. Returns whether it was kept.
    pub fn add(&mut self, c: Candidate) -> bool {
        let text = c.text.split_whitespace().collect::<Vec<_>>().join(" ");
        if is_yes_no_question(&text).is_err() {
            self.rejected_invalid += 1;
            return false;
        }
        let ws = words(&text);
        let key = ws.join(" ");
        let content: HashSet<String> = ws
            .into_iter()
            .filter(|w| !STOP.contains(&w.as_str()))
            .collect();
        let near = |other: &HashSet<String>| {
            let inter = content.intersection(other).count();
            let union = content.union(other).count();
            union > 0 && inter * 5 >= union * 4
        };
        if self.keys.contains(&key) || self.content.iter().any(near) {
            self.rejected_duplicate += 1;
            return false;
        }
        self.keys.insert(key);
        self.content.push(content);
        let kind = if c.kind.is_empty() {
            guess_kind(&text).to_string()
        } else {
            c.kind
        };
        self.items.push(Candidate { text, kind });
        true
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }
}

/// Indices (0-based) a step-2 reply selected from a list of `len`: numbers in a JSON array, or
/// question texts matching list items, or numbers at the start of lines.
pub fn parse_selection(text: &str, pool: &[Candidate]) -> Vec<usize> {
    let by_key = |s: &str| {
        let k = words(s).join(" ");
        pool.iter().position(|c| words(&c.text).join(" ") == k)
    };
    let mut out = Vec::new();
    let push = |i: usize, out: &mut Vec<usize>| {
        if !out.contains(&i) {
            out.push(i);
        }
    };
    if let Some(items) = json_array(text) {
        for v in &items {
            let idx = match v {
                Value::Number(n) => n
                    .as_u64()
                    .map(|n| n as usize)
                    .filter(|&n| n >= 1)
                    .map(|n| n - 1),
                Value::String(s) => s
                    .trim()
                    .parse::<usize>()
                    .ok()
                    .filter(|&n| n >= 1)
                    .map(|n| n - 1)
                    .or_else(|| by_key(s)),
                Value::Object(_) => candidate_from_json(v).and_then(|c| by_key(&c.text)),
                _ => None,
            };
            if let Some(i) = idx.filter(|&i| i < pool.len()) {
                push(i, &mut out);
            }
        }
        if !out.is_empty() {
            return out;
        }
    }
    for line in text.lines() {
        let t = line.trim().trim_start_matches(['-', '*', '•']).trim();
        let d: String = t.chars().take_while(|c| c.is_ascii_digit()).collect();
        let idx = if d.is_empty() {
            by_key(strip_marker(t))
        } else {
            d.parse::<usize>().ok().filter(|&n| n >= 1).map(|n| n - 1)
        };
        if let Some(i) = idx.filter(|&i| i < pool.len()) {
            push(i, &mut out);
        }
    }
    out
}

fn chat(client: &Client, opts: &GenerateOptions, prompt: &str) -> Result<String> {
    let mut body = json!({
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": opts.max_tokens,
        "temperature": opts.temperature,
    });
    if !opts.model.is_empty() {
        body["model"] = json!(opts.model);
    }
    let lease = client.lease();
    client
        .post(&lease, "/chat/completions", &body, logprobs::text)?
        .map_err(|why| Error::Remote {
            endpoint: client.endpoints().join(", "),
            what: format!("no answer to the aspect prompt: {why}"),
            hint: "check --endpoint and --model, or raise --timeout for long generations".into(),
        })
}

fn too_few(client: &Client, what: String) -> Error {
    Error::Remote {
        endpoint: client.endpoints().join(", "),
        what,
        hint: "use a stronger instruction-tuned model, lower --q, raise --rounds, or write the questions yourself and run `makd aspects import`".into(),
    }
}

fn preview(s: &str) -> String {
    let p: String = s.chars().take(120).collect();
    if p.len() < s.len() {
        format!("{p}…")
    } else {
        p
    }
}

/// Generate N questions, select Q, and return the aspect set (ids `q01`, …).
pub fn generate(client: &Client, opts: &GenerateOptions) -> Result<AspectSet> {
    if opts.classes.is_empty() || opts.q == 0 || opts.n < opts.q {
        return Err(crate::error::input(
            format!(
                "cannot generate {} and select {} questions for {} classes",
                opts.n,
                opts.q,
                opts.classes.len()
            ),
            "--n / --q / --classes",
            "give at least one class and 1 <= Q <= N",
        ));
    }
    let rounds = opts.max_rounds.max(1);
    let first_prompt = step1_prompt(&opts.classes, opts.n_images, opts.n);
    let mut pool = Pool::default();
    let mut last_reply = String::new();
    for round in 0..rounds {
        let prompt = if round == 0 {
            first_prompt.clone()
        } else {
            let have: Vec<&str> = pool.items.iter().map(|c| c.text.as_str()).collect();
            format!(
                "{} You already wrote these, do not repeat them: {}",
                step1_prompt(&opts.classes, opts.n_images, opts.n - pool.len()),
                serde_json::to_string(&have).unwrap_or_default()
            )
        };
        last_reply = chat(client, opts, &prompt)?;
        for c in parse_questions(&last_reply) {
            if pool.len() >= opts.n {
                break;
            }
            pool.add(c);
        }
        if pool.len() >= opts.n {
            break;
        }
    }
    if pool.len() < opts.q {
        return Err(too_few(
            client,
            format!(
                "the model wrote {} valid distinct yes/no questions in {rounds} rounds, {} are needed ({} invalid, {} duplicates dropped; last reply began: {:?})",
                pool.len(),
                opts.q,
                pool.rejected_invalid,
                pool.rejected_duplicate,
                preview(&last_reply)
            ),
        ));
    }
    let n_generated = pool.len();
    let second_prompt = step2_prompt(&opts.classes, &pool.items, opts.q);
    let mut chosen: Vec<usize> = Vec::new();
    let mut note = Vec::new();
    if pool.len() == opts.q {
        chosen = (0..opts.q).collect();
        note.push("step 1 gave exactly Q questions, so step 2 was skipped".to_string());
    } else {
        for _ in 0..rounds {
            let reply = chat(client, opts, &second_prompt)?;
            for i in parse_selection(&reply, &pool.items) {
                if chosen.len() < opts.q && !chosen.contains(&i) {
                    chosen.push(i);
                }
            }
            if chosen.len() >= opts.q {
                break;
            }
        }
        if chosen.len() < opts.q {
            let picked = chosen.len();
            for i in 0..pool.len() {
                if chosen.len() == opts.q {
                    break;
                }
                if !chosen.contains(&i) {
                    chosen.push(i);
                }
            }
            note.push(format!(
                "the model selected {picked} of {}; the rest were taken from the generated list in order",
                opts.q
            ));
        }
    }
    if pool.rejected_invalid + pool.rejected_duplicate > 0 {
        note.push(format!(
            "{} invalid and {} duplicate questions dropped",
            pool.rejected_invalid, pool.rejected_duplicate
        ));
    }
    let width = opts.q.to_string().len().max(2);
    let questions = chosen
        .iter()
        .enumerate()
        .map(|(k, &i)| Question {
            id: format!("q{:0width$}", k + 1),
            text: pool.items[i].text.clone(),
            kind: pool.items[i].kind.clone(),
        })
        .collect();
    AspectSet::new(
        opts.classes.clone(),
        questions,
        Provenance {
            method: "llm".into(),
            model: Some(if opts.model.is_empty() {
                "(server default)".into()
            } else {
                opts.model.clone()
            }),
            prompts: vec![first_prompt, second_prompt],
            n_generated: Some(n_generated),
            q_selected: Some(opts.q),
            note: (!note.is_empty()).then(|| note.join("; ")),
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn texts(c: &[Candidate]) -> Vec<&str> {
        c.iter().map(|c| c.text.as_str()).collect()
    }

    #[test]
    fn parses_json_fenced_and_in_prose() {
        let r = "Sure! Here they are:\n```json\n[{\"question\": \"Does it have sleeves?\", \"kind\": \"part\"}, \"Is it made of leather?\"]\n```\nHope this helps.";
        let c = parse_questions(r);
        assert_eq!(
            texts(&c),
            ["Does it have sleeves?", "Is it made of leather?"]
        );
        assert_eq!(c[0].kind, "part");
        assert_eq!(c[1].kind, "");
        let r = r#"{"questions": [{"text": "Is it worn on the feet?", "type": "Function"}]}"#;
        let c = parse_questions(r);
        assert_eq!(texts(&c), ["Is it worn on the feet?"]);
        assert_eq!(c[0].kind, "function");
    }

    #[test]
    fn parses_lines_numbered_bulleted_and_labelled() {
        let r = "1. Does the object have wheels?\n2) **Is it red?** (visual)\n(3) Q4: Is it round?\n- [shape] Is the object long and thin?\n* Visual: Is the object striped?\nWhat colour is it?\nrandom junk line\n\"Can it fly?\"";
        let c = parse_questions(r);
        assert_eq!(
            texts(&c),
            [
                "Does the object have wheels?",
                "Is it red?",
                "Is it round?",
                "Is the object long and thin?",
                "Is the object striped?",
                "What colour is it?",
                "Can it fly?"
            ]
        );
        assert_eq!(c[1].kind, "visual");
        assert_eq!(c[3].kind, "shape");
        assert_eq!(c[4].kind, "visual");
    }

    #[test]
    fn junk_parses_to_nothing_and_never_panics() {
        for junk in [
            "",
            "[",
            "]}{[",
            "\u{fffd}\u{fffd}??",
            "[1, 2, {\"x\": 3}]",
            "?????",
            "1.",
            "(",
            "Q",
        ] {
            let c = parse_questions(junk);
            let mut pool = Pool::default();
            for x in c {
                pool.add(x);
            }
            assert!(pool.is_empty(), "{junk:?}");
        }
    }

    #[test]
    fn pool_rejects_invalid_duplicates_and_near_duplicates() {
        let mut p = Pool::default();
        let c = |t: &str| Candidate {
            text: t.into(),
            kind: String::new(),
        };
        assert!(p.add(c("Does the object have wheels?")));
        assert!(!p.add(c("does the  object have WHEELS?")));
        assert!(!p.add(c("Does this object have wheels?")), "near duplicate");
        assert!(!p.add(c("What colour is the object?")));
        assert!(!p.add(c("Is it?")));
        assert!(p.add(c("Is the object made of leather?")));
        assert_eq!(p.items[1].kind, "material");
        assert_eq!(p.items[0].kind, "part");
        assert_eq!((p.rejected_invalid, p.rejected_duplicate), (2, 2));
    }

    #[test]
    fn selection_by_numbers_texts_or_lines() {
        let pool: Vec<Candidate> = ["Is it red?", "Does it have wheels?", "Can it fly?"]
            .iter()
            .map(|t| Candidate {
                text: t.to_string(),
                kind: String::new(),
            })
            .collect();
        assert_eq!(parse_selection("[3, 1, 3, 9, 0]", &pool), vec![2, 0]);
        assert_eq!(
            parse_selection(r#"["2", "can it fly?"]"#, &pool),
            vec![1, 2]
        );
        assert_eq!(
            parse_selection("Selected:\n2. Does it have wheels?\n- 1\n", &pool),
            vec![1, 0]
        );
        assert_eq!(parse_selection("I pick none.", &pool), Vec::<usize>::new());
    }

    #[test]
    fn prompts_keep_the_papers_wording() {
        let classes = vec!["cat".to_string(), "dog".to_string()];
        let p = step1_prompt(&classes, Some(100), 150);
        assert!(p.starts_with("The dataset consists of 2 classes and 100 images. The class list is as follows: [cat, dog]. Generate 150 feature-specific yes or no questions, focusing on clear and distinct aspects of the objects in the images in the dataset."));
        let pool = vec![Candidate {
            text: "Is it furry?".into(),
            kind: String::new(),
        }];
        assert!(step2_prompt(&classes, &pool, 1).contains("1. Is it furry?\nSelect 1 of the most relevant and distinct questions from the list, focusing on various key features that distinguish different classes in the dataset."));
    }
}
