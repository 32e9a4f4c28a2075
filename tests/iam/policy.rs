//! The roles' permissions as IAM evaluates them, and the recorded calls as
//! the IAM requests they are.
//!
//! The model is deliberately small: the template may only use inline
//! policies of `Allow` statements with `Action` and `Resource` (no `Deny`,
//! `NotAction`, `NotResource` or `Condition`, no managed or separate
//! policies). Anything else fails the test, because the model could not say
//! what it allows.

use std::fmt;

use serde_json::Value;

use crate::template::Template;

/// One action allowed on one resource pattern.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Allow {
    pub action: String,
    pub resource: String,
    pub sid: String,
}

impl fmt::Display for Allow {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {} ({})", self.action, self.resource, self.sid)
    }
}

impl Allow {
    /// Whether this allows `request`, matching as IAM does: actions
    /// case-insensitively, both with `*` and `?` wildcards.
    pub fn allows(&self, request: &Request) -> bool {
        glob(&self.action.to_lowercase(), &request.action.to_lowercase())
            && glob(&self.resource, &request.resource)
    }

    /// Whether this pattern covers the concrete ARN `arn`.
    pub fn covers(&self, arn: &str) -> bool {
        glob(&self.resource, arn)
    }
}

/// A role of the template: what it allows, and its trust policy.
#[derive(Debug)]
pub struct Role {
    pub logical_id: String,
    pub allows: Vec<Allow>,
    pub trust: Value,
}

/// Every role of the template.
pub fn roles(template: &Template) -> Vec<Role> {
    for kind in [
        "AWS::IAM::Policy",
        "AWS::IAM::ManagedPolicy",
        "AWS::IAM::RolePolicy",
    ] {
        assert!(
            template.resources_of_type(kind).next().is_none(),
            "{kind} grants permissions outside the roles' inline policies, which this test does not read"
        );
    }
    template
        .resources_of_type("AWS::IAM::Role")
        .map(|(id, role)| {
            let properties = &role["Properties"];
            for unsupported in ["ManagedPolicyArns", "PermissionsBoundary"] {
                assert!(
                    properties.get(unsupported).is_none(),
                    "{id} has {unsupported}, which this test does not model"
                );
            }
            let mut allows = Vec::new();
            for policy in properties["Policies"].as_array().into_iter().flatten() {
                let document = template.resolve(&policy["PolicyDocument"]);
                for statement in document["Statement"].as_array().expect("statements") {
                    allows.extend(statement_allows(id, statement));
                }
            }
            let trust = match template.resolve(&properties["AssumeRolePolicyDocument"]) {
                Value::String(text) => {
                    serde_json::from_str(&text).expect("the trust policy is JSON")
                }
                document => document,
            };
            Role {
                logical_id: id.to_owned(),
                allows,
                trust,
            }
        })
        .collect()
}

fn statement_allows(role: &str, statement: &Value) -> Vec<Allow> {
    let sid = statement["Sid"].as_str().unwrap_or("-").to_owned();
    assert_eq!(
        statement["Effect"], "Allow",
        "{role} {sid}: only Allow statements are modelled"
    );
    for key in statement
        .as_object()
        .expect("a statement is an object")
        .keys()
    {
        assert!(
            ["Sid", "Effect", "Action", "Resource"].contains(&key.as_str()),
            "{role} {sid}: {key} is not modelled by this test"
        );
    }
    let strings = |value: &Value| -> Vec<String> {
        match value {
            Value::String(s) => vec![s.clone()],
            Value::Array(items) => items
                .iter()
                .map(|v| v.as_str().expect("a string").to_owned())
                .collect(),
            other => panic!("{role} {sid}: unexpected {other}"),
        }
    };
    let mut allows = Vec::new();
    for action in strings(&statement["Action"]) {
        for resource in strings(&statement["Resource"]) {
            allows.push(Allow {
                action: action.clone(),
                resource,
                sid: sid.clone(),
            });
        }
    }
    allows
}

/// What IAM is asked for one recorded call: an action on a resource ARN.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Request {
    pub action: String,
    pub resource: String,
}

impl fmt::Display for Request {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} on {}", self.action, self.resource)
    }
}

/// The IAM request of one line of a call log (see
/// `dynabridge_aws::record_calls_to`), in the template's account and
/// region. A transaction item is authorised as its single-item action, an
/// SQS call on the queue's ARN (the call names the queue by its URL).
pub fn request(line: &str, region: &str, account: &str) -> Request {
    let (call, resource) = line
        .split_once(' ')
        .unwrap_or_else(|| panic!("call log line {line:?}"));
    let (service, operation) = call
        .split_once(':')
        .unwrap_or_else(|| panic!("call log line {line:?}"));
    assert!(
        !(service == "sqs" && resource == "-"),
        "the recorder names no queue in {line:?}: dynabridge_aws's recorder must \
         record an SQS call on its QueueUrl"
    );
    assert_ne!(
        resource, "-",
        "the recorder could not tell the resource of {line:?}"
    );
    let operation = match operation.split_once('.') {
        Some(("TransactWriteItems" | "TransactGetItems", kind)) => match kind {
            "Put" => "PutItem",
            "Update" => "UpdateItem",
            "Delete" => "DeleteItem",
            "ConditionCheck" => "ConditionCheckItem",
            "Get" => "GetItem",
            other => panic!("unknown transaction item {other} in {line:?}"),
        },
        Some(_) => panic!("unknown operation in {line:?}"),
        None => operation,
    };
    let resource = if resource.starts_with("arn:") {
        rebase(resource, region, account)
    } else {
        match service {
            "dynamodb" => format!("arn:aws:dynamodb:{region}:{account}:table/{resource}"),
            "events" => format!("arn:aws:events:{region}:{account}:event-bus/{resource}"),
            "sqs" => queue_arn(resource, region, account),
            other => panic!("unknown service {other} in {line:?}"),
        }
    };
    Request {
        action: format!("{service}:{operation}"),
        resource,
    }
}

