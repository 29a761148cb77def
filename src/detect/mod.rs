//! Object detection with aspect knowledge: the CenterNet-style student, its targets and loss,
//! decoding, and COCO's mAP.
//!
//! The data side (COCO files, synthetic scenes, crops of objects) lives in [`crate::data`];
//! training goes through the same loop as classification ([`crate::train`]).

pub mod centernet;
pub mod cocoeval;
pub mod draw;
pub mod experiment;
pub mod heatmap;
pub mod loss;
pub mod task;
