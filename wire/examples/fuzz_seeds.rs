//! Writes valid payloads (an update, a round download, a run creation) into a folder, as the
//! seed corpus of the `decode_upload` fuzz target: `cargo run --example fuzz_seeds -- DIR`.
use fedp2eft_wire::{CreateRun, PsgLayout, PsgParams, RoundMeta, UpdateMeta};

fn main() -> anyhow::Result<()> {
    let dir = std::env::args().nth(1).unwrap_or_else(|| "corpus".into());
    std::fs::create_dir_all(&dir)?;
    // Must match the spec in wire/fuzz/fuzz_targets/decode_upload.rs.
    let layout = PsgLayout {
        kind: fedp2eft_wire::NetKind::Psg,
        hidden: None,
        base_model: "fuzz".into(),
        num_layers: 2,
        r_max: 3,
        hidden_mul: 2,
        feature_layout: "v1".into(),
    };
    let mut p = PsgParams::zeros(&layout.spec()?)?;
    let names: Vec<String> = p.names().map(String::from).collect();
    for name in &names {
        if let Some(t) = p.get_mut(name) {
            for (i, v) in t.data_mut().iter_mut().enumerate() {
                *v = i as f32 * 0.5 - 1.0;
            }
        }
    }
    let seeds = [
        (
            "update",
            p.encode(&UpdateMeta::new("run", 1, "client-1", 64))?,
        ),
        (
            "round",
            p.encode(&RoundMeta::new("run", 1, layout.clone()))?,
        ),
        ("create_run", p.encode(&CreateRun::new("run", layout))?),
    ];
    for (name, bytes) in seeds {
        std::fs::write(format!("{dir}/{name}.safetensors"), bytes)?;
    }
    Ok(())
}
