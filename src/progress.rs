//! Progress bars on stderr. indicatif hides them when stderr is not a terminal, so piped output
//! stays clean; `NO_COLOR` turns colour off.

use indicatif::{ProgressBar, ProgressStyle};

/// A bar for `len` steps with a per-second rate and ETA; `unit` names what is counted.
pub fn bar(len: u64, prefix: &str, unit: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    let color = std::env::var_os("NO_COLOR").is_none();
    let bar = if color {
        "{bar:30.cyan/blue}"
    } else {
        "{bar:30}"
    };
    let template =
        format!("{{prefix}} {bar} {{pos}}/{{len}} {unit} {{per_sec}} eta {{eta}} {{msg}}");
    pb.set_style(
        ProgressStyle::with_template(&template)
            .expect("static template")
            .progress_chars("=> "),
    );
    pb.set_prefix(prefix.to_string());
    pb
}

/// Whether to print plain per-epoch log lines (always: they go to stderr and are short).
pub fn log(line: impl AsRef<str>) {
    eprintln!("{}", line.as_ref());
}
