//! AWS SDK configuration shared by every binary.
//!
//! There is one storage code path: the DynamoDB API through the AWS SDK. The
//! endpoint decides where it goes: AWS by default, or any DynamoDB-compatible
//! endpoint (the embedded store, moto) through `AWS_ENDPOINT_URL` or
//! `--endpoint-url`. Nothing else in the code knows which.
//!
//! The binaries build their clients with [`dynamodb_client`],
//! [`streams_client`] and [`eventbridge_client`], so that the calls they make
//! are always counted, with what they cost ([`register_call_metrics`], see
//! [`calls`]), and can be recorded ([`record_calls_to`], see
//! `recorder.rs`): the IAM test compares what each binary calls with
//! what its role in the CloudFormation template allows.

use std::time::Duration;

use aws_config::{BehaviorVersion, Region, SdkConfig, retry::RetryConfig, timeout::TimeoutConfig};

pub mod calls;
pub mod error;
pub mod item;
mod recorder;

pub use recorder::{CALL_LOG_ENV, CallLogError, record_calls_to};

use crate::calls::AwsCallMetrics;
pub use crate::calls::register_call_metrics;
pub use crate::error::CallError;

/// Where the AWS clients connect, from flags and the environment.
#[derive(Clone, Debug, Default, clap::Args)]
pub struct AwsArgs {
    /// Endpoint for every AWS service, for a local store or an emulator. The
    /// SDK's own `AWS_ENDPOINT_URL` works too.
    #[arg(long = "endpoint-url", env = "DYNABRIDGE_ENDPOINT_URL")]
    pub endpoint_url: Option<String>,
    /// AWS region; falls back to the SDK's chain (`AWS_REGION`, profile), then
    /// to us-east-1.
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
}

/// Fixed credentials, for embedding the services beside a local store.
#[derive(Clone, Debug)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
}

impl StaticCredentials {
    /// Credentials a local store accepts; they grant nothing on AWS.
    pub fn local() -> Self {
        Self {
            access_key_id: "dynabridge-local".into(),
            secret_access_key: "dynabridge-local".into(),
        }
    }
}

/// Loads the SDK configuration: the standard chain (environment, profile,
/// web identity for IRSA, instance metadata), with our timeouts and retries.
pub async fn load_sdk_config(args: &AwsArgs, credentials: Option<StaticCredentials>) -> SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(3))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(2))
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(15))
                .build(),
        );
    if let Some(endpoint) = &args.endpoint_url {
        loader = loader.endpoint_url(endpoint);
    }
    if let Some(region) = &args.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(creds) = credentials {
        loader = loader.credentials_provider(aws_credential_types::Credentials::from_keys(
            creds.access_key_id,
            creds.secret_access_key,
            None,
        ));
    }
    let config = loader.load().await;
    if config.region().is_some() {
        return config;
    }
    config
        .into_builder()
        .region(Region::from_static("us-east-1"))
        .build()
}

/// A DynamoDB client for `sdk`, counting its calls, and recording them if
/// [`record_calls_to`] was called.
pub fn dynamodb_client(sdk: &SdkConfig) -> aws_sdk_dynamodb::Client {
    let mut config = aws_sdk_dynamodb::config::Builder::from(sdk)
        .interceptor(AwsCallMetrics::global().interceptor());
    if let Some(recorder) = recorder::recorder() {
        config = config.interceptor(recorder);
    }
    aws_sdk_dynamodb::Client::from_conf(config.build())
}

/// A DynamoDB Streams client for `sdk`, counting its calls, and recording
/// them if [`record_calls_to`] was called.
pub fn streams_client(sdk: &SdkConfig) -> aws_sdk_dynamodbstreams::Client {
    let mut config = aws_sdk_dynamodbstreams::config::Builder::from(sdk)
        .interceptor(AwsCallMetrics::global().interceptor());
    if let Some(recorder) = recorder::recorder() {
        config = config.interceptor(recorder);
    }
    aws_sdk_dynamodbstreams::Client::from_conf(config.build())
}

/// An EventBridge client for `sdk`, counting its calls, and recording them
/// if [`record_calls_to`] was called.
pub fn eventbridge_client(sdk: &SdkConfig) -> aws_sdk_eventbridge::Client {
    let mut config = aws_sdk_eventbridge::config::Builder::from(sdk)
        .interceptor(AwsCallMetrics::global().interceptor());
    if let Some(recorder) = recorder::recorder() {
        config = config.interceptor(recorder);
    }
    aws_sdk_eventbridge::Client::from_conf(config.build())
}

/// An SQS client for `sdk` (the route planner's), counting its calls, and
/// recording them if [`record_calls_to`] was called.
pub fn sqs_client(sdk: &SdkConfig) -> aws_sdk_sqs::Client {
    let mut config =
        aws_sdk_sqs::config::Builder::from(sdk).interceptor(AwsCallMetrics::global().interceptor());
    if let Some(recorder) = recorder::recorder() {
        config = config.interceptor(recorder);
    }
    aws_sdk_sqs::Client::from_conf(config.build())
}
