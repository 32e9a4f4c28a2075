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
    dynabridge_runtime::grpc::init_tracing();
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
