//! The EventBridge side, idempotently: the bus the projector publishes to,
//! its archive, and the rules that route its events, named and matching as
//! `deploy/cloudformation/dynabridge.yaml` deploys them (a unit test below
//! holds the two together). Targets are the caller's: [`ensure_rule_target`]
//! attaches one to a rule.

use std::time::Duration;

use aws_sdk_eventbridge::Client;
use aws_sdk_eventbridge::types::{ArchiveState, DeadLetterConfig, RetryPolicy, RuleState, Target};
use serde_json::{Value, json};

use super::ProvisionError;
use dynabridge::pb::OrderStatus;
use dynabridge::schema::{Tables, event_rules};

/// Days the archive keeps events unless told otherwise.
pub const DEFAULT_ARCHIVE_RETENTION_DAYS: u32 = 30;

/// The archive's description.
pub const ARCHIVE_DESCRIPTION: &str =
    "Every event on the bus, for replay into a new or repaired consumer.";

/// How long EventBridge keeps retrying a delivery before it goes to the
/// target's dead-letter queue: the service's maxima, so that a target that
/// is down for a while loses nothing.
pub const TARGET_MAX_RETRY_ATTEMPTS: i32 = 185;
pub const TARGET_MAX_EVENT_AGE_SECONDS: i32 = 86_400;

/// What varies between deployments of the bus.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventBusOptions {
    /// The projector's `--event-source`: the `source` every rule matches.
    pub event_source: String,
    /// Days the archive keeps every event; 0 keeps them indefinitely.
    pub archive_retention_days: u32,
    /// The status the content-filtered rule matches in
    /// `detail.orderStatusUpdated.status`.
    pub filtered_order_status: OrderStatus,
}

impl Default for EventBusOptions {
    fn default() -> Self {
        Self {
            event_source: "dynabridge".into(),
            archive_retention_days: DEFAULT_ARCHIVE_RETENTION_DAYS,
            filtered_order_status: OrderStatus::Shipped,
        }
    }
}

impl EventBusOptions {
    /// The archive's retention as EventBridge takes it, if the options
    /// make sense.
    fn validate(&self) -> Result<i32, String> {
        if self.event_source.is_empty() {
            return Err("event source must not be empty".into());
        }
        // The ProtoJSON of an envelope omits an unspecified status, so a
        // rule for it would never match.
        if self.filtered_order_status == OrderStatus::Unspecified {
            return Err("the filtered order status must be specified".into());
        }
        i32::try_from(self.archive_retention_days).map_err(|_| {
            format!(
                "archive retention of {} days is too long",
                self.archive_retention_days
            )
        })
    }
}

/// The rules of the bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum BusRule {
    /// `UserCreated` and `UserProfileUpdated`.
    UserEvents,
    /// `OrderCreated` and `OrderStatusUpdated`.
    OrderEvents,
    /// `OrderStatusUpdated` to the configured status.
    OrdersWithStatus,
    /// `OrderCreated`, for the route planner.
    RoutePlanner,
    /// `RouteCreated`.
    RouteEvents,
}

impl BusRule {
    pub const ALL: [BusRule; 5] = [
        BusRule::UserEvents,
        BusRule::OrderEvents,
        BusRule::OrdersWithStatus,
        BusRule::RoutePlanner,
        BusRule::RouteEvents,
    ];

