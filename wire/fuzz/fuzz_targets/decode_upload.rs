//! Any bytes given to the upload decoder: it must never panic, hang or over-allocate, and
//! whatever it accepts must be a valid update.
#![no_main]

use fedp2eft_wire::{CreateRun, Limits, PsgParams, PsgSpec, RoundMeta, UpdateMeta};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    // The seeds (scripts/fuzz-wire.sh) are payloads of this spec: L = 2, r_max = 3.
    let Ok(spec) = PsgSpec::for_psg(2, 3, 2) else {
        return;
    };
    let limits = Limits::for_spec(&spec);
    if let Ok((p, meta)) = PsgParams::decode::<UpdateMeta>(bytes, &spec, &limits) {
        assert!(spec.check(&p).is_ok() && p.check_finite().is_ok());
        assert!(meta.num_samples >= 1 && meta.num_samples <= limits.max_num_samples);
    }
    // The same bytes as the server's other payload decoders see them.
    let _ = PsgParams::decode::<RoundMeta>(bytes, &spec, &limits);
    let _ = CreateRun::decode(bytes, &limits);
});
