//! CenterNet's training targets, built on the CPU from ground-truth boxes, and the decoding of
//! the network's output back into boxes.
//!
//! Per object (crowd boxes and boxes of zero width or height are skipped): its centre in output
//! cells `c = box centre / stride`, the integer cell `⌊c⌋` (its flat index `y·w + x` is what the
//! size, offset and object-aspect losses read), the offset target `c − ⌊c⌋` in [0, 1), the size
//! target `(w, h) / stride` **in output cells**, and a Gaussian on its class's heatmap channel
//! with CenterNet's radius (the largest shift of a box corner that keeps IoU ≥ 0.7 with the
//! ground truth) and σ = (2r + 1) / 6, merged with the other objects' by element-wise max.
//! At most `max_objects` objects per image get a slot; the rest still get their Gaussian.

use candle_core::{Device, Tensor};

use crate::data::detection::BoxAnn;
use crate::detect::centernet::CenterNet;

/// Default number of object slots per image.
pub const MAX_OBJECTS: usize = 128;

/// IoU CenterNet keeps between a ground-truth box and one whose corners moved by the radius.
const MIN_OVERLAP: f32 = 0.7;

/// CenterNet's Gaussian radius for a box of `height × width` (output cells): the smallest of the
/// three corner-shift radii (both corners in, both out, one in one out) that keep IoU ≥
/// `min_overlap`, each the larger root of its quadratic. As in CenterNet, the quadratics are
/// the ones of its released code (their `r = (b + √(b² − 4ac)) / 2` form, not `/ 2a`), so the
/// radii match the published detector's.
pub fn gaussian_radius(height: f32, width: f32, min_overlap: f32) -> f32 {
    let root = |a: f32, b: f32, c: f32| (b + (b * b - 4.0 * a * c).max(0.0).sqrt()) / 2.0;
    let (h, w, o) = (height, width, min_overlap);
    let r1 = root(1.0, h + w, w * h * (1.0 - o) / (1.0 + o));
    let r2 = root(4.0, 2.0 * (h + w), (1.0 - o) * w * h);
    let r3 = root(4.0 * o, -2.0 * o * (h + w), (o - 1.0) * w * h);
    r1.min(r2).min(r3)
}

/// Targets of a batch, flat row-major buffers.
#[derive(Clone, Debug, PartialEq)]
pub struct Targets {
    pub batch: usize,
    pub num_classes: usize,
    /// Output map height and width (input side / stride).
    pub height: usize,
    pub width: usize,
    /// Object slots per image.
    pub k: usize,
    /// `[N, C, h, w]`, 1 exactly at object centres.
    pub heatmap: Vec<f32>,
    /// `[N, K]` flat index `y·w + x` of each slot's centre cell (0 for empty slots).
    pub indices: Vec<u32>,
    /// `[N, K]` 1 for a slot holding an object, 0 for an empty one.
    pub mask: Vec<f32>,
    /// `[N, K, 2]` box (w, h) in output cells.
    pub size: Vec<f32>,
    /// `[N, K, 2]` centre offset (x, y) within its cell, in [0, 1).
    pub offset: Vec<f32>,
    /// For each image, the index in its input box list of the object in each filled slot (slot
    /// j holds `slot_boxes[i][j]`): what per-object targets (aspect P(yes)) are laid out by.
    pub slot_boxes: Vec<Vec<usize>>,
}

/// [`Targets`] as tensors on a device.
#[derive(Clone, Debug)]
pub struct TargetTensors {
    /// `[N, C, h, w]` f32.
    pub heatmap: Tensor,
    /// `[N, K]` u32.
    pub indices: Tensor,
    /// `[N, K]` f32.
    pub mask: Tensor,
    /// `[N, K, 2]` f32.
    pub size: Tensor,
    /// `[N, K, 2]` f32.
    pub offset: Tensor,
}

