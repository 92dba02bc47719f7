//! The plain LoRA baseline: rank r on every layer, λ fixed at one (with α = 2r its scaling
//! equals BT-LoRA's α/r_max = 2).
use super::{pruned, Client, Method, Setup};
use crate::Result;

pub struct Lora;

impl Method for Lora {
    fn name(&self) -> &str {
        "LoRA"
    }

    fn setup(&self, client: &Client) -> Result<Setup> {
        // Equal λ everywhere: the tie rule (lower rank index first) keeps ranks 0..r of every
        // layer only if each layer's first r entries rank above the rest, so build them so.
        let r_max = client.lora.r;
        let lambda: Vec<f32> = (0..client.base.num_adapted() * r_max)
            .map(|i| if i % r_max < client.budget { 1.0 } else { 0.0 })
            .collect();
        pruned(client, &lambda, None)
    }
}
