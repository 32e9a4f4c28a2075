//! The route planner binary: its flags, then [`route_planner::run`] until
//! SIGTERM or Ctrl-C.
#![forbid(unsafe_code)]

use std::process::ExitCode;

use clap::Parser;

/// Plans a route for every order from an SQS queue of `OrderCreated`
/// events, and records it through `CommandService.CreateRoute`.
#[derive(Debug, Parser)]
#[command(name = "route-planner", version, about)]
struct Cli {
    #[command(flatten)]
    config: route_planner::Config,
}

#[tokio::main]
async fn main() -> ExitCode {
    dynabridge_runtime::grpc::init_tracing();
    let config = Cli::parse().config;
    if let Err(err) = config.validate() {
        eprintln!("route-planner: {err}");
        return ExitCode::from(2);
    }
    match route_planner::run(config, dynabridge_runtime::grpc::shutdown_signal()).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "route planner failed");
            ExitCode::FAILURE
        }
    }
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
