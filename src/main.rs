//! The `makd` binary: parse, set up, dispatch. Everything else lives in the library.

mod cli;

use clap::Parser;

fn main() {
    keep_freed_memory();
    // candle's elementwise thread pool spin-waits and fights our rayon kernels for the cores; one
    // thread for it made a loaded 2-core training step ~30% faster. A user's setting wins.
    if std::env::var_os("CANDLE_NUM_THREADS").is_none() && cli::wants_one_candle_thread() {
        std::env::set_var("CANDLE_NUM_THREADS", "1");
    }
    let args = cli::Cli::parse();
    if let Err(err) = cli::run(args) {
        // uv's layout: the error chain, then the hint on its own line, last.
        eprintln!("error: {err:#}");
        let ours = err.chain().find_map(|e| e.downcast_ref::<makd::Error>());
        if let Some(hint) = ours.and_then(makd::Error::hint) {
            eprintln!("hint: {hint}");
        }
        std::process::exit(ours.map_or(1, makd::Error::exit_code));
    }
}

/// A training step frees and allocates the same activation-sized buffers every step. glibc
/// serves each buffer above its mmap threshold (at most 32 MiB: a 224-px activation at batch
/// 16 is 50–80 MiB) with a fresh mapping and unmaps it on free, so every step paid a page fault
/// and the kernel's zeroing for each 4 KiB of them again (a fifth of a ResNet-50 224-px step),
/// and it trims the heap's top as soon as 128 KiB are free. Serving everything from the heap
/// and never trimming it lets those buffers be reused: measured 14–26% faster ResNet-50 steps
/// for 2.5% more peak memory.
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes malloc's tuning; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_MAX, 0);
        libc::mallopt(libc::M_TRIM_THRESHOLD, libc::c_int::MAX);
    }
}