    /// Its name in [`event_rules`].
    fn suffix(self) -> &'static str {
        match self {
            BusRule::UserEvents => event_rules::USER_EVENTS,
            BusRule::OrderEvents => event_rules::ORDER_EVENTS,
            BusRule::OrdersWithStatus => event_rules::ORDERS_WITH_STATUS,
            BusRule::RoutePlanner => event_rules::ROUTE_PLANNER,
            BusRule::RouteEvents => event_rules::ROUTE_EVENTS,
        }
    }

    /// `<prefix>-user-events`, `<prefix>-order-events`,
    /// `<prefix>-orders-with-status`: see [`Tables::event_rule`].
    pub fn name(self, tables: &Tables) -> String {
        tables.event_rule(self.suffix())
    }

    pub fn description(self, options: &EventBusOptions) -> String {
        match self {
            BusRule::UserEvents => "Every user event.".into(),
            BusRule::OrderEvents => "Every order event.".into(),
            BusRule::OrdersWithStatus => format!(
                "Orders that moved to {}.",
                options.filtered_order_status.as_str_name()
            ),
            BusRule::RoutePlanner => "Every order placed, for the route planner.".into(),
            BusRule::RouteEvents => "Every route planned.".into(),
        }
    }

    /// The rule's event pattern. The `detail` is the ProtoJSON of the
    /// `EventEnvelope`, where an enum value is its name.
    pub fn event_pattern(self, options: &EventBusOptions) -> Value {
        let source = &options.event_source;
        match self {
            BusRule::UserEvents => json!({
                "source": [source],
                "detail-type": ["UserCreated", "UserProfileUpdated"],
            }),
            BusRule::OrderEvents => json!({
                "source": [source],
                "detail-type": ["OrderCreated", "OrderStatusUpdated"],
            }),
            BusRule::OrdersWithStatus => json!({
                "source": [source],
                "detail-type": ["OrderStatusUpdated"],
                "detail": {
                    "orderStatusUpdated": {
                        "status": [options.filtered_order_status.as_str_name()],
                    },
                },
            }),
            BusRule::RoutePlanner => json!({
                "source": [source],
                "detail-type": ["OrderCreated"],
            }),
            BusRule::RouteEvents => json!({
                "source": [source],
                "detail-type": ["RouteCreated"],
            }),
        }
    }
}

/// The bus as provisioned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventBus {
    pub name: String,
    pub arn: String,
    pub archive: Archive,
    /// One per [`BusRule`], in the order of [`BusRule::ALL`].
    pub rules: Vec<ProvisionedRule>,
}

