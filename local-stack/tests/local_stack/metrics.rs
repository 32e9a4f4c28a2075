//! The local stack's one `/metrics` endpoint, scraped over HTTP.

use std::collections::BTreeMap;

use dynabridge::pb;
use dynabridge::pb::command_service_client::CommandServiceClient;
use dynabridge::pb::query_service_client::QueryServiceClient;
use local_stack::Options;

use crate::helpers::{DEADLINE, eventually, free_ports, scrape, spawn_stack};

/// One sample of a scrape.
#[derive(Debug)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

impl Sample {
    fn has(&self, labels: &[(&str, &str)]) -> bool {
        labels
            .iter()
            .all(|(k, v)| self.labels.get(*k).is_some_and(|found| found == v))
    }
}

/// A scrape in the Prometheus text format: the families its `# TYPE` lines
/// declare, in order, and its samples.
#[derive(Debug)]
struct Scrape {
    families: Vec<String>,
    samples: Vec<Sample>,
}

impl Scrape {
    fn parse(text: &str) -> Self {
        let mut families = Vec::new();
        let mut samples = Vec::new();
        for line in text.lines().filter(|l| !l.is_empty()) {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split_whitespace().next().expect("a family name");
                families.push(name.to_owned());
            } else if !line.starts_with('#') {
                samples.push(parse_sample(line));
            }
        }
        Self { families, samples }
    }

    /// The samples of `name` with every one of `labels`.
    fn find<'a>(
        &'a self,
        name: &'a str,
        labels: &'a [(&'a str, &'a str)],
    ) -> impl Iterator<Item = &'a Sample> + 'a {
        self.samples
            .iter()
            .filter(move |s| s.name == name && s.has(labels))
    }

    /// The value of the one sample of `name` with `labels`, if there is one.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        let found: Vec<&Sample> = self.find(name, labels).collect();
        match found.as_slice() {
            [] => None,
            [one] => Some(one.value),
            many => panic!("{name} {labels:?} matches {} samples: {many:?}", many.len()),
        }
    }
}

