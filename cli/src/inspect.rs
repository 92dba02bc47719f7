//! `fedp2eft inspect`: what a model is and what adapting it costs.
use std::path::Path;

use anyhow::Result;
use candle_core::Device;
use clap::Args;
use fedp2eft_core::model::SeqClassifier;
use serde::Serialize;

use crate::models::{self, ModelSpec};
use crate::progress::spinner;

/// The paper's r_max for BT-LoRA (and FedP²EFT's rank candidates).
pub const R_MAX: usize = 32;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// `e5`, `minilm`, `mbert`, a HF checkpoint folder or an E5S1 file.
    #[arg(long, default_value = "minilm")]
    pub model: ModelSpec,
    /// Labels of the classification head (a head the checkpoint lacks is freshly initialised).
    #[arg(long, default_value_t = 2)]
    pub labels: usize,
    /// List every adapted module with its shape.
    #[arg(long, short)]
    pub verbose: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Serialize, Debug)]
pub struct Module {
    pub name: String,
    pub in_features: usize,
    pub out_features: usize,
}

#[derive(Serialize, Debug)]
pub struct Summary {
    pub model: String,
    pub format: String,
    pub path: String,
    pub architecture: String,
    pub model_type: String,
    pub layers: usize,
    pub hidden: usize,
    pub heads: usize,
    pub intermediate: usize,
    pub vocab: usize,
    pub max_positions: usize,
    pub num_labels: usize,
    /// L: number of adapted linears (every Linear, pooler and classifier included).
    pub adapted: usize,
    pub modules: Vec<Module>,
    pub params_base: usize,
    pub r_max: usize,
    /// What BT-LoRA at r_max on every adapted linear adds: Σ r·(in+out) + r (λ) per layer.
    pub params_bt_lora: usize,
    pub load_seconds: f64,
}

/// Parameters BT-LoRA with rank `r` on every adapted linear adds: A (r×in), B (out×r), λ (r).
pub fn bt_lora_params(model: &SeqClassifier, r: usize) -> usize {
    model
        .linears()
        .iter()
        .map(|l| r * (l.in_features() + l.out_features()) + r)
        .sum()
}

pub fn summarize(spec: &ModelSpec, loaded: &models::Loaded) -> Summary {
    let m = &loaded.model;
    let c = &m.config;
    Summary {
        model: spec.to_string(),
        format: loaded.source.format().into(),
        path: loaded.source.path().display().to_string(),
        architecture: "BERT-family post-LN encoder + pooler + classifier".into(),
        model_type: c.model_type.clone(),
        layers: c.num_hidden_layers,
        hidden: c.hidden_size,
        heads: c.num_attention_heads,
        intermediate: c.intermediate_size,
        vocab: c.vocab_size,
        max_positions: c.max_position_embeddings,
        num_labels: m.num_labels(),
        adapted: m.num_adapted(),
        modules: m
            .linears()
            .iter()
            .map(|l| Module {
                name: l.name.clone(),
                in_features: l.in_features(),
                out_features: l.out_features(),
            })
            .collect(),
        params_base: m.parameter_counts().0,
        r_max: R_MAX,
        params_bt_lora: bt_lora_params(m, R_MAX),
        load_seconds: loaded.load_seconds,
    }
}

pub fn run(args: &InspectArgs, home: &Path) -> Result<()> {
    let source = args.model.source(home)?;
    let pb = (!args.json).then(|| spinner(format!("loading {}", args.model)));
    let loaded = models::load(&source, args.labels, 42, &Device::Cpu);
    if let Some(pb) = pb {
        pb.finish_and_clear();
    }
    let s = summarize(&args.model, &loaded?);
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
        return Ok(());
    }
    println!("model         {} ({}: {})", s.model, s.format, s.path);
    println!("architecture  {} [{}]", s.architecture, s.model_type);
    println!("layers        {}", s.layers);
    println!(
        "hidden        {} ({} heads x {}, FFN {})",
        s.hidden,
        s.heads,
        s.hidden / s.heads.max(1),
        s.intermediate
    );
    println!("vocab         {}", s.vocab);
    println!("max positions {}", s.max_positions);
    println!("labels        {}", s.num_labels);
    println!(
        "L (adapted)   {} ({} layers x 6 + pooler + classifier)",
        s.adapted, s.layers
    );
    println!("params base   {} (frozen)", thousands(s.params_base));
    println!(
        "BT-LoRA r={}  +{} ({:.2} % of base)",
        s.r_max,
        thousands(s.params_bt_lora),
        100.0 * s.params_bt_lora as f64 / s.params_base.max(1) as f64
    );
    println!("load time     {:.2} s", s.load_seconds);
    if args.verbose {
        println!("adapted modules (out x in):");
        for (i, m) in s.modules.iter().enumerate() {
            println!(
                "  {i:>3} {:<45} {} x {}",
                m.name, m.out_features, m.in_features
            );
        }
    }
    Ok(())
}

/// 22713986 → "22,713,986".
pub fn thousands(n: usize) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn thousands_groups_digits() {
        assert_eq!(super::thousands(0), "0");
        assert_eq!(super::thousands(999), "999");
        assert_eq!(super::thousands(1000), "1,000");
        assert_eq!(super::thousands(22713986), "22,713,986");
    }
}
