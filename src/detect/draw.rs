//! Pictures of detections: the image enlarged, each box in its category's colour with its name,
//! score and top aspect answers (text only when a font is available, see
//! [`crate::report::plots::font_ready`]).

use crate::data::RawImage;
use crate::error::{Error, Result};
use plotters::prelude::*;

/// One box to draw, in the image's pixels.
#[derive(Clone, Debug)]
pub struct Drawn {
    pub bbox: [f32; 4],
    pub category: usize,
    /// The first line of its label (category and score).
    pub label: String,
    /// Further lines (aspect answers), drawn smaller.
    pub notes: Vec<String>,
    /// Ground truth is drawn dashed-thin; detections thick.
    pub ground_truth: bool,
}

use crate::report::plots::PALETTE;

/// The RGB pixels of `img` enlarged `scale` times, with `boxes` drawn on them.
pub fn draw(img: &RawImage, boxes: &[Drawn], scale: u32) -> Result<image::RgbImage> {
    let (w, h) = (img.width * scale, img.height * scale);
    let mut buf = vec![0u8; (w * h * 3) as usize];
    for y in 0..h {
        for x in 0..w {
            let (sx, sy) = ((x / scale) as usize, (y / scale) as usize);
            let at = (sy * img.width as usize + sx) * img.channels as usize;
            let px = if img.channels == 1 {
                [img.pixels[at]; 3]
            } else {
                [img.pixels[at], img.pixels[at + 1], img.pixels[at + 2]]
            };
            let o = ((y * w + x) * 3) as usize;
            buf[o..o + 3].copy_from_slice(&px);
        }
    }
    let text = crate::report::plots::font_ready().is_some();
    {
        let root = BitMapBackend::with_buffer(&mut buf, (w, h)).into_drawing_area();
        let s = scale as f32;
        for b in boxes {
            let colour = PALETTE[b.category % PALETTE.len()];
            let [x, y, bw, bh] = b.bbox.map(|v| v * s);
            let (x0, y0) = (x.round() as i32, y.round() as i32);
            let (x1, y1) = ((x + bw).round() as i32, (y + bh).round() as i32);
            let style = if b.ground_truth {
                colour.mix(0.6).stroke_width(1)
            } else {
                colour.stroke_width(2)
            };
            root.draw(&Rectangle::new([(x0, y0), (x1, y1)], style))
                .map_err(draw_error)?;
            if text && !b.ground_truth {
                let font = ("sans-serif", 13).into_font().color(&colour);
                root.draw(&Text::new(b.label.clone(), (x0 + 2, y0 + 2), font))
                    .map_err(draw_error)?;
                for (k, note) in b.notes.iter().enumerate() {
                    let small = ("sans-serif", 11).into_font().color(&WHITE);
                    root.draw(&Text::new(
                        note.clone(),
                        (x0 + 2, y0 + 16 + 12 * k as i32),
                        small,
                    ))
                    .map_err(draw_error)?;
                }
            }
        }
        root.present().map_err(draw_error)?;
    }
    image::RgbImage::from_raw(w, h, buf).ok_or_else(|| Error::Internal {
        what: "drawing buffer of the wrong size".into(),
    })
}

fn draw_error(e: impl std::fmt::Display) -> Error {
    Error::Internal {
        what: format!("drawing detections: {e}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boxes_are_drawn_where_they_are() {
        let img = RawImage {
            width: 16,
            height: 16,
            channels: 1,
            pixels: vec![0; 256],
        };
        let b = Drawn {
            bbox: [4.0, 4.0, 8.0, 8.0],
            category: 0,
            label: String::new(),
            notes: vec![],
            ground_truth: false,
        };
        let out = draw(&img, &[b], 4).unwrap();
        assert_eq!(out.dimensions(), (64, 64));
        // The box's left edge at x = 16 is the category's colour, the centre stays black.
        assert_eq!(out.get_pixel(16, 32).0, [0x4E, 0x79, 0xA7]);
        assert_eq!(out.get_pixel(32, 32).0, [0, 0, 0]);
    }
}