/// `name{label="value",...} value`, with the text format's escapes in label
/// values.
fn parse_sample(line: &str) -> Sample {
    let (series, value) = line.rsplit_once(' ').expect("a value");
    let value = value
        .parse()
        .unwrap_or_else(|_| panic!("bad value in {line}"));
    let Some((name, rest)) = series.split_once('{') else {
        return Sample {
            name: series.to_owned(),
            labels: BTreeMap::new(),
            value,
        };
    };
    let mut labels = BTreeMap::new();
    let mut chars = rest.chars();
    loop {
        let label: String = chars.by_ref().take_while(|c| *c != '=').collect();
        assert_eq!(chars.next(), Some('"'), "a quoted value in {line}");
        let mut text = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => text.push('\n'),
                    Some(other) => text.push(other),
                    None => panic!("a dangling escape in {line}"),
                },
                '"' => break,
                other => text.push(other),
            }
        }
        assert!(
            labels.insert(label.clone(), text).is_none(),
            "{label} twice in {line}"
        );
        match chars.next() {
            Some(',') => {}
            Some('}') => break,
            other => panic!("unexpected {other:?} in {line}"),
        }
    }
    Sample {
        name: name.to_owned(),
        labels,
        value,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_endpoint_serves_every_services_metrics_each_family_once() {
    let stack = spawn_stack(Options {
        in_memory: true,
        ..free_ports()
    })
    .await;
    let e = stack.endpoints.clone();
    assert_ne!(e.metrics.port(), 0, "the bound port is reported");
    assert!(e.banner().contains(&e.metrics_url()), "{}", e.banner());
    stack.wait_serving().await;

    // A command, then a read of what it wrote once the projector got there:
    // a call on each gRPC service, and an event through the projector.
    let mut commands = CommandServiceClient::connect(format!("http://{}", e.command))
        .await
        .expect("connect to the command service");
    let created = commands
        .create_user(pb::CreateUserRequest {
            request_id: "metrics-r-1".into(),
            email: "ada@metrics.test".into(),
            name: "Ada".into(),
            ..Default::default()
        })
        .await
        .expect("the user is created")
        .into_inner();
    let queries = QueryServiceClient::connect(format!("http://{}", e.query))
        .await
        .expect("connect to the query service");
    let request = pb::GetUserProfileRequest {
        user_id: created.user_id.clone(),
        min_version: created.version,
    };
    let profile = eventually("the profile at the command's version", || {
        let (mut queries, request) = (queries.clone(), request.clone());
        async move {
            match queries.get_user_profile(request).await {
                Ok(found) => Some(found.into_inner()),
                // The query service's own wait for `min_version` ran out.
                Err(status) if status.code() == tonic::Code::DeadlineExceeded => None,
                Err(status) => panic!("reading the profile: {status}"),
            }
        }
    })
    .await;
    assert_eq!(profile.user.map(|u| u.name).as_deref(), Some("Ada"));

    // The projector counts the event as published after it wrote the read
    // model the query saw.
    let metrics = e.metrics;
    let scrape = eventually(
        "the projector to count the event published",
        move || async move {
            let scraped = Scrape::parse(&scrape(metrics).await);
            let published = scraped.value(
                "dynabridge_projector_events_published_total",
                &[("component", "projector")],
            )?;
            (published >= 1.0).then_some(scraped)
        },
    )
    .await;

    let mut seen = BTreeMap::<&str, usize>::new();
    for family in &scrape.families {
        *seen.entry(family.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "families declared twice: {twice:?}");
    let mut series = BTreeMap::<(&str, &BTreeMap<String, String>), usize>::new();
    for sample in &scrape.samples {
        *series.entry((&sample.name, &sample.labels)).or_default() += 1;
    }
    let repeated: Vec<_> = series.iter().filter(|(_, n)| **n > 1).collect();
    assert!(repeated.is_empty(), "series repeated: {repeated:?}");

    let requests = "dynabridge_grpc_server_requests_total";
    assert_eq!(
        scrape.value(
            requests,
            &[
                ("component", "command-service"),
                ("grpc_service", "dynabridge.v1.CommandService"),
                ("grpc_method", "CreateUser"),
                ("grpc_code", "OK"),
            ]
        ),
        Some(1.0)
    );
    assert_eq!(
        scrape.value(
            requests,
            &[
                ("component", "query-service"),
                ("grpc_service", "dynabridge.v1.QueryService"),
                ("grpc_method", "GetUserProfile"),
                ("grpc_code", "OK"),
            ]
        ),
        Some(1.0)
    );
    assert!(
        scrape
            .find(requests, &[("component", "projector")])
            .all(|s| s.labels["grpc_service"] == "grpc.health.v1.Health"),
        "the projector serves health only"
    );
    // A family every service has: one series each, told apart.
    for component in ["command-service", "query-service", "projector"] {
        assert!(
            scrape
                .value("dynabridge_store_reachable", &[("component", component)])
                .is_some(),
            "{component} reports its store health"
        );
    }

    // The process's AWS counters: once, not once per service.
    for (name, at_least) in [
        ("TransactWriteItems", 1.0),
        ("GetRecords", 1.0),
        ("GetItem", 1.0),
    ] {
        let value = scrape
            .value(
                "dynabridge_aws_calls_total",
                &[("service", "dynamodb"), ("operation", name)],
            )
            .or_else(|| {
                scrape.value(
                    "dynabridge_aws_calls_total",
                    &[("service", "dynamodbstreams"), ("operation", name)],
                )
            })
            .unwrap_or_else(|| panic!("no {name} calls counted"));
        assert!(value >= at_least, "{name}: {value}");
    }
    for family in [
        "dynabridge_aws_calls_total",
        "dynabridge_aws_call_errors_total",
        "dynabridge_dynamodb_capacity_units_total",
        "dynabridge_eventbridge_entries_total",
    ] {
        assert!(
            scrape
                .samples
                .iter()
                .filter(|s| s.name == family)
                .all(|s| !s.labels.contains_key("component")),
            "{family} is the process's, not a service's"
        );
    }

    stack.stop().await.expect("a clean shutdown");
    assert!(
        tokio::time::timeout(DEADLINE, tokio::net::TcpStream::connect(e.metrics))
            .await
            .expect("connect returns")
            .is_err(),
        "the metrics endpoint stops with the stack"
    );
}
