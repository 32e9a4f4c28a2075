//! The query service binary: its flags, then [`query_service::App`] in the
//! shape every binary shares (`dynabridge_runtime::service::main`).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// The read side of dynabridge: dynabridge.v1.QueryService over the read models.
#[derive(Debug, Parser)]
#[command(name = "query-service", version, about)]
struct Cli {
    #[command(flatten)]
    config: query_service::Config,
}

// mimalloc instead of the system allocator: allocation is a large share of
// each request's CPU (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    dynabridge_runtime::service::main::<query_service::App>(Cli::parse().config)
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
