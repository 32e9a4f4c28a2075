//! `local-stack`: the whole system on 127.0.0.1, for development.
#![forbid(unsafe_code)]

use anyhow::Context as _;
use clap::Parser as _;

// mimalloc instead of the system allocator: allocation is a large share of
// each request's CPU (see BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let options = local_stack::Options::parse();
    // The embedded store's server logs every 4xx answer at warn. A failed
    // condition is an answer the command service expects (a taken email, a
    // version conflict, a retried request): the service logs the refusal
    // itself, at debug.
    dynabridge_runtime::telemetry::init_logs_with("info,dynoxide::server=error");
    let stack = local_stack::start(options)
        .await
        .context("starting the local stack")?;
    println!("{}", stack.endpoints().banner());
    stack
        .run_until(dynabridge_runtime::grpc::shutdown_signal())
        .await
        .context("running the local stack")?;
    Ok(())
}