impl Targets {
    /// Targets for square inputs of side `input_size` (a multiple of the stride) holding the
    /// boxes `boxes_per_image` (input pixels).
    pub fn build(
        boxes_per_image: &[Vec<BoxAnn>],
        num_classes: usize,
        input_size: usize,
        max_objects: usize,
    ) -> Targets {
        let stride = CenterNet::STRIDE;
        let (h, w) = (input_size / stride, input_size / stride);
        let n = boxes_per_image.len();
        let k = max_objects;
        let mut t = Targets {
            batch: n,
            num_classes,
            height: h,
            width: w,
            k,
            heatmap: vec![0.0; n * num_classes * h * w],
            indices: vec![0; n * k],
            mask: vec![0.0; n * k],
            size: vec![0.0; n * k * 2],
            offset: vec![0.0; n * k * 2],
            slot_boxes: vec![Vec::new(); n],
        };
        for (i, boxes) in boxes_per_image.iter().enumerate() {
            for (b, ann) in boxes.iter().enumerate() {
                let [x, y, bw, bh] = ann.bbox;
                if ann.iscrowd || bw <= 0.0 || bh <= 0.0 || ann.category >= num_classes {
                    continue;
                }
                let s = stride as f32;
                let (cw, ch) = (bw / s, bh / s);
                let cx = ((x + bw / 2.0) / s).clamp(0.0, w as f32 - 1e-3);
                let cy = ((y + bh / 2.0) / s).clamp(0.0, h as f32 - 1e-3);
                let (ix, iy) = (cx.floor() as usize, cy.floor() as usize);
                let radius = gaussian_radius(ch.ceil(), cw.ceil(), MIN_OVERLAP).max(0.0) as usize;
                let channel = &mut t.heatmap[(i * num_classes + ann.category) * h * w..][..h * w];
                draw_gaussian(channel, w, h, ix, iy, radius);
                let slot = t.slot_boxes[i].len();
                if slot >= k {
                    continue;
                }
                t.slot_boxes[i].push(b);
                let j = i * k + slot;
                t.indices[j] = (iy * w + ix) as u32;
                t.mask[j] = 1.0;
                t.size[2 * j] = cw;
                t.size[2 * j + 1] = ch;
                t.offset[2 * j] = cx - ix as f32;
                t.offset[2 * j + 1] = cy - iy as f32;
            }
        }
        t
    }

    /// Number of filled slots (objects with a size/offset target) in the batch.
    pub fn num_objects(&self) -> usize {
        self.mask.iter().filter(|&&m| m > 0.0).count()
    }

    pub fn to_tensors(&self, device: &Device) -> candle_core::Result<TargetTensors> {
        let (n, k) = (self.batch, self.k);
        Ok(TargetTensors {
            heatmap: Tensor::from_slice(
                &self.heatmap,
                (n, self.num_classes, self.height, self.width),
                device,
            )?,
            indices: Tensor::from_slice(&self.indices, (n, k), device)?,
            mask: Tensor::from_slice(&self.mask, (n, k), device)?,
            size: Tensor::from_slice(&self.size, (n, k, 2), device)?,
            offset: Tensor::from_slice(&self.offset, (n, k, 2), device)?,
        })
    }
}

/// Max-merge a Gaussian of radius `radius` (σ = (2r + 1) / 6, 1 at the centre, values below
/// f32's epsilon times the peak dropped) centred at cell (`cx`, `cy`) into `map` (`h × w`).
fn draw_gaussian(map: &mut [f32], w: usize, h: usize, cx: usize, cy: usize, radius: usize) {
    let sigma = (2 * radius + 1) as f32 / 6.0;
    let r = radius as isize;
    for dy in -r..=r {
        for dx in -r..=r {
            let (x, y) = (cx as isize + dx, cy as isize + dy);
            if x < 0 || y < 0 || x >= w as isize || y >= h as isize {
                continue;
            }
            let g = (-((dx * dx + dy * dy) as f32) / (2.0 * sigma * sigma)).exp();
            if g < f32::EPSILON {
                continue;
            }
            let cell = &mut map[y as usize * w + x as usize];
            *cell = cell.max(g);
        }
    }
}

/// A detection in input pixels.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded {
    /// `[x, y, w, h]` in input pixels.
    pub bbox: [f32; 4],
    /// Heatmap channel (index into the dataset's categories).
    pub category: usize,
    /// Sigmoid of the peak's logit.
    pub score: f32,
}

