//! Tokenizers of the native teachers: the one stored in a GGUF file's metadata, encoding the way
//! llama.cpp does, and a Hugging Face `tokenizer.json` with a byte-level BPE model (Qwen family,
//! [`Tokenizer::from_hf_json`]), encoding the way the `tokenizers` library does.
//!
//! A GGUF text model carries its vocabulary in `tokenizer.ggml.*`; there is no separate
//! tokenizer file. Two models are handled:
//! - `llama` (SentencePiece, e.g. Gemma): spaces become `▁`, then adjacent symbols are merged
//!   greedily by the score of the merged piece (highest first, leftmost on ties); a character
//!   with no piece falls back to `<0xXX>` byte tokens.
//! - `gpt2` (byte-level BPE, e.g. Qwen): the text is split by the pre-tokenizer pattern, each
//!   piece is mapped byte → printable character, and merges are applied by rank.
//!
//! As in llama.cpp's server, special tokens written in the text (control and user-defined pieces
//! such as `<bos>` or Gemma's `\n`) are matched first, longest first, and never split.

use crate::error::{input, IoContext, Result};
use candle_core::quantized::gguf_file::{Content, Value};
use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

/// llama.cpp's token types (`llama_token_type`).
const TYPE_CONTROL: i32 = 3;
const TYPE_USER_DEFINED: i32 = 4;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Spm,
    Bpe,
}

pub struct Tokenizer {
    kind: Kind,
    tokens: Vec<String>,
    scores: Vec<f32>,
    types: Vec<i32>,
    ids: HashMap<String, u32>,
    /// BPE merge ranks keyed by (left, right) piece.
    merges: HashMap<(String, String), usize>,
    /// Control and user-defined pieces, longest first: matched verbatim before encoding.
    specials: Vec<(String, u32)>,
    add_space_prefix: bool,
    /// Unicode NFC before encoding (tokenizer.json's `NFC` normalizer).
    nfc: bool,
    pub bos: Option<u32>,
    pub add_bos: bool,
    unk: Option<u32>,
}

fn meta<'a>(ct: &'a Content, key: &str, at: &str) -> Result<&'a Value> {
    ct.metadata.get(key).ok_or_else(|| {
        input(
            format!("GGUF metadata has no `{key}`"),
            at,
            "the file must embed its tokenizer (llama.cpp's convert_hf_to_gguf.py does)",
        )
    })
}

fn bad(key: &str, at: &str) -> crate::error::Error {
    input(
        format!("GGUF metadata `{key}` has an unexpected type"),
        at,
        "the file may be damaged or written by an incompatible converter",
    )
}

