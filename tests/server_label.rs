//! `makd label` through a real llama.cpp server (tiny random GGUF): kill -9 in the middle of a run,
//! rerun the same command, and the store equals an uninterrupted run's. Loopback only.

#[path = "server/harness.rs"]
mod harness;

use harness::*;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn label(url: &str, out: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_makd"));
    c.current_dir(env!("CARGO_MANIFEST_DIR"))
        .args([
            "label",
            "--dataset",
            "fashion-mnist",
            "--aspects",
            "examples/fashion-mnist/aspects.json",
        ])
        .args([
            "--backend",
            "openai",
            "--endpoint",
            url,
            "--model",
            "tiny",
            "--api",
            "completions",
            "--mode",
            "class",
        ])
        // One slot and no prompt cache: the server's answers are then bit-for-bit repeatable.
        .args([
            "--concurrency",
            "2",
            "--extra-body",
            r#"{"cache_prompt": false}"#,
            "--out",
        ])
        .arg(out)
        .stderr(Stdio::null())
        .stdout(Stdio::null());
    c
}

fn matrix(dir: &Path) -> (Vec<u32>, Vec<u8>) {
    let bytes = std::fs::read(dir.join("scores.safetensors")).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let p = st
        .tensor("p_yes")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let s = st.tensor("status").unwrap().data().to_vec();
    (p, s)
}

#[test]
fn kill_9_then_resume_equals_an_uninterrupted_run() {
    if !have_python(
        "xllamacpp, gguf",
        "kill_9_then_resume_equals_an_uninterrupted_run",
    ) {
        return;
    }
    assert!(
        Path::new("/usr/share/datasets/fashion-mnist").exists(),
        "run scripts/test: it installs Fashion-MNIST"
    );
    let tmp = tempfile::tempdir().unwrap();
    let server = llama_server_slots(tmp.path(), 1);

    let straight = tmp.path().join("straight");
    assert!(label(&server.url, &straight).status().unwrap().success());

    let resumed = tmp.path().join("resumed");
    let mut child = label(&server.url, &resumed).spawn().unwrap();
    // Kill once some classes are recorded (the log grows past its header) but before the end.
    let log = resumed.join("scores.log");
    let t0 = Instant::now();
    while std::fs::metadata(&log).map(|m| m.len()).unwrap_or(0) < 24 + 24 * 6000 * 50 * 2 {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "labeling made no progress"
        );
        if child.try_wait().unwrap().is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let killed = child.try_wait().unwrap().is_none();
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        killed,
        "the run finished before it could be killed: make the test's run longer"
    );
    assert!(!resumed.join("scores.safetensors").exists());
    assert!(label(&server.url, &resumed).status().unwrap().success());

    let (pa, sa) = matrix(&straight);
    let (pb, sb) = matrix(&resumed);
    assert_eq!(sa, sb);
    assert!(pa == pb, "P(yes) differs after resume");
    // Class mode: every image of a class carries its class's answers, and the teacher answered.
    assert_eq!(pa.len(), 60000 * 50);
    assert!(
        sa.iter().filter(|&&s| s == 0).count() > sa.len() / 2,
        "most pairs should be ok"
    );
}
