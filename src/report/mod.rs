//! Reports: results.json → report.md, report.html and plots/*.png.