/// The ARN of a queue named by its URL (`https://sqs.<region>.amazonaws.com
/// /<account>/<name>`, or a stand-in's `http://<host>/<account>/<name>`)
/// or by its name, in the given region and account.
fn queue_arn(queue: &str, region: &str, account: &str) -> String {
    let name = match queue.split_once("://") {
        Some((_, rest)) => match rest.split('/').collect::<Vec<_>>().as_slice() {
            [_host, _account, name] => *name,
            _ => panic!("not a queue URL: {queue}"),
        },
        None => queue,
    };
    assert!(
        !name.is_empty() && !name.contains([':', '/', '*', '?']),
        "not a queue: {queue}"
    );
    format!("arn:aws:sqs:{region}:{account}:{name}")
}

/// `arn` in the given region and account: the store the binaries ran
/// against names its own, which say nothing about the permissions.
fn rebase(arn: &str, region: &str, account: &str) -> String {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let [arn_prefix, partition, service, _, _, resource] = parts.as_slice() else {
        panic!("not an ARN: {arn}");
    };
    format!("{arn_prefix}:{partition}:{service}:{region}:{account}:{resource}")
}

/// IAM's wildcard match: `*` any run of characters, `?` any one.
pub fn glob(pattern: &str, text: &str) -> bool {
    let (p, t): (Vec<char>, Vec<char>) = (pattern.chars().collect(), text.chars().collect());
    let (mut pi, mut ti) = (0, 0);
    let mut backtrack: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            backtrack = Some((pi, ti));
            pi += 1;
        } else if let Some((star, matched)) = backtrack {
            pi = star + 1;
            ti = matched + 1;
            backtrack = Some((star, matched + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

#[test]
fn glob_matches_as_iam_does() {
    assert!(glob(
        "arn:aws:dynamodb:r:a:table/t",
        "arn:aws:dynamodb:r:a:table/t"
    ));
    assert!(!glob(
        "arn:aws:dynamodb:r:a:table/t",
        "arn:aws:dynamodb:r:a:table/t2"
    ));
    assert!(glob(
        "arn:aws:dynamodb:r:a:table/t/stream/*",
        "arn:aws:dynamodb:r:a:table/t/stream/2024-01-01T00:00:00.000"
    ));
    assert!(!glob(
        "arn:aws:dynamodb:r:a:table/t/stream/*",
        "arn:aws:dynamodb:r:a:table/t"
    ));
    assert!(glob(
        "arn:aws:dynamodb:*:*:table/*",
        "arn:aws:dynamodb:r:a:table/t/index/i"
    ));
    assert!(glob("dynamodb:Get?tem", "dynamodb:GetItem"));
    assert!(glob("*", ""));
}

#[test]
fn call_log_lines_become_iam_requests() {
    let r = request(
        "dynamodb:TransactWriteItems.ConditionCheck p-event-store",
        "eu-west-1",
        "1",
    );
    assert_eq!(
        (r.action.as_str(), r.resource.as_str()),
        (
            "dynamodb:ConditionCheckItem",
            "arn:aws:dynamodb:eu-west-1:1:table/p-event-store"
        )
    );
    let r = request(
        "dynamodb:Query p-order-summaries/index/Status-index",
        "eu-west-1",
        "1",
    );
    assert_eq!(
        r.resource,
        "arn:aws:dynamodb:eu-west-1:1:table/p-order-summaries/index/Status-index"
    );
    let r = request(
        "dynamodb:GetRecords arn:aws:dynamodb:local:000000000000:table/p-event-store/stream/x",
        "eu-west-1",
        "1",
    );
    assert_eq!(
        r.resource,
        "arn:aws:dynamodb:eu-west-1:1:table/p-event-store/stream/x"
    );
    for queue in [
        "https://sqs.us-east-1.amazonaws.com/000000000000/p-route-planner",
        "http://127.0.0.1:4566/000000000000/p-route-planner",
        "p-route-planner",
        "arn:aws:sqs:us-east-1:000000000000:p-route-planner",
    ] {
        let r = request(&format!("sqs:ReceiveMessage {queue}"), "eu-west-1", "1");
        assert_eq!(
            (r.action.as_str(), r.resource.as_str()),
            (
                "sqs:ReceiveMessage",
                "arn:aws:sqs:eu-west-1:1:p-route-planner"
            ),
            "{queue}"
        );
    }
    let r = request("events:PutEvents p-events", "eu-west-1", "1");
    assert_eq!(
        (r.action.as_str(), r.resource.as_str()),
        (
            "events:PutEvents",
            "arn:aws:events:eu-west-1:1:event-bus/p-events"
        )
    );
}