fn sigmoid(x: f32) -> f32 {
    if x >= 0.0 {
        1.0 / (1.0 + (-x).exp())
    } else {
        let e = x.exp();
        e / (1.0 + e)
    }
}

/// Boxes from one forward pass: per image, the `top_k` highest-scoring peaks over all classes,
/// a peak being a cell whose score equals the maximum of its 3×3 neighbourhood (CenterNet's
/// max-pool suppression, done here on the CPU). `heatmap_logits` `[N, C, h, w]`, `size` and
/// `offset` `[N, 2, h, w]` as [`crate::detect::centernet::Outputs`] gives them.
pub fn decode(
    heatmap_logits: &Tensor,
    size: &Tensor,
    offset: &Tensor,
    top_k: usize,
) -> candle_core::Result<Vec<Vec<Decoded>>> {
    let (n, c, h, w) = heatmap_logits.dims4()?;
    for (name, t) in [("size", size), ("offset", offset)] {
        if t.dims() != [n, 2, h, w] {
            candle_core::bail!(
                "decode: {name} has shape {:?}, want {:?}",
                t.dims(),
                [n, 2, h, w]
            );
        }
    }
    let to_vec = |t: &Tensor| -> candle_core::Result<Vec<f32>> {
        t.to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()
    };
    let scores: Vec<f32> = to_vec(heatmap_logits)?.into_iter().map(sigmoid).collect();
    let size = to_vec(size)?;
    let offset = to_vec(offset)?;
    let stride = CenterNet::STRIDE as f32;
    let hw = h * w;
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let mut peaks: Vec<(f32, usize, usize)> = Vec::new();
        for ch in 0..c {
            let map = &scores[(i * c + ch) * hw..][..hw];
            for y in 0..h {
                for x in 0..w {
                    let v = map[y * w + x];
                    let mut is_peak = true;
                    'window: for ny in y.saturating_sub(1)..(y + 2).min(h) {
                        for nx in x.saturating_sub(1)..(x + 2).min(w) {
                            if map[ny * w + nx] > v {
                                is_peak = false;
                                break 'window;
                            }
                        }
                    }
                    if is_peak {
                        peaks.push((v, ch, y * w + x));
                    }
                }
            }
        }
        peaks.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)));
        peaks.truncate(top_k);
        let at = |buf: &[f32], comp: usize, cell: usize| buf[(i * 2 + comp) * hw + cell];
        let dets = peaks
            .into_iter()
            .map(|(score, category, cell)| {
                let (x, y) = ((cell % w) as f32, (cell / w) as f32);
                let cx = (x + at(&offset, 0, cell)) * stride;
                let cy = (y + at(&offset, 1, cell)) * stride;
                let bw = at(&size, 0, cell).max(0.0) * stride;
                let bh = at(&size, 1, cell).max(0.0) * stride;
                Decoded {
                    bbox: [cx - bw / 2.0, cy - bh / 2.0, bw, bh],
                    category,
                    score,
                }
            })
            .collect();
        out.push(dets);
    }
    Ok(out)
}