impl Tokenizer {
    /// Read the tokenizer of a GGUF file (`at` names the file in errors).
    pub fn from_gguf(ct: &Content, at: &str) -> Result<Tokenizer> {
        let model = meta(ct, "tokenizer.ggml.model", at)?
            .to_string()
            .map_err(|_| bad("tokenizer.ggml.model", at))?;
        let kind =
            match model.as_str() {
                "llama" => Kind::Spm,
                "gpt2" => Kind::Bpe,
                other => return Err(input(
                    format!("tokenizer model `{other}` is not supported"),
                    at,
                    "supported: `llama` (SentencePiece, Gemma) and `gpt2` (byte-level BPE, Qwen)",
                )),
            };
        let tokens: Vec<String> = meta(ct, "tokenizer.ggml.tokens", at)?
            .to_vec()
            .map_err(|_| bad("tokenizer.ggml.tokens", at))?
            .iter()
            .map(|v| v.to_string().cloned())
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| bad("tokenizer.ggml.tokens", at))?;
        let n = tokens.len();
        let scores: Vec<f32> = match ct.metadata.get("tokenizer.ggml.scores") {
            Some(v) => v
                .to_vec()
                .map_err(|_| bad("tokenizer.ggml.scores", at))?
                .iter()
                .map(|v| v.to_f32())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| bad("tokenizer.ggml.scores", at))?,
            None if kind == Kind::Bpe => vec![0.0; n],
            None => return Err(bad("tokenizer.ggml.scores", at)),
        };
        let types: Vec<i32> = match ct.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|_| bad("tokenizer.ggml.token_type", at))?
                .iter()
                .map(|v| v.to_i32())
                .collect::<std::result::Result<_, _>>()
                .map_err(|_| bad("tokenizer.ggml.token_type", at))?,
            None => vec![1; n],
        };
        if scores.len() != n || types.len() != n {
            return Err(input(
                "GGUF tokenizer arrays have different lengths",
                at,
                "tokens, scores and token_type must have one entry per token",
            ));
        }
        let mut ids = HashMap::with_capacity(n);
        for (i, t) in tokens.iter().enumerate() {
            ids.entry(t.clone()).or_insert(i as u32);
        }
        let mut merges = HashMap::new();
        if kind == Kind::Bpe {
            let list = meta(ct, "tokenizer.ggml.merges", at)?
                .to_vec()
                .map_err(|_| bad("tokenizer.ggml.merges", at))?;
            for (rank, m) in list.iter().enumerate() {
                let m = m
                    .to_string()
                    .map_err(|_| bad("tokenizer.ggml.merges", at))?;
                if let Some((l, r)) = m.split_once(' ') {
                    merges.insert((l.to_string(), r.to_string()), rank);
                }
            }
        }
        let mut specials: Vec<(String, u32)> = tokens
            .iter()
            .enumerate()
            .filter(|(i, t)| !t.is_empty() && matches!(types[*i], TYPE_CONTROL | TYPE_USER_DEFINED))
            .map(|(i, t)| (t.clone(), i as u32))
            .collect();
        // Longest first, so `\n\n` wins over `\n`; stable, so equal lengths keep vocabulary order.
        specials.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        let get_u32 = |k: &str| ct.metadata.get(k).and_then(|v| v.to_u32().ok());
        let get_bool = |k: &str| ct.metadata.get(k).and_then(|v| v.to_bool().ok());
        Ok(Tokenizer {
            kind,
            scores,
            types,
            ids,
            merges,
            specials,
            // llama.cpp's default for SentencePiece is to prefix a space; BPE never does.
            add_space_prefix: get_bool("tokenizer.ggml.add_space_prefix")
                .unwrap_or(kind == Kind::Spm),
            nfc: false,
            bos: get_u32("tokenizer.ggml.bos_token_id"),
            add_bos: get_bool("tokenizer.ggml.add_bos_token").unwrap_or(kind == Kind::Spm),
            unk: get_u32("tokenizer.ggml.unknown_token_id"),
            tokens,
        })
    }

    /// Read a Hugging Face `tokenizer.json` holding a byte-level BPE model (Qwen2, Qwen2.5,
    /// Qwen3, Qwen3-VL). Added tokens (`<|im_start|>`, `<|image_pad|>`, …) are matched verbatim
    /// before BPE, as the `tokenizers` library does. The NFC normaliser is not applied: prompts
    /// are ASCII or already NFC.
    pub fn from_hf_json(path: &std::path::Path) -> Result<Tokenizer> {
        let text = std::fs::read_to_string(path).at(path)?;
        Self::from_hf_str(&text, &path.display().to_string())
    }

    /// [`Tokenizer::from_hf_json`] on the file's text (`at` names it in errors).
    pub fn from_hf_str(text: &str, at: &str) -> Result<Tokenizer> {
        let v: serde_json::Value = serde_json::from_str(text).map_err(|e| {
            input(
                format!("not valid JSON: {e}"),
                at,
                "expected a Hugging Face tokenizer.json",
            )
        })?;
        let model = &v["model"];
        if model["type"].as_str() != Some("BPE") {
            return Err(input(
                format!("tokenizer model `{}` is not supported", model["type"]),
                at,
                "only byte-level BPE tokenizers (Qwen family) are supported",
            ));
        }
        if model["ignore_merges"].as_bool() == Some(true) {
            return Err(input(
                "the tokenizer sets ignore_merges (whole-word lookup before merges)",
                at,
                "only Qwen-style byte-level BPE tokenizers are supported",
            ));
        }
        let nfc = match &v["normalizer"] {
            serde_json::Value::Null => false,
            n if n["type"] == "NFC" => true,
            n if n["type"] == "Sequence"
                && n["normalizers"]
                    .as_array()
                    .is_some_and(|a| a.iter().all(|x| x["type"] == "NFC")) =>
            {
                true
            }
            n => {
                return Err(input(
                    format!("normalizer {n} is not supported"),
                    at,
                    "only NFC (Qwen's) or none is supported",
                ))
            }
        };
        let byte_level = text.contains("\"ByteLevel\"");
        if !byte_level {
            return Err(input(
                "the tokenizer has no ByteLevel pre-tokenizer",
                at,
                "only byte-level BPE tokenizers (Qwen family) are supported",
            ));
        }
        let vocab = model["vocab"].as_object().ok_or_else(|| {
            input(
                "`model.vocab` is missing",
                at,
                "a BPE tokenizer.json has one",
            )
        })?;
        let mut pairs: Vec<(String, u32)> = vocab
            .iter()
            .filter_map(|(k, id)| id.as_u64().map(|id| (k.clone(), id as u32)))
            .collect();
        let mut added: Vec<(String, u32)> = Vec::new();
        for t in v["added_tokens"].as_array().into_iter().flatten() {
            if let (Some(c), Some(id)) = (t["content"].as_str(), t["id"].as_u64()) {
                added.push((c.to_string(), id as u32));
                pairs.push((c.to_string(), id as u32));
            }
        }
        let n = pairs
            .iter()
            .map(|(_, id)| *id as usize + 1)
            .max()
            .unwrap_or(0);
        let mut tokens = vec![String::new(); n];
        let mut types = vec![0; n];
        for (piece, id) in &pairs {
            tokens[*id as usize] = piece.clone();
            types[*id as usize] = 1;
        }
        for (_, id) in &added {
            types[*id as usize] = TYPE_CONTROL;
        }
        let mut ids = HashMap::with_capacity(n);
        for (piece, id) in pairs {
            ids.entry(piece).or_insert(id);
        }
        let mut merges = HashMap::new();
        for (rank, m) in model["merges"].as_array().into_iter().flatten().enumerate() {
            let pair = match m {
                serde_json::Value::String(s) => s
                    .split_once(' ')
                    .map(|(l, r)| (l.to_string(), r.to_string())),
                serde_json::Value::Array(a) if a.len() == 2 => a[0]
                    .as_str()
                    .zip(a[1].as_str())
                    .map(|(l, r)| (l.to_string(), r.to_string())),
                _ => None,
            };
            let pair = pair.ok_or_else(|| {
                input(
                    format!("merge #{rank} is neither \"a b\" nor [\"a\", \"b\"]"),
                    at,
                    "the file may be damaged",
                )
            })?;
            merges.insert(pair, rank);
        }
        let mut specials = added;
        specials.sort_by_key(|(t, _)| std::cmp::Reverse(t.len()));
        Ok(Tokenizer {
            kind: Kind::Bpe,
            scores: vec![0.0; n],
            types,
            ids,
            merges,
            specials,
            add_space_prefix: false,
            nfc,
            bos: None,
            add_bos: false,
            unk: None,
            tokens,
        })
    }

    /// The id of a vocabulary piece, if present.
    pub fn token_id(&self, piece: &str) -> Option<u32> {
        self.ids.get(piece).copied()
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    pub fn len(&self) -> usize {
        self.tokens.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tokens.is_empty()
    }

    /// The vocabulary piece of a token as stored (`▁Yes`, `ĠYes`, `<0x0A>`).
    pub fn piece(&self, id: u32) -> &str {
        self.tokens.get(id as usize).map_or("", |s| s.as_str())
    }

    /// Whether a token is an ordinary text piece (not control, byte or unused).
    pub fn is_normal(&self, id: u32) -> bool {
        self.types.get(id as usize) == Some(&1)
    }

    /// Token ids of `text`, with BOS first when `add_special` and the model asks for it.
    pub fn encode(&self, text: &str, add_special: bool) -> Vec<u32> {
        let normalized: String;
        let text = if self.nfc && !text.is_ascii() {
            use unicode_normalization::UnicodeNormalization;
            normalized = text.nfc().collect();
            &normalized
        } else {
            text
        };
        let mut out = Vec::new();
        if add_special && self.add_bos {
            if let Some(b) = self.bos {
                out.push(b);
            }
        }
        let mut prev_special = true;
        for frag in self.partition(text) {
            match frag {
                Frag::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Frag::Text(t) => {
                    match self.kind {
                        Kind::Spm => {
                            let mut s = String::with_capacity(t.len() + 3);
                            if self.add_space_prefix && prev_special {
                                s.push(' ');
                            }
                            s.push_str(t);
                            self.spm(&s.replace(' ', "▁"), &mut out);
                        }
                        Kind::Bpe => {
                            for word in pretokenize(t) {
                                self.bpe(word, &mut out);
                            }
                        }
                    }
                    prev_special = false;
                }
            }
        }
        out
    }

    /// Split off special pieces written in the text, longest piece first (llama.cpp's order).
    fn partition<'a>(&self, text: &'a str) -> Vec<Frag<'a>> {
        let mut frags = vec![Frag::Text(text)];
        for (piece, id) in &self.specials {
            if !frags
                .iter()
                .any(|f| matches!(f, Frag::Text(t) if t.contains(piece.as_str())))
            {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len() + 2);
            for f in frags {
                match f {
                    Frag::Text(mut t) => {
                        while let Some(i) = t.find(piece.as_str()) {
                            if i > 0 {
                                next.push(Frag::Text(&t[..i]));
                            }
                            next.push(Frag::Token(*id));
                            t = &t[i + piece.len()..];
                        }
                        if !t.is_empty() {
                            next.push(Frag::Text(t));
                        }
                    }
                    tok => next.push(tok),
                }
            }
            frags = next;
        }
        frags
    }

    /// SentencePiece: greedy merges by the merged piece's score, then resegmentation.
    fn spm(&self, text: &str, out: &mut Vec<u32>) {
        struct Sym {
            start: usize,
            len: usize,
            prev: isize,
            next: isize,
        }
        let mut syms: Vec<Sym> = Vec::new();
        for (i, (start, c)) in text.char_indices().enumerate() {
            syms.push(Sym {
                start,
                len: c.len_utf8(),
                prev: i as isize - 1,
                next: i as isize + 1,
            });
        }
        if syms.is_empty() {
            return;
        }
        let last = syms.len() - 1;
        syms[last].next = -1;
        let mut heap = BinaryHeap::new();
        let try_add = |l: isize, r: isize, syms: &Vec<Sym>, heap: &mut BinaryHeap<Bigram>| {
            if l < 0 || r < 0 {
                return;
            }
            let (l, r) = (l as usize, r as usize);
            let s = &text[syms[l].start..syms[l].start + syms[l].len + syms[r].len];
            if let Some(&id) = self.ids.get(s) {
                heap.push(Bigram {
                    score: self.scores[id as usize],
                    left: l,
                    right: r,
                    size: s.len(),
                });
            }
        };
        for i in 1..syms.len() {
            try_add(i as isize - 1, i as isize, &syms, &mut heap);
        }
        while let Some(b) = heap.pop() {
            let (l, r) = (b.left, b.right);
            // A stale pair: one side was merged elsewhere since it was queued.
            if syms[l].len == 0 || syms[r].len == 0 || syms[l].len + syms[r].len != b.size {
                continue;
            }
            syms[l].len += syms[r].len;
            syms[r].len = 0;
            let rn = syms[r].next;
            syms[l].next = rn;
            if rn >= 0 {
                syms[rn as usize].prev = l as isize;
            }
            let lp = syms[l].prev;
            try_add(lp, l as isize, &syms, &mut heap);
            try_add(l as isize, rn, &syms, &mut heap);
        }
        // Every merge formed a vocabulary piece, so only a single character can be unknown:
        // it falls back to its UTF-8 bytes.
        let mut i = 0isize;
        while i >= 0 {
            let sym = &syms[i as usize];
            let s = &text[sym.start..sym.start + sym.len];
            match self.ids.get(s) {
                Some(&id) => out.push(id),
                None => out.extend(s.bytes().map(|b| self.byte_token(b))),
            }
            i = sym.next;
        }
    }

    fn byte_token(&self, b: u8) -> u32 {
        let id = match self.kind {
            Kind::Spm => self.ids.get(&format!("<0x{b:02X}>")).copied().or_else(|| {
                std::str::from_utf8(&[b])
                    .ok()
                    .and_then(|s| self.ids.get(s).copied())
            }),
            Kind::Bpe => self.ids.get(&byte_char(b).to_string()).copied(),
        };
        id.or(self.unk).unwrap_or(0)
    }

    /// Byte-level BPE on one pre-tokenized word.
    fn bpe(&self, word: &str, out: &mut Vec<u32>) {
        // No whole-word shortcut: merges decide even when the word itself is a token (only
        // llama3-style pre-tokenizers skip merges, and those are not supported here).
        let mapped: String = word.bytes().map(byte_char).collect();
        let mut parts: Vec<String> = mapped.chars().map(|c| c.to_string()).collect();
        loop {
            let best = parts
                .windows(2)
                .enumerate()
                .filter_map(|(i, w)| {
                    self.merges
                        .get(&(w[0].clone(), w[1].clone()))
                        .map(|&rank| (rank, i))
                })
                .min();
            let Some((_, i)) = best else { break };
            let right = parts.remove(i + 1);
            parts[i].push_str(&right);
        }
        for p in parts {
            match self.ids.get(&p) {
                Some(&id) => out.push(id),
                None => {
                    // A piece outside the vocabulary: fall back to its bytes' tokens.
                    for c in p.chars() {
                        let b = char_byte(c);
                        out.push(self.byte_token(b));
                    }
                }
            }
        }
    }
}

