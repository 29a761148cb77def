//! Seeded parameter initialisation.
//!
//! candle's `VarMap` draws initial weights from an unseeded thread RNG, so two runs with the same
//! config start from different weights (the paper's code never sets seeds either). This backend
//! gives every parameter its own RNG stream derived from (seed, parameter name): runs are
//! reproducible, and independent of the order in which a model builds its layers.

use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::NormalOrUniform;
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

pub struct SeededVarMap {
    pub varmap: VarMap,
    pub seed: u64,
}

/// A `VarBuilder` that creates parameters in `varmap` with initial values drawn from `seed`.
pub fn seeded_var_builder(varmap: &VarMap, seed: u64, device: &Device) -> VarBuilder<'static> {
    let backend: Box<dyn SimpleBackend> = Box::new(SeededVarMap {
        varmap: varmap.clone(),
        seed,
    });
    VarBuilder::from_backend(backend, DType::F32, device.clone())
}

/// FNV-1a of the name mixed with the seed: a stable per-parameter stream id.
fn stream(seed: u64, name: &str) -> u64 {
    let mut h = 0xcbf29ce484222325u64 ^ seed.wrapping_mul(0x9E3779B97F4A7C15);
    for b in name.bytes() {
        h ^= b as u64;
        h = h.wrapping_mul(0x100000001b3);
    }
    h
}

fn init_values(init: Init, shape: &Shape, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let n = shape.elem_count();
    let uniform = |rng: &mut ChaCha8Rng, lo: f64, up: f64| {
        (0..n).map(|_| rng.random_range(lo..up) as f32).collect()
    };
    let normal = |rng: &mut ChaCha8Rng, mean: f64, std: f64| {
        // Box–Muller: two uniforms per pair of normals.
        let mut out = Vec::with_capacity(n + 1);
        while out.len() < n {
            let u1: f64 = rng.random_range(f64::MIN_POSITIVE..1.0);
            let u2: f64 = rng.random();
            let r = (-2.0 * u1.ln()).sqrt();
            let th = 2.0 * std::f64::consts::PI * u2;
            out.push((mean + std * r * th.cos()) as f32);
            out.push((mean + std * r * th.sin()) as f32);
        }
        out.truncate(n);
        out
    };
    match init {
        Init::Const(v) => vec![v as f32; n],
        Init::Uniform { lo, up } => uniform(rng, lo, up),
        Init::Randn { mean, stdev } => normal(rng, mean, stdev),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let std = non_linearity.gain() / (fan.for_shape(shape) as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    uniform(rng, -bound, bound)
                }
                NormalOrUniform::Normal => normal(rng, 0.0, std),
            }
        }
    }
}

impl SimpleBackend for SeededVarMap {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self.varmap.data().lock().expect("varmap lock");
        if let Some(var) = data.get(name) {
            let t = var.as_tensor();
            if t.shape() != &s {
                candle_core::bail!("shape mismatch for {name}: {:?} vs {:?}", t.shape(), s)
            }
            return Ok(t.clone());
        }
        let mut rng = ChaCha8Rng::seed_from_u64(stream(self.seed, name));
        let values = init_values(h, &s, &mut rng);
        let var = Var::from_tensor(&Tensor::from_vec(values, s, dev)?.to_dtype(dtype)?)?;
        let t = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(t)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, dev: &Device) -> Result<Tensor> {
        self.varmap.get_unchecked(name, dtype, dev)
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap.contains_tensor(name)
    }
}

/// The trainable parameters of `varmap` by name, sorted (BatchNorm running statistics excluded).
pub fn trainable_vars(varmap: &VarMap) -> Vec<(String, candle_core::Var)> {
    let data = varmap.data().lock().expect("varmap lock");
    let mut v: Vec<_> = data
        .iter()
        .filter(|(n, _)| !crate::student::is_running_stat(n))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_nn::init::DEFAULT_KAIMING_UNIFORM;

    #[test]
    fn same_seed_same_weights_any_order() {
        let dev = Device::Cpu;
        let build = |seed, order: &[&str]| {
            let vm = VarMap::new();
            let vb = seeded_var_builder(&vm, seed, &dev);
            for name in order {
                vb.get_with_hints((64, 32), name, DEFAULT_KAIMING_UNIFORM)
                    .unwrap();
            }
            let data = vm.data().lock().unwrap();
            data.get("a")
                .unwrap()
                .as_tensor()
                .flatten_all()
                .unwrap()
                .to_vec1::<f32>()
                .unwrap()
        };
        let x = build(7, &["a", "b"]);
        assert_eq!(x, build(7, &["b", "a"]));
        assert_ne!(x, build(8, &["a", "b"]));
        // Kaiming uniform, ReLU gain √2, fan_in 32: bound = √3·√2/√32 ≈ 0.433; a sample of 2048 fills it.
        let bound = (6.0f32 / 32.0).sqrt();
        let max = x.iter().fold(0f32, |m, v| m.max(v.abs()));
        assert!(max <= bound && max > 0.95 * bound, "{max} vs {bound}");
    }

    #[test]
    fn normal_init_has_the_requested_moments() {
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, 1, &Device::Cpu);
        let t = vb
            .get_with_hints(
                10_000,
                "w",
                Init::Randn {
                    mean: 1.0,
                    stdev: 2.0,
                },
            )
            .unwrap();
        let v = t.to_vec1::<f32>().unwrap();
        let mean = v.iter().sum::<f32>() / v.len() as f32;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / v.len() as f32;
        assert!(
            (mean - 1.0).abs() < 0.06 && (var.sqrt() - 2.0).abs() < 0.06,
            "{mean} {var}"
        );
    }
}