/// IoU of two `[x, y, w, h]` boxes.
pub fn iou(a: &[f32; 4], b: &[f32; 4]) -> f32 {
    let ix = ((a[0] + a[2]).min(b[0] + b[2]) - a[0].max(b[0])).max(0.0);
    let iy = ((a[1] + a[3]).min(b[1] + b[3]) - a[1].max(b[1])).max(0.0);
    let inter = ix * iy;
    let union = a[2] * a[3] + b[2] * b[3] - inter;
    if union <= 0.0 {
        0.0
    } else {
        inter / union
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn ann(bbox: [f32; 4], category: usize) -> BoxAnn {
        BoxAnn {
            bbox,
            category,
            area: bbox[2] * bbox[3],
            iscrowd: false,
        }
    }

    #[test]
    fn radius_matches_centernet_values() {
        // By hand for a 10×10 box, overlap 0.7:
        //   r1: b = 20, c = 100·0.3/1.7 = 17.647; (20 + √(400 − 70.588)) / 2 = 19.0746
        //   r2: a = 4, b = 40, c = 30; (40 + √(1600 − 480)) / 2 = 36.7332
        //   r3: a = 2.8, b = −28, c = −30; (−28 + √(784 + 336)) / 2 = 2.7332
        let r = gaussian_radius(10.0, 10.0, 0.7);
        assert!((r - 2.7332).abs() < 1e-3, "{r}");
        assert!(gaussian_radius(1.0, 1.0, 0.7) < 1.0);
        // larger boxes, larger radii
        assert!(gaussian_radius(20.0, 20.0, 0.7) > r);
    }

    #[test]
    fn targets_peak_at_centres_with_offsets_and_mask() {
        // 64 px input → 16×16 map. Box 0: centre (22, 30) px → cell (5.5, 7.5), size 40×40 px
        // = 10×10 cells, radius 2. Box 1 (class 1): centre (50, 10) → (12.5, 2.5). A crowd box
        // and an empty box are skipped.
        let boxes = vec![
            vec![
                ann([2.0, 10.0, 40.0, 40.0], 0),
                BoxAnn {
                    iscrowd: true,
                    ..ann([0.0, 0.0, 20.0, 20.0], 1)
                },
                ann([44.0, 4.0, 12.0, 12.0], 1),
                ann([5.0, 5.0, 0.0, 3.0], 0),
            ],
            vec![],
        ];
        let t = Targets::build(&boxes, 2, 64, 4);
        assert_eq!((t.height, t.width, t.k), (16, 16, 4));
        assert_eq!(t.num_objects(), 2);
        assert_eq!(t.mask, vec![1., 1., 0., 0., 0., 0., 0., 0.]);
        assert_eq!(t.slot_boxes, vec![vec![0, 2], vec![]]);
        assert_eq!(t.indices[0], 7 * 16 + 5);
        assert_eq!(t.indices[1], 2 * 16 + 12);
        assert_eq!(&t.offset[..4], &[0.5, 0.5, 0.5, 0.5]);
        assert!(t.offset.iter().all(|&o| (0.0..1.0).contains(&o)));
        assert_eq!(&t.size[..4], &[10.0, 10.0, 3.0, 3.0]);
        let ch0 = &t.heatmap[..256];
        assert_eq!(ch0[7 * 16 + 5], 1.0);
        assert_eq!(ch0.iter().filter(|&&v| v == 1.0).count(), 1);
        // radius 2, σ = 5/6, 2σ² = 25/18: one cell right is exp(−18/25), three cells right is
        // outside the radius
        assert!((ch0[7 * 16 + 6] - (-18.0f32 / 25.0).exp()).abs() < 1e-6);
        assert!((ch0[9 * 16 + 7] - (-8.0f32 * 18.0 / 25.0).exp()).abs() < 1e-6);
        assert_eq!(ch0[7 * 16 + 8], 0.0);
        let ch1 = &t.heatmap[256..512];
        assert_eq!(ch1[2 * 16 + 12], 1.0);
        // the crowd box drew nothing on class 1 near (2.5, 2.5)
        assert_eq!(ch1[2 * 16 + 2], 0.0);
        assert!(t.heatmap[512..].iter().all(|&v| v == 0.0));
        // max_objects caps the slots, not the heatmap
        let t1 = Targets::build(&boxes, 2, 64, 1);
        assert_eq!(t1.num_objects(), 1);
        assert_eq!(t1.heatmap, t.heatmap);
        let tt = t.to_tensors(&Device::Cpu).unwrap();
        assert_eq!(tt.heatmap.dims(), &[2, 2, 16, 16]);
        assert_eq!(tt.size.dims(), &[2, 4, 2]);
    }

    /// Logits whose sigmoid is the target heatmap, size and offset maps holding each object's
    /// targets at its centre cell: a perfect network's output.
    pub(crate) fn perfect_outputs(t: &Targets) -> (Tensor, Tensor, Tensor) {
        let logits: Vec<f32> = t
            .heatmap
            .iter()
            .map(|&p| {
                let p = p.clamp(1e-4, 1.0 - 1e-4);
                (p / (1.0 - p)).ln()
            })
            .collect();
        let hw = t.height * t.width;
        let mut size = vec![0.0; t.batch * 2 * hw];
        let mut offset = vec![0.0; t.batch * 2 * hw];
        for i in 0..t.batch {
            for j in 0..t.k {
                if t.mask[i * t.k + j] == 0.0 {
                    continue;
                }
                let cell = t.indices[i * t.k + j] as usize;
                for d in 0..2 {
                    size[(i * 2 + d) * hw + cell] = t.size[(i * t.k + j) * 2 + d];
                    offset[(i * 2 + d) * hw + cell] = t.offset[(i * t.k + j) * 2 + d];
                }
            }
        }
        let dev = Device::Cpu;
        let shape = (t.batch, 2, t.height, t.width);
        (
            Tensor::from_vec(logits, (t.batch, t.num_classes, t.height, t.width), &dev).unwrap(),
            Tensor::from_vec(size, shape, &dev).unwrap(),
            Tensor::from_vec(offset, shape, &dev).unwrap(),
        )
    }

    #[test]
    fn decode_recovers_boxes_from_a_perfect_output() {
        let boxes = vec![
            vec![
                ann([3.0, 5.0, 20.0, 14.0], 0),
                ann([30.0, 33.0, 26.0, 22.0], 2),
                ann([40.0, 2.0, 9.0, 11.0], 0),
            ],
            vec![ann([10.0, 20.0, 33.0, 30.0], 1)],
        ];
        let t = Targets::build(&boxes, 3, 64, MAX_OBJECTS);
        let (hm, size, offset) = perfect_outputs(&t);
        let dets = decode(&hm, &size, &offset, 100).unwrap();
        assert_eq!(dets.len(), 2);
        for (gt, found) in boxes.iter().zip(&dets) {
            // one peak (score 1 − 1e-4) per object; everything after is far below it
            let confident: Vec<&Decoded> = found.iter().filter(|d| d.score > 0.99).collect();
            assert_eq!(confident.len(), gt.len(), "{found:?}");
            for g in gt {
                let d = confident
                    .iter()
                    .find(|d| d.category == g.category && iou(&d.bbox, &g.bbox) > 0.999)
                    .unwrap_or_else(|| panic!("{g:?} not in {confident:?}"));
                for (a, b) in d.bbox.iter().zip(g.bbox) {
                    assert!((a - b).abs() < 1e-4, "{:?} vs {:?}", d.bbox, g.bbox);
                }
            }
        }
        // top_k caps the list; scores come sorted
        let few = decode(&hm, &size, &offset, 2).unwrap();
        assert_eq!(few[0].len(), 2);
        assert!(few[0][0].score >= few[0][1].score);
    }

    #[test]
    fn suppression_keeps_one_peak_per_object() {
        // A 5×5 plateau-free bump: every cell but the centre has a larger neighbour.
        let mut map = vec![0.0f32; 8 * 8];
        draw_gaussian(&mut map, 8, 8, 3, 4, 2);
        let logits: Vec<f32> = map.iter().map(|&p| (p.max(1e-6) * 10.0) - 5.0).collect();
        let hm = Tensor::from_vec(logits, (1, 1, 8, 8), &Device::Cpu).unwrap();
        let zeros = Tensor::zeros((1, 2, 8, 8), candle_core::DType::F32, &Device::Cpu).unwrap();
        let dets = decode(&hm, &zeros, &zeros, 100).unwrap();
        // the bump gives one peak; the flat background (all equal) is its own plateau of peaks,
        // all at the background score
        let bg = sigmoid(1e-6 * 10.0 - 5.0);
        let above: Vec<&Decoded> = dets[0].iter().filter(|d| d.score > bg + 1e-4).collect();
        assert_eq!(above.len(), 1, "{above:?}");
        assert_eq!(above[0].bbox[..2], [3.0 * 4.0, 4.0 * 4.0]);
    }
}
