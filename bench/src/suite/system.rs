//! The system under test: the store, the services, the echo service and
//! the projector, each a process of its own, and the in-process parts (the
//! storage ceiling, our library, the peer).

use super::*;

/// The running system.
pub(super) struct System {
    pub(super) store: Proc,
    pub(super) command: Proc,
    pub(super) query: Proc,
    pub(super) echo: Proc,
    pub(super) projector: Option<Proc>,
    pub(super) dynamodb: String,
    pub(super) storage: Storage,
    /// Our command handler as a library in this process, as the peer is.
    pub(super) library: Library,
    pub(super) peer: Peer,
    /// The event store's copy without its index (see `shapes`).
    pub(super) unindexed: String,
    /// Where the projector publishes, if not to a file.
    pub(super) eventbridge: Option<String>,
    /// The AWS calls this process makes (ceilings, peer), as metrics.
    pub(super) own_metrics: prometheus::Registry,
}

impl System {
    pub(super) async fn start() -> anyhow::Result<Self> {
        let store = Proc::spawn(
            "embedded store",
            false,
            &args(&["store", "--table-prefix", PREFIX]),
        )
        .await?;
        let dynamodb = store.addr("dynamodb")?;
        let command = spawn_command(&dynamodb).await?;
        let query = Proc::spawn("query service", true, &service_args("query", &dynamodb)).await?;
        let echo = Proc::spawn(
            "echo service",
            false,
            &args(&[
                "echo",
                "--endpoint-url",
                &dynamodb,
                "--table-prefix",
                PREFIX,
            ]),
        )
        .await?;

        let aws = AwsArgs {
            endpoint_url: Some(dynamodb.clone()),
            region: Some("us-east-1".into()),
        };
        let sdk = local_stack::embedded_sdk_config(&aws, true).await;
        let client = dynabridge_aws::dynamodb_client(&sdk);
        let own_metrics = prometheus::Registry::new();
        dynabridge_aws::register_call_metrics(&own_metrics)?;
        let storage = Storage::new(client.clone(), Tables::new(PREFIX));
        let library = Library::new(client.clone(), Tables::new(PREFIX))?;
        // The same client, also asking DynamoDB for the capacity the
        // peer's calls consume (dynamo-es does not ask).
        let peer_client = aws_sdk_dynamodb::Client::from_conf(
            client
                .config()
                .to_builder()
                .interceptor(crate::capacity::AskForCapacity)
                .build(),
        );
        let peer = Peer::setup(peer_client, PREFIX).await?;
        let unindexed = shapes::unindexed_table(&client, &Tables::new(PREFIX)).await?;
        Ok(Self {
            store,
            command,
            query,
            echo,
            projector: None,
            dynamodb,
            storage,
            library,
            peer,
            unindexed,
            eventbridge: None,
            own_metrics,
        })
    }

    pub(super) fn command_url(&self) -> anyhow::Result<String> {
        Ok(format!("http://{}", self.command.addr("grpc")?))
    }

    pub(super) fn query_url(&self) -> anyhow::Result<String> {
        Ok(format!("http://{}", self.query.addr("grpc")?))
    }

    pub(super) fn echo_url(&self) -> anyhow::Result<String> {
        Ok(format!("http://{}", self.echo.addr("grpc")?))
    }

    pub(super) fn own_scrape(&self) -> Scrape {
        Scrape::parse(&dynabridge_runtime::telemetry::metrics::render(
            &self.own_metrics,
        ))
    }

    pub(super) async fn start_projector(&mut self) -> anyhow::Result<()> {
        let projector = match &self.eventbridge {
            // The events go to a file: the embedded default has no
            // EventBridge.
            None => {
                let mut args = service_args("projector", &self.dynamodb);
                let sink =
                    std::env::temp_dir().join(format!("loadgen-sink-{}.jsonl", std::process::id()));
                args.extend(["--sink-path".to_owned(), sink.display().to_string()]);
                args.extend(["--health-listen".to_owned(), "127.0.0.1:0".to_owned()]);
                Proc::spawn("projector", true, &args).await?
            }
            // One endpoint per service, from the standard variables.
            Some(eventbridge) => {
                let bus = Tables::new(PREFIX).event_bus();
                let args = args(&[
                    "projector",
                    "--region",
                    "us-east-1",
                    "--table-prefix",
                    PREFIX,
                    "--metrics-listen",
                    "127.0.0.1:0",
                    "--health-listen",
                    "127.0.0.1:0",
                    "--event-bus",
                    &bus,
                ]);
                let env = [
                    ("AWS_ENDPOINT_URL_DYNAMODB", self.dynamodb.as_str()),
                    ("AWS_ENDPOINT_URL_DYNAMODB_STREAMS", self.dynamodb.as_str()),
                    ("AWS_ENDPOINT_URL_EVENTBRIDGE", eventbridge.as_str()),
                ];
                Proc::spawn_with_env("projector", true, &args, &env).await?
            }
        };
        self.projector = Some(projector);
        Ok(())
    }

    /// Publishes to the bus at `endpoint` from now on, provisioning it
    /// there (bus, archive, rules) as the projector expects it.
    pub(super) async fn publish_to(&mut self, endpoint: &str) -> anyhow::Result<()> {
        let aws = AwsArgs {
            endpoint_url: Some(endpoint.to_owned()),
            region: Some("us-east-1".into()),
        };
        let sdk =
            dynabridge_aws::load_sdk_config(&aws, Some(dynabridge_aws::StaticCredentials::local()))
                .await;
        let client = dynabridge_aws::eventbridge_client(&sdk);
        dynabridge_provision::event_bus::ensure_event_bus(
            &client,
            &Tables::new(PREFIX),
            &dynabridge_provision::event_bus::EventBusOptions::default(),
        )
        .await
        .with_context(|| format!("provisioning the event bus at {endpoint}"))?;
        self.eventbridge = Some(endpoint.to_owned());
        Ok(())
    }

    pub(super) async fn stop(self) -> anyhow::Result<()> {
        let mut result = Ok(());
        for proc in [
            Some(self.command),
            Some(self.query),
            Some(self.echo),
            self.projector,
        ]
        .into_iter()
        .flatten()
        {
            if let Err(err) = proc.stop().await {
                result = Err(err);
            }
        }
        self.store.stop().await?;
        result
    }
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

fn service_args(role: &str, dynamodb: &str) -> Vec<String> {
    let mut out = args(&[
        role,
        "--endpoint-url",
        dynamodb,
        "--region",
        "us-east-1",
        "--table-prefix",
        PREFIX,
        "--metrics-listen",
        "127.0.0.1:0",
    ]);
    if role != "projector" {
        out.extend(["--listen".to_owned(), "127.0.0.1:0".to_owned()]);
    }
    out
}

pub(super) async fn spawn_command(dynamodb: &str) -> anyhow::Result<Proc> {
    Proc::spawn("command service", true, &service_args("command", dynamodb)).await
}
