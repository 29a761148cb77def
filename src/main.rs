//! The `makd` binary: parse, set up, dispatch. Everything else lives in the library.

mod cli;

use clap::Parser;

fn main() {
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