impl EventBus {
    pub fn rule(&self, rule: BusRule) -> Option<&ProvisionedRule> {
        self.rules.iter().find(|r| r.rule == rule)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archive {
    pub name: String,
    pub arn: String,
    pub retention_days: u32,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProvisionedRule {
    pub rule: BusRule,
    pub name: String,
    pub arn: String,
    pub event_bus_name: String,
}

/// Where a rule delivers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleTarget {
    /// Unique within the rule; a target with the same id is replaced.
    pub id: String,
    pub arn: String,
    /// Where a delivery goes that failed after every retry.
    pub dead_letter_arn: Option<String>,
}

impl RuleTarget {
    /// The rule's queue, with the template's target id (`user-events-queue`, ...).
    pub fn queue(rule: BusRule, queue_arn: &str, dead_letter_arn: Option<&str>) -> Self {
        Self {
            id: format!("{}-queue", rule.suffix()),
            arn: queue_arn.to_owned(),
            dead_letter_arn: dead_letter_arn.map(str::to_owned),
        }
    }
}

/// Creates what is missing of the bus `<prefix>-events`, its archive and its
/// rules, and brings what exists in line with `options` (the archive's
/// retention, each rule's pattern, description and state). Running it again
/// changes nothing. Targets are left as they are.
pub async fn ensure_event_bus(
    client: &Client,
    tables: &Tables,
    options: &EventBusOptions,
) -> Result<EventBus, ProvisionError> {
    let retention_days = options.validate().map_err(ProvisionError::InvalidOptions)?;
    let name = tables.event_bus();
    let arn = ensure_bus(client, &name).await?;
    let archive = ensure_archive(client, &tables.event_archive(), &arn, retention_days).await?;
    let mut rules = Vec::with_capacity(BusRule::ALL.len());
    for rule in BusRule::ALL {
        rules.push(ensure_rule(client, tables, &name, rule, options).await?);
    }
    Ok(EventBus {
        name,
        arn,
        archive,
        rules,
    })
}

fn eventbridge_error(
    action: &'static str,
    resource: &str,
    source: aws_sdk_eventbridge::Error,
) -> ProvisionError {
    ProvisionError::EventBridge {
        action,
        resource: resource.to_owned(),
        source: Box::new(source),
    }
}

/// Creates the bus unless it exists; returns its ARN.
async fn ensure_bus(client: &Client, name: &str) -> Result<String, ProvisionError> {
    match client.create_event_bus().name(name).send().await {
        Ok(out) => {
            tracing::info!(bus = %name, "event bus created");
            out.event_bus_arn
                .ok_or_else(|| ProvisionError::MissingArn(name.to_owned()))
        }
        Err(err) => match aws_sdk_eventbridge::Error::from(err) {
            aws_sdk_eventbridge::Error::ResourceAlreadyExistsException(_) => {
                let out = client
                    .describe_event_bus()
                    .name(name)
                    .send()
                    .await
                    .map_err(|e| eventbridge_error("describing event bus", name, e.into()))?;
                out.arn
                    .ok_or_else(|| ProvisionError::MissingArn(name.to_owned()))
            }
            source => Err(eventbridge_error("creating event bus", name, source)),
        },
    }
}

/// Creates the archive of the bus unless it exists, brings its retention and
/// description in line, and waits until it archives.
async fn ensure_archive(
    client: &Client,
    name: &str,
    bus_arn: &str,
    retention_days: i32,
) -> Result<Archive, ProvisionError> {
    let created = client
        .create_archive()
        .archive_name(name)
        .event_source_arn(bus_arn)
        .description(ARCHIVE_DESCRIPTION)
        .retention_days(retention_days)
        .send()
        .await;
    match created {
        Ok(_) => tracing::info!(archive = %name, retention_days, "event archive created"),
        Err(err) => match aws_sdk_eventbridge::Error::from(err) {
            aws_sdk_eventbridge::Error::ResourceAlreadyExistsException(_) => {
                update_archive(client, name, bus_arn, retention_days).await?;
            }
            source => return Err(eventbridge_error("creating event archive", name, source)),
        },
    }
    wait_archive_enabled(client, name).await
}

async fn describe_archive(
    client: &Client,
    name: &str,
) -> Result<aws_sdk_eventbridge::operation::describe_archive::DescribeArchiveOutput, ProvisionError>
{
    client
        .describe_archive()
        .archive_name(name)
        .send()
        .await
        .map_err(|e| eventbridge_error("describing event archive", name, e.into()))
}

/// An existing archive: of this bus, else an error; updated if its retention
/// or description differ.
async fn update_archive(
    client: &Client,
    name: &str,
    bus_arn: &str,
    retention_days: i32,
) -> Result<(), ProvisionError> {
    let existing = describe_archive(client, name).await?;
    let archived = existing.event_source_arn().unwrap_or_default();
    if archived != bus_arn {
        return Err(ProvisionError::ArchiveOfAnotherBus {
            archive: name.to_owned(),
            archived: archived.to_owned(),
            bus_arn: bus_arn.to_owned(),
        });
    }
    if existing.retention_days().unwrap_or(0) == retention_days
        && existing.description() == Some(ARCHIVE_DESCRIPTION)
    {
        return Ok(());
    }
    client
        .update_archive()
        .archive_name(name)
        .description(ARCHIVE_DESCRIPTION)
        .retention_days(retention_days)
        .send()
        .await
        .map_err(|e| eventbridge_error("updating event archive", name, e.into()))?;
    tracing::info!(archive = %name, retention_days, "event archive updated");
    Ok(())
}

/// Waits while the archive is being created or updated: events that come
/// before it is enabled would not be archived.
async fn wait_archive_enabled(client: &Client, name: &str) -> Result<Archive, ProvisionError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let mut delay = Duration::from_millis(20);
    loop {
        let out = describe_archive(client, name).await?;
        let state = out.state().cloned();
        let settled = match &state {
            Some(ArchiveState::Enabled) => true,
            // UpdateArchive cannot enable it again; someone disabled it on
            // purpose, and provisioning leaves it so.
            Some(ArchiveState::Disabled) => {
                tracing::warn!(archive = %name, "event archive is disabled, events are not archived");
                true
            }
            Some(ArchiveState::CreateFailed | ArchiveState::UpdateFailed) => {
                return Err(ProvisionError::ArchiveFailed {
                    archive: name.to_owned(),
                    state: state
                        .as_ref()
                        .map(|s| s.as_str().to_owned())
                        .unwrap_or_default(),
                    reason: out.state_reason().unwrap_or_default().to_owned(),
                });
            }
            _ => false,
        };
        if settled {
            return Ok(Archive {
                name: name.to_owned(),
                arn: out
                    .archive_arn()
                    .ok_or_else(|| ProvisionError::MissingArn(name.to_owned()))?
                    .to_owned(),
                retention_days: u32::try_from(out.retention_days().unwrap_or(0)).unwrap_or(0),
            });
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(ProvisionError::ArchiveNotEnabled(name.to_owned()));
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Creates or updates one rule: `PutRule` is an upsert.
async fn ensure_rule(
    client: &Client,
    tables: &Tables,
    bus: &str,
    rule: BusRule,
    options: &EventBusOptions,
) -> Result<ProvisionedRule, ProvisionError> {
    let name = rule.name(tables);
    let out = client
        .put_rule()
        .name(&name)
        .event_bus_name(bus)
        .event_pattern(rule.event_pattern(options).to_string())
        .description(rule.description(options))
        .state(RuleState::Enabled)
        .send()
        .await
        .map_err(|e| eventbridge_error("putting event rule", &name, e.into()))?;
    tracing::info!(rule = %name, bus = %bus, "event rule in place");
    Ok(ProvisionedRule {
        rule,
        arn: out
            .rule_arn
            .ok_or_else(|| ProvisionError::MissingArn(name.clone()))?,
        name,
        event_bus_name: bus.to_owned(),
    })
}

/// Makes `target` a target of `rule`, replacing any target with its id,
/// with the template's retry policy and the target's dead-letter queue.
pub async fn ensure_rule_target(
    client: &Client,
    rule: &ProvisionedRule,
    target: &RuleTarget,
) -> Result<(), ProvisionError> {
    let built = Target::builder()
        .id(&target.id)
        .arn(&target.arn)
        .retry_policy(
            RetryPolicy::builder()
                .maximum_retry_attempts(TARGET_MAX_RETRY_ATTEMPTS)
                .maximum_event_age_in_seconds(TARGET_MAX_EVENT_AGE_SECONDS)
                .build(),
        )
        .set_dead_letter_config(
            target
                .dead_letter_arn
                .as_ref()
                .map(|arn| DeadLetterConfig::builder().arn(arn).build()),
        )
        .build()
        .map_err(|source| ProvisionError::InvalidTarget {
            rule: rule.name.clone(),
            target: target.id.clone(),
            source,
        })?;
    let out = client
        .put_targets()
        .rule(&rule.name)
        .event_bus_name(&rule.event_bus_name)
        .targets(built)
        .send()
        .await
        .map_err(|e| eventbridge_error("putting targets of rule", &rule.name, e.into()))?;
    if let Some(failed) = out.failed_entries().first() {
        return Err(ProvisionError::TargetRefused {
            rule: rule.name.clone(),
            target: target.id.clone(),
            code: failed.error_code().unwrap_or("unknown").to_owned(),
            message: failed.error_message().unwrap_or_default().to_owned(),
        });
    }
    tracing::info!(rule = %rule.name, target_id = %target.id, target_arn = %target.arn, "rule target in place");
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, HashMap};

    use serde_json::{Map, Value, json};

    use super::*;

    /// The EventBridge resources of the CloudFormation template, deployed
    /// with `given` parameters (the rest at their defaults): `!Ref` and
    /// `!Sub` of a parameter are resolved; `!Ref` of a resource stays
    /// `{"Ref": id}` and `!GetAtt a.b` becomes `{"GetAtt": "a.b"}`.
    struct Template {
        parameters: Map<String, Value>,
        /// Resolved parameter values.
        values: HashMap<String, String>,
        resources: Vec<(String, Value)>,
    }

    impl Template {
        fn load(given: &[(&str, &str)]) -> Self {
            let path = concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../deploy/cloudformation/dynabridge.yaml"
            );
            let text = std::fs::read_to_string(path).unwrap();
            let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
            let plain = |v: &serde_yaml_ng::Value| resolve(v.clone(), &HashMap::new());
            let parameters = plain(&yaml["Parameters"]).as_object().unwrap().clone();
            let mut values: HashMap<String, String> = parameters
                .iter()
                .filter_map(|(name, spec)| {
                    let default = match &spec["Default"] {
                        Value::String(s) => s.clone(),
                        Value::Number(n) => n.to_string(),
                        _ => return None,
                    };
                    Some((name.clone(), default))
                })
                .collect();
            for (name, value) in given {
                assert!(parameters.contains_key(*name), "no parameter {name}");
                values.insert((*name).to_owned(), (*value).to_owned());
            }
            let resources = yaml["Resources"]
                .as_mapping()
                .unwrap()
                .iter()
                .filter(|(_, r)| {
                    r["Type"]
                        .as_str()
                        .is_some_and(|t| t.starts_with("AWS::Events::"))
                })
                .map(|(id, r)| (id.as_str().unwrap().to_owned(), resolve(r.clone(), &values)))
                .collect();
            Self {
                parameters,
                values,
                resources,
            }
        }

        fn of_type(&self, kind: &str) -> Vec<(&str, &Value)> {
            self.resources
                .iter()
                .filter(|(_, r)| r["Type"] == kind)
                .map(|(id, r)| (id.as_str(), &r["Properties"]))
                .collect()
        }

        fn tables(&self) -> Tables {
            Tables::new(self.values["Prefix"].clone())
        }

        /// The options that deploy what the template deploys.
        fn options(&self) -> EventBusOptions {
            EventBusOptions {
                event_source: self.values["EventSource"].clone(),
                archive_retention_days: self.values["ArchiveRetentionDays"].parse().unwrap(),
                filtered_order_status: OrderStatus::from_str_name(
                    &self.values["FilteredOrderStatus"],
                )
                .unwrap(),
            }
        }
    }

    fn resolve(value: serde_yaml_ng::Value, parameters: &HashMap<String, String>) -> Value {
        use serde_yaml_ng::Value as Y;
        match value {
            Y::Null => Value::Null,
            Y::Bool(b) => json!(b),
            Y::Number(n) => match n.as_i64() {
                Some(i) => json!(i),
                None => json!(n.as_f64().unwrap()),
            },
            Y::String(s) => json!(s),
            Y::Sequence(items) => items.into_iter().map(|v| resolve(v, parameters)).collect(),
            Y::Mapping(map) => Value::Object(
                map.into_iter()
                    .map(|(k, v)| (k.as_str().unwrap().to_owned(), resolve(v, parameters)))
                    .collect(),
            ),
            Y::Tagged(tagged) => {
                let tag = tagged.tag.to_string();
                let inner = tagged.value.as_str().unwrap().to_owned();
                match tag.as_str() {
                    "!Ref" => match parameters.get(&inner) {
                        Some(value) => json!(value),
                        None => json!({ "Ref": inner }),
                    },
                    "!GetAtt" => json!({ "GetAtt": inner }),
                    "!Sub" => {
                        let mut text = inner;
                        for (name, value) in parameters {
                            text = text.replace(&format!("${{{name}}}"), value);
                        }
                        assert!(!text.contains("${"), "unresolved Sub {text}");
                        json!(text)
                    }
                    other => panic!("unexpected tag {other}"),
                }
            }
        }
    }

    /// Name → (description, bus, state, pattern, target id), from the
    /// template's rules.
    type Rules = BTreeMap<String, (String, Value, String, Value, String)>;

    fn check_template_matches_code(given: &[(&str, &str)]) {
        let template = Template::load(given);
        let tables = template.tables();
        let options = template.options();

        let buses = template.of_type("AWS::Events::EventBus");
        assert_eq!(buses.len(), 1);
        let (bus_id, bus) = buses[0];
        assert_eq!(bus["Name"], tables.event_bus());

        let archives = template.of_type("AWS::Events::Archive");
        assert_eq!(archives.len(), 1);
        let archive = archives[0].1;
        assert_eq!(archive["ArchiveName"], tables.event_archive());
        assert_eq!(archive["Description"], ARCHIVE_DESCRIPTION);
        assert_eq!(
            archive["SourceArn"],
            json!({ "GetAtt": format!("{bus_id}.Arn") })
        );
        assert_eq!(
            archive["RetentionDays"],
            options.archive_retention_days.to_string()
        );

        let deployed: Rules = template
            .of_type("AWS::Events::Rule")
            .into_iter()
            .map(|(id, rule)| {
                let targets = rule["Targets"].as_array().unwrap();
                assert_eq!(targets.len(), 1, "{id} has one target");
                let target = &targets[0];
                assert_eq!(
                    target["RetryPolicy"],
                    json!({
                        "MaximumRetryAttempts": TARGET_MAX_RETRY_ATTEMPTS,
                        "MaximumEventAgeInSeconds": TARGET_MAX_EVENT_AGE_SECONDS,
                    }),
                    "{id}"
                );
                assert!(target["DeadLetterConfig"]["Arn"].is_object(), "{id}");
                (
                    rule["Name"].as_str().unwrap().to_owned(),
                    (
                        rule["Description"].as_str().unwrap().to_owned(),
                        rule["EventBusName"].clone(),
                        rule["State"].as_str().unwrap().to_owned(),
                        rule["EventPattern"].clone(),
                        target["Id"].as_str().unwrap().to_owned(),
                    ),
                )
            })
            .collect();
        let coded: Rules = BusRule::ALL
            .into_iter()
            .map(|rule| {
                (
                    rule.name(&tables),
                    (
                        rule.description(&options),
                        json!({ "Ref": bus_id }),
                        "ENABLED".to_owned(),
                        rule.event_pattern(&options),
                        RuleTarget::queue(rule, "arn", None).id,
                    ),
                )
            })
            .collect();
        assert_eq!(deployed, coded);
    }

    #[test]
    fn the_template_deploys_the_bus_archive_and_rules_of_the_code() {
        check_template_matches_code(&[]);
        check_template_matches_code(&[
            ("Prefix", "shop-eu"),
            ("EventSource", "shop.orders"),
            ("FilteredOrderStatus", "ORDER_STATUS_DELIVERED"),
            ("ArchiveRetentionDays", "90"),
        ]);
    }

    #[test]
    fn the_template_deploys_without_a_bucket() {
        // `aws cloudformation deploy --template-file` sends the body
        // inline, which CloudFormation caps at 51,200 bytes; past it, the
        // README's command fails. A template that must grow moves a part
        // to a stack of its own.
        let path = concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../deploy/cloudformation/dynabridge.yaml"
        );
        let size = std::fs::metadata(path).unwrap().len();
        assert!(size <= 51_200, "the template is {size} bytes");
    }

    #[test]
    fn the_template_defaults_are_the_code_defaults() {
        let template = Template::load(&[]);
        assert_eq!(template.options(), EventBusOptions::default());
        // Every status the code accepts, and only those, may be filtered on.
        let accepted: Vec<Value> = (0..16)
            .filter_map(|n| OrderStatus::try_from(n).ok())
            .filter(|status| {
                EventBusOptions {
                    filtered_order_status: *status,
                    ..EventBusOptions::default()
                }
                .validate()
                .is_ok()
            })
            .map(|status| json!(status.as_str_name()))
            .collect();
        assert_eq!(
            template.parameters["FilteredOrderStatus"]["AllowedValues"],
            Value::Array(accepted)
        );
    }

    #[test]
    fn options_that_would_route_nothing_are_refused() {
        let unspecified = EventBusOptions {
            filtered_order_status: OrderStatus::Unspecified,
            ..EventBusOptions::default()
        };
        let no_source = EventBusOptions {
            event_source: String::new(),
            ..EventBusOptions::default()
        };
        for options in [unspecified, no_source] {
            assert!(options.validate().is_err(), "{options:?}");
        }
    }

    #[test]
    fn the_filtered_rule_matches_the_envelope_field_the_projector_publishes() {
        // The path of the filter is the ProtoJSON name of the payload and its
        // field, as in the golden fixture.
        let pattern = BusRule::OrdersWithStatus.event_pattern(&EventBusOptions::default());
        assert_eq!(
            pattern["detail"]["orderStatusUpdated"]["status"],
            json!(["ORDER_STATUS_SHIPPED"])
        );
        let envelope = dynabridge::pb::EventEnvelope {
            payload: Some(dynabridge::pb::event_envelope::Payload::OrderStatusUpdated(
                dynabridge::pb::OrderStatusUpdated {
                    order_id: "o".into(),
                    status: OrderStatus::Shipped as i32,
                    previous_status: OrderStatus::Processing as i32,
                },
            )),
            ..Default::default()
        };
        let detail = serde_json::to_value(envelope).unwrap();
        assert_eq!(
            detail["orderStatusUpdated"]["status"],
            pattern["detail"]["orderStatusUpdated"]["status"][0]
        );
    }
}
