//! The HTTP API: `app(state)` builds the router; one file per resource.
mod app;
mod client;
mod extract;
mod ops;
mod rounds;
mod runs;

pub use app::app;
