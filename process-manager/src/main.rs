//! The process manager binary: its flags, then [`process_manager::App`] in
//! the shape every binary shares (`dynabridge_runtime::service::main`).
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// Follows the event store's stream and takes each purchase through its
/// steps: stock reserved, order created, or the purchase rejected.
#[derive(Debug, Parser)]
#[command(name = "process-manager", version, about)]
struct Cli {
    #[command(flatten)]
    config: process_manager::Config,
}

// mimalloc instead of the system allocator, as every binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    dynabridge_runtime::service::main::<process_manager::App>(Cli::parse().config)
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
