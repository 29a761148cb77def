//! `makd data export`: write a detection dataset as COCO (`annotations.json` + `images/*.png`), so
//! any other tool (pycocotools, torchvision, detectron2) reads the same data makd trains on.

use anyhow::Result;
use makd::data::coco::{self, EXPORT_MARKER};
use makd::data::detection::{DetectionSpec, FirstImages};
use makd::data::Split;
use makd::error;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Write one split of a detection dataset as COCO: DIR/annotations.json and DIR/images/*.png.
    Export(ExportArgs),
}

#[derive(clap::Args, Debug)]
struct ExportArgs {
    /// Detection dataset: `scenes:fashion-mnist`, `scenes:idx:DIR`, `scenes:imagefolder:ROOT`,
    /// `scenes:DIR` or `coco:ANNOTATIONS.json[:IMAGE_DIR]`.
    #[arg(long, value_name = "SPEC", value_parser = parse_detection_spec)]
    dataset: DetectionSpec,
    /// Which split to write: `train` or `test` (`val` is `test`).
    #[arg(long)]
    split: Split,
    /// Output directory. It must be new, empty or an earlier export (it holds annotations.json):
    /// an earlier export's annotations.json and images/ are then replaced; other files stay.
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// Write only the first N images (ids as in the full split).
    #[arg(long, value_name = "N")]
    limit: Option<usize>,
}

pub fn run(args: Args) -> Result<()> {
    match args.command {
        Command::Export(a) => export(a),
    }
}

fn export(args: ExportArgs) -> Result<()> {
    let mut ds = makd::data::open_detection(&args.dataset, args.split)?;
    if let Some(n) = args.limit {
        ds = Arc::new(FirstImages::new(ds, n));
    }
    // Only once the dataset opened: a bad spec leaves an earlier export in place.
    prepare_out_dir(&args.out)?;
    eprintln!("exporting {}", ds.describe());
    let bar = makd::progress::bar(ds.len() as u64, "export", "images");
    coco::write_coco(ds.as_ref(), &args.out, &bar)?;
    bar.finish_and_clear();
    println!(
        "wrote {} images to {}",
        ds.len(),
        args.out.join("annotations.json").display()
    );
    Ok(())
}

/// Refuse a directory that holds anything but an earlier export; clear an earlier export's files.
fn prepare_out_dir(out: &Path) -> Result<()> {
    if !out.exists() {
        return Ok(());
    }
    let at = out.display().to_string();
    let entries = std::fs::read_dir(out)
        .map_err(|e| error::io(out, e))?
        .count();
    if entries == 0 {
        return Ok(());
    }
    let earlier = out.join("annotations.json").is_file() || out.join(EXPORT_MARKER).is_file();
    if !earlier {
        return Err(error::input(
            "the output directory is not empty and holds no earlier export (no annotations.json)",
            at,
            "choose a new or empty directory for --out",
        )
        .into());
    }
    let images = out.join("images");
    if images.exists() {
        std::fs::remove_dir_all(&images).map_err(|e| error::io(&images, e))?;
    }
    let json = out.join("annotations.json");
    if json.exists() {
        std::fs::remove_file(&json).map_err(|e| error::io(&json, e))?;
    }
    Ok(())
}

fn parse_detection_spec(s: &str) -> std::result::Result<DetectionSpec, String> {
    s.parse().map_err(|e: makd::Error| e.report())
}
