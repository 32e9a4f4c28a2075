//! The admin service binary: its flags, then [`admin_service::App`] in the
//! shape every binary shares (`dynabridge_runtime::service::main`).

use std::process::ExitCode;

use clap::Parser;

/// Operating dynabridge: dynabridge.v1.AdminService over the event store.
#[derive(Debug, Parser)]
#[command(name = "admin-service", version, about)]
struct Cli {
    #[command(flatten)]
    config: admin_service::Config,
}

// mimalloc instead of the system allocator, as every binary.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    dynabridge_runtime::service::main::<admin_service::App>(Cli::parse().config)
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
