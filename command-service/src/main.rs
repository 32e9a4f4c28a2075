//! The command service binary: its flags, then [`command_service::App`] in
//! the shape every binary shares (`dynabridge_runtime::service::main`).

use std::process::ExitCode;

use clap::Parser;

/// The dynabridge command service (`dynabridge.v1.CommandService`).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(flatten)]
    config: command_service::Config,
}

// mimalloc instead of the system allocator: allocation is a large share of
// each request's CPU (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    dynabridge_runtime::service::main::<command_service::App>(Cli::parse().config)
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
