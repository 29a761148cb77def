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
        eprintln!("error: {err:#}");
        let code = err
            .downcast_ref::<makd::Error>()
            .map(|e| e.exit_code())
            .unwrap_or(1);
        std::process::exit(code);
    }
}
