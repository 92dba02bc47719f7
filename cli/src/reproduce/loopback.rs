//! The federation the PSG and FedL2P stages share: a loopback aggregation server under the
//! stage's folder, one run of the remaining rounds, every seen client enrolled with its own
//! token. A resumed stage starts a new server run from its last saved round.
use std::path::Path;

use anyhow::Result;
use fedp2eft_core::data::ClientData;
use fedp2eft_core::federated::http::{Admin, FedClient};
use fedp2eft_core::Control;
use fedp2eft_wire::{CreateRun, PsgLayout, PsgParams};

use crate::rounds::Federation;
use crate::serve::LoopbackServer;

pub struct Loopback<'a> {
    pub server: LoopbackServer,
    pub admin: Admin,
    pub run: String,
    pub layout: PsgLayout,
    pub clients: Vec<(&'a ClientData, FedClient)>,
}

impl Loopback<'_> {
    pub fn federation(&self) -> Federation<'_> {
        Federation {
            admin: &self.admin,
            run: &self.run,
            layout: &self.layout,
        }
    }
}

/// Starts the server in `dir`, creates `run` (its name, layout, rounds, seed and stage 2 set by
/// the caller) with `params0` as φ_start, `clients_per_round` of `seen` selected per round and
/// every selected client awaited, and enrolls `seen`.
pub fn start<'a>(
    dir: &Path,
    start: u32,
    mut run: CreateRun,
    clients_per_round: usize,
    params0: &PsgParams,
    seen: &[&'a ClientData],
    ctl: &Control,
) -> Result<Loopback<'a>> {
    let token = format!("reproduce-{}-admin-token", std::process::id());
    let server = LoopbackServer::start(&token, dir.join(format!("server-from-{start}")))?;
    let admin = Admin::new(&server.url, &token)?;
    run.fraction = (clients_per_round as f64 / seen.len() as f64).min(1.0);
    run.min_completion = 1.0;
    run.deadline_s = 7 * 24 * 3600;
    admin.create_run_with(&run, params0, ctl)?;
    let mut clients = Vec::with_capacity(seen.len());
    for c in seen {
        let e = admin.enroll(&run.name, &c.id, fedp2eft_wire::Pool::Seen, ctl)?;
        clients.push((*c, FedClient::new(&server.url, &run.name, &e.token)?));
    }
    Ok(Loopback {
        server,
        admin,
        run: run.name,
        layout: run.layout,
        clients,
    })
}