enum Frag<'a> {
    Text(&'a str),
    Token(u32),
}

struct Bigram {
    score: f32,
    left: usize,
    right: usize,
    size: usize,
}

impl PartialEq for Bigram {
    fn eq(&self, o: &Self) -> bool {
        self.cmp(o) == Ordering::Equal
    }
}
impl Eq for Bigram {}
impl PartialOrd for Bigram {
    fn partial_cmp(&self, o: &Self) -> Option<Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Bigram {
    // Max-heap: highest score first, then the leftmost pair.
    fn cmp(&self, o: &Self) -> Ordering {
        self.score
            .total_cmp(&o.score)
            .then_with(|| o.left.cmp(&self.left))
    }
}

/// GPT-2's byte → printable character map: printable Latin-1 bytes map to themselves, the rest
/// to U+0100 onwards in byte order.
fn byte_char(b: u8) -> char {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    if printable(b) {
        return b as char;
    }
    let rank = (0..b).filter(|&x| !printable(x)).count() as u32;
    char::from_u32(0x100 + rank).unwrap_or('?')
}

fn char_byte(c: char) -> u8 {
    (0..=255u8).find(|&b| byte_char(b) == c).unwrap_or(b'?')
}

/// Qwen2's pre-tokenizer, written out by hand (the pattern
/// `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`).
pub fn pretokenize(text: &str) -> Vec<&str> {
    let cs: Vec<(usize, char)> = text.char_indices().collect();
    let n = cs.len();
    let end = |i: usize| if i < n { cs[i].0 } else { text.len() };
    let is_l = |c: char| c.is_alphabetic();
    let is_n = |c: char| c.is_numeric();
    let is_nl = |c: char| c == '\r' || c == '\n';
    let mut out = Vec::new();
    let mut i = 0;
    while i < n {
        let c = cs[i].1;
        // Contractions.
        if c == '\'' {
            let rest: String = cs[i + 1..n.min(i + 3)]
                .iter()
                .map(|x| x.1.to_ascii_lowercase())
                .collect();
            let len = if rest.starts_with("re") || rest.starts_with("ve") || rest.starts_with("ll")
            {
                3
            } else if rest.starts_with(['s', 't', 'm', 'd']) {
                2
            } else {
                0
            };
            if len > 0 {
                out.push(&text[cs[i].0..end(i + len)]);
                i += len;
                continue;
            }
        }
        // [^\r\n\p{L}\p{N}]?\p{L}+
        {
            let mut j = i;
            if !is_nl(c) && !is_l(c) && !is_n(c) && i + 1 < n && is_l(cs[i + 1].1) {
                j += 1;
            }
            if j < n && is_l(cs[j].1) {
                while j < n && is_l(cs[j].1) {
                    j += 1;
                }
                out.push(&text[cs[i].0..end(j)]);
                i = j;
                continue;
            }
        }
        if is_n(c) {
            out.push(&text[cs[i].0..end(i + 1)]);
            i += 1;
            continue;
        }
        // ` ?[^\s\p{L}\p{N}]+[\r\n]*`
        {
            let mut j = i;
            if c == ' ' {
                j += 1;
            }
            let other = |c: char| !c.is_whitespace() && !is_l(c) && !is_n(c);
            if j < n && other(cs[j].1) {
                while j < n && other(cs[j].1) {
                    j += 1;
                }
                while j < n && is_nl(cs[j].1) {
                    j += 1;
                }
                out.push(&text[cs[i].0..end(j)]);
                i = j;
                continue;
            }
        }
        // Whitespace: `\s*[\r\n]+`, then `\s+(?!\S)`, then `\s+`.
        let mut j = i;
        while j < n && cs[j].1.is_whitespace() {
            j += 1;
        }
        if let Some(last_nl) = (i..j).rev().find(|&k| is_nl(cs[k].1)) {
            out.push(&text[cs[i].0..end(last_nl + 1)]);
            i = last_nl + 1;
            continue;
        }
        if j < n && j - i > 1 {
            // Leave the last space to start the next word.
            out.push(&text[cs[i].0..end(j - 1)]);
            i = j - 1;
            continue;
        }
        out.push(&text[cs[i].0..end(j.max(i + 1))]);
        i = j.max(i + 1);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Ids Hugging Face `tokenizers` 0.23 gives with the Qwen3-VL fixture's tokenizer.json
    /// (NFC, Qwen2 pre-tokenizer, byte-level BPE, added tokens).
    #[test]
    fn hf_tokenizer_json_encodes_as_the_tokenizers_library() {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/qwen3vl/tokenizer.json");
        let t = Tokenizer::from_hf_json(&path).unwrap();
        let cafe = [
            309, 282, 305, 276, 299, 64, 69, 391, 299, 71, 64, 72, 81, 30,
        ];
        assert_eq!(t.encode("Is the object a caf\u{e9} chair?", false), cafe);
        // Decomposed é (e + combining acute) is composed first.
        assert_eq!(t.encode("Is the object a cafe\u{301} chair?", false), cafe);
        assert_eq!(
            t.encode(
                "Na\u{ef}ve   spaces\n\nand 12345 numbers, don't stop!",
                false
            ),
            [
                45, 383, 107, 390, 395, 291, 79, 64, 66, 256, 198, 198, 285, 67, 220, 16, 17, 18,
                19, 20, 343, 84, 387, 263, 82, 11, 220, 312, 77, 380, 220, 278, 78, 79, 0
            ]
        );
        assert_eq!(
            t.encode("<|im_start|>user\n\u{dc}ber<|im_end|>", false),
            [411, 317, 198, 127, 250, 65, 263, 412]
        );
        assert!(Tokenizer::from_hf_str(r#"{"model": {"type": "Unigram"}}"#, "t").is_err());
    }

    #[test]
    fn qwen2_pretokenizer_splits() {
        assert_eq!(
            pretokenize("Hello world's 123 (ok)!\n\n  end  "),
            vec![
                // `\s+(?!\S)` leaves the last space to the word: "  end" → " ", " end".
                "Hello", " world", "'s", " ", "1", "2", "3", " (", "ok", ")!\n\n", " ", " end", "  "
            ]
        );
        assert_eq!(pretokenize("a\u{e9}b?"), vec!["a\u{e9}b", "?"]);
    }

    #[test]
    fn gpt2_byte_map() {
        assert_eq!(byte_char(b'A'), 'A');
        assert_eq!(byte_char(b' '), 'Ġ');
        assert_eq!(byte_char(b'\n'), 'Ċ');
        assert_eq!(char_byte('Ġ'), b' ');
    }
}
