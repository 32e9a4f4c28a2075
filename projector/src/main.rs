//! The projector binary: its flags, then [`projector::App`] in the shape
//! every binary shares (`dynabridge_runtime::service::main`).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// Projects the event store's stream into the read models and publishes
/// every event.
#[derive(Debug, Parser)]
#[command(name = "projector", version, about)]
struct Cli {
    #[command(flatten)]
    config: projector::Config,
}

// mimalloc instead of the system allocator: allocation is a large share of
// each request's CPU (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    dynabridge_runtime::service::main::<projector::App>(Cli::parse().config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
