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
        // Label plates drawn so far: [left, top, right, bottom].
        let mut plates: Vec<[i32; 4]> = Vec::new();
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
                let small = ("sans-serif", 11).into_font().color(&WHITE);
                // A dark plate under the lines, so that they read on a bright garment too; a plate
                // that would cover an earlier one (two classes on one box) goes below it.
                let mut width = root
                    .estimate_text_size(&b.label, &font)
                    .map_err(draw_error)?
                    .0;
                for note in &b.notes {
                    width = width.max(root.estimate_text_size(note, &small).map_err(draw_error)?.0);
                }
                let height = 14 + 12 * b.notes.len() as i32;
                let (left, mut top) = (x0 + 1, y0 + 1);
                let (right, overlaps) = (left + width as i32 + 3, |p: &[i32; 4], top: i32| {
                    top < p[3] && p[1] < top + height
                });
                while let Some(p) = plates
                    .iter()
                    .find(|p| p[0] < right && left < p[2] && overlaps(p, top))
                {
                    top = p[3] + 1;
                }
                plates.push([left, top, right, top + height]);
                root.draw(&Rectangle::new(
                    [(left, top), (right, top + height)],
                    BLACK.mix(0.75).filled(),
                ))
                .map_err(draw_error)?;
                root.draw(&Text::new(b.label.clone(), (left + 1, top + 1), font))
                    .map_err(draw_error)?;
                for (k, note) in b.notes.iter().enumerate() {
                    let at = (left + 1, top + 15 + 12 * k as i32);
                    root.draw(&Text::new(note.clone(), at, small.clone()))
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

    /// On a white image, the label's lines sit on a dark plate: most pixels under the text are
    /// dark (the glyphs are a few thin strokes), while outside the plate the image stays white.
    #[test]
    fn labels_sit_on_a_dark_plate() {
        if crate::report::plots::font_ready().is_none() {
            eprintln!("no font: a picture without text has no plate to test");
            return;
        }
        let img = RawImage {
            width: 32,
            height: 32,
            channels: 1,
            pixels: vec![255; 32 * 32],
        };
        let b = Drawn {
            bbox: [2.0, 2.0, 28.0, 28.0],
            category: 1,
            label: "shirt 0.93".into(),
            notes: vec!["sleeves: yes 0.91".into()],
            ground_truth: false,
        };
        let out = draw(&img, &[b], 4).unwrap();
        let dark = |x0: u32, x1: u32, y0: u32, y1: u32| {
            let (mut d, mut n) = (0, 0);
            for y in y0..y1 {
                for x in x0..x1 {
                    n += 1;
                    d +=
                        (out.get_pixel(x, y).0.iter().map(|&v| v as u32).sum::<u32>() < 200) as u32;
                }
            }
            d as f64 / n as f64
        };
        // the label's first line starts at (10, 10), the notes line below it; on the bare white
        // image (no plate) both regions would be white but for the white or coloured glyphs
        let under_label = dark(11, 40, 11, 22);
        let under_note = dark(11, 40, 25, 33);
        assert!(under_label > 0.3, "{under_label}");
        assert!(under_note > 0.3, "{under_note}");
        // well inside the box, below the text: white
        assert!(dark(40, 100, 60, 100) < 0.01);
        // a second class on the same box puts its plate below the first one's, not over it
        let two = |b: &Drawn| {
            let mut c = b.clone();
            c.category = 2;
            c.notes.clear();
            draw(&img, &[b.clone(), c], 4).unwrap()
        };
        let b = Drawn {
            bbox: [2.0, 2.0, 28.0, 28.0],
            category: 1,
            label: "shirt 0.93".into(),
            notes: vec![],
            ground_truth: false,
        };
        let one = draw(&img, std::slice::from_ref(&b), 4).unwrap();
        let both = two(&b);
        // the first label's pixels (inside the box's outline) are unchanged by the second label
        for y in 11..22 {
            for x in 11..60 {
                assert_eq!(one.get_pixel(x, y), both.get_pixel(x, y), "({x}, {y})");
            }
        }
        // and the second one sits right below it: dark where the first picture is white
        assert_eq!(one.get_pixel(12, 30).0, [255, 255, 255]);
        assert_ne!(both.get_pixel(12, 30).0, [255, 255, 255]);
    }
}
