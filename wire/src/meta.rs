//! Metadata carried inside tensor payloads, so one body describes itself: an upload names its
//! run, round, client and sample count; a download names its run, round and PSG layout.
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::{check_id, Error, Limits, PsgLayout, PsgSpec, Result, PROTOCOL_VERSION};

/// A struct that travels as JSON in a payload's safetensors `__metadata__`.
pub trait PayloadMeta: Serialize + DeserializeOwned {
    /// The `kind` field written next to the struct's fields: keeps a download from being
    /// accepted as an upload (and vice versa) with a clear error.
    const KIND: &'static str;

    /// Checks beyond the JSON shape: ids, counts, agreement with the spec being decoded.
    fn check(&self, spec: &PsgSpec, limits: &Limits) -> Result<()>;
}

/// Metadata of a client's update for round k (`kind: "update"`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpdateMeta {
    pub protocol: u32,
    pub run: String,
    pub round: u32,
    pub client: String,
    /// Local training examples behind this update: its FedAvg weight.
    pub num_samples: u64,
}

impl UpdateMeta {
    pub fn new(run: impl Into<String>, round: u32, client: impl Into<String>, n: u64) -> Self {
        Self {
            protocol: PROTOCOL_VERSION,
            run: run.into(),
            round,
            client: client.into(),
            num_samples: n,
        }
    }

    /// The server's check that the body is for the URL's run and round and the token's client.
    pub fn check_matches(&self, run: &str, round: u32, client: &str) -> Result<()> {
        let mismatch = |field, expected: String, found: String| {
            Err(Error::MetaMismatch {
                field,
                expected,
                found,
            })
        };
        if self.run != run {
            return mismatch("run", run.into(), self.run.clone());
        }
        if self.round != round {
            return mismatch("round", round.to_string(), self.round.to_string());
        }
        if self.client != client {
            return mismatch("client", client.into(), self.client.clone());
        }
        Ok(())
    }
}

impl PayloadMeta for UpdateMeta {
    const KIND: &'static str = "update";

    fn check(&self, _spec: &PsgSpec, limits: &Limits) -> Result<()> {
        check_id("run", &self.run).map_err(as_meta)?;
        check_id("client", &self.client).map_err(as_meta)?;
        if self.num_samples == 0 || self.num_samples > limits.max_num_samples {
            return Err(Error::NumSamples {
                value: self.num_samples,
                max: limits.max_num_samples,
            });
        }
        Ok(())
    }
}

/// Metadata of the PSG φ_k a client downloads for round k (`kind: "round"`); the final PSG
/// φ_R of a run of R rounds carries `round: R`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoundMeta {
    pub protocol: u32,
    pub run: String,
    pub round: u32,
    /// Lets a client refuse a PSG built for another model before using it.
    pub layout: PsgLayout,
}

impl RoundMeta {
    pub fn new(run: impl Into<String>, round: u32, layout: PsgLayout) -> Self {
        Self {
            protocol: PROTOCOL_VERSION,
            run: run.into(),
            round,
            layout,
        }
    }
}

impl PayloadMeta for RoundMeta {
    const KIND: &'static str = "round";

    fn check(&self, spec: &PsgSpec, _limits: &Limits) -> Result<()> {
        check_id("run", &self.run).map_err(as_meta)?;
        self.layout.validate().map_err(as_meta)?;
        if self.layout.spec()? != *spec {
            return Err(Error::MetadataInvalid(format!(
                "layout ({:?}, L = {}, r_max = {}, hidden_mul = {}, hidden = {:?}) does not match \
                 the expected network",
                self.layout.kind,
                self.layout.num_layers,
                self.layout.r_max,
                self.layout.hidden_mul,
                self.layout.hidden
            )));
        }
        Ok(())
    }
}

/// A bad field inside payload metadata is a bad payload (422), not a bad request (400).
pub(crate) fn as_meta(e: Error) -> Error {
    match e {
        Error::InvalidField { .. } | Error::InvalidSpec(_) => Error::MetadataInvalid(e.to_string()),
        e => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn update_meta_matches_the_request() {
        let m = UpdateMeta::new("run1", 3, "c7", 100);
        assert!(m.check_matches("run1", 3, "c7").is_ok());
        for (run, round, client, field) in [
            ("run2", 3, "c7", "run"),
            ("run1", 4, "c7", "round"),
            ("run1", 3, "c8", "client"),
        ] {
            let e = m.check_matches(run, round, client);
            assert!(
                matches!(e, Err(Error::MetaMismatch { field: f, .. }) if f == field),
                "{e:?}"
            );
            assert_eq!(e.err().map(|e| e.code().http_status()), Some(422));
        }
    }

    #[test]
    fn update_meta_json_rejects_typos() {
        let ok = r#"{"protocol":1,"run":"r","round":0,"client":"c","num_samples":5}"#;
        assert!(serde_json::from_str::<UpdateMeta>(ok).is_ok());
        let typo = r#"{"protocol":1,"run":"r","round":0,"client":"c","num_sample":5}"#;
        assert!(serde_json::from_str::<UpdateMeta>(typo).is_err());
    }
}
