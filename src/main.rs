//! The `makd` binary: parse, set up, dispatch. Everything else lives in the library.

mod cli;

use clap::Parser;

fn main() {
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
