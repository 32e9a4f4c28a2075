//! The CloudFormation template, read as CloudFormation would deploy it for
//! one test deployment: parameters set, the intrinsic functions it uses
//! (`Ref`, `Fn::GetAtt`, `Fn::Sub`) resolved to names and ARNs under a fake
//! account and region, and its conditions (`Fn::If` on `Fn::Equals`,
//! `Fn::Not`, `Fn::And`, `Fn::Or`) decided, with `AWS::NoValue` removing
//! what holds it.
//!
//! The template stays YAML, the usual form for a hand-written template
//! (comments, readable policies); the short tags (`!Sub`, `!GetAtt`, ...)
//! become their long JSON forms on reading. An intrinsic function or an
//! attribute this resolver does not model fails the test rather than
//! resolving to something plausible.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde_json::{Map, Value, json};

/// The template's path in the repository.
pub fn path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/cloudformation/dynabridge.yaml")
}

/// The template, with its parameters, for one deployment.
pub struct Template {
    resources: Map<String, Value>,
    conditions: Map<String, Value>,
    parameters: HashMap<String, String>,
    pub region: String,
    pub account: String,
}

impl Template {
    /// Reads the template; `parameters` override its defaults, and every
    /// parameter without a default must be given.
    pub fn load(parameters: &[(&str, &str)], region: &str, account: &str) -> Self {
        let text = std::fs::read_to_string(path()).expect("read the template");
        let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).expect("template is YAML");
        let template = to_json(yaml);
        let given: HashMap<&str, &str> = parameters.iter().copied().collect();
        let mut resolved = HashMap::new();
        for (name, spec) in template["Parameters"]
            .as_object()
            .expect("the template has parameters")
        {
            let value = match (given.get(name.as_str()), &spec["Default"]) {
                (Some(value), _) => (*value).to_owned(),
                (None, Value::String(default)) => default.clone(),
                (None, Value::Number(default)) => default.to_string(),
                (None, _) => panic!("parameter {name} has no default and the test sets none"),
            };
            resolved.insert(name.clone(), value);
        }
        for name in given.keys() {
            assert!(
                resolved.contains_key(*name),
                "no parameter {name} in the template"
            );
        }
        Self {
            resources: template["Resources"]
                .as_object()
                .expect("the template has resources")
                .clone(),
            conditions: template["Conditions"]
                .as_object()
                .cloned()
                .unwrap_or_default(),
            parameters: resolved,
            region: region.to_owned(),
            account: account.to_owned(),
        }
    }

    /// Logical ids and definitions of the resources of `kind`.
    pub fn resources_of_type<'a>(
        &'a self,
        kind: &'a str,
    ) -> impl Iterator<Item = (&'a str, &'a Value)> + 'a {
        self.resources
            .iter()
            .filter(move |(_, r)| r["Type"] == kind)
            .map(|(id, r)| (id.as_str(), r))
    }

    pub fn resource(&self, logical_id: &str) -> &Value {
        self.resources
            .get(logical_id)
            .unwrap_or_else(|| panic!("no resource {logical_id} in the template"))
    }

    /// A property of a resource, resolved to a string.
    pub fn property(&self, logical_id: &str, property: &str) -> String {
        let value = &self.resource(logical_id)["Properties"][property];
        match self.resolve(value) {
            Value::String(s) => s,
            other => panic!("{logical_id}.{property} is not a string: {other}"),
        }
    }

    /// `value` with every intrinsic function resolved; `Null` if it is
    /// `AWS::NoValue`.
    pub fn resolve(&self, value: &Value) -> Value {
        self.resolve_present(value).unwrap_or(Value::Null)
    }

    /// Whether the condition `name` holds in this deployment.
    pub fn condition(&self, name: &str) -> bool {
        let definition = self
            .conditions
            .get(name)
            .unwrap_or_else(|| panic!("no condition {name} in the template"));
        self.holds(definition)
    }

    fn holds(&self, expression: &Value) -> bool {
        let (function, argument) = match expression.as_object() {
            Some(map) if map.len() == 1 => map.iter().next().expect("one entry"),
            _ => panic!("not a condition: {expression}"),
        };
        let operands = || {
            argument
                .as_array()
                .unwrap_or_else(|| panic!("{function} takes a list: {argument}"))
        };
        match function.as_str() {
            "Condition" => self.condition(argument.as_str().expect("Condition names a string")),
            "Fn::Equals" => match operands().as_slice() {
                [a, b] => self.resolve(a) == self.resolve(b),
                _ => panic!("Fn::Equals takes two values: {argument}"),
            },
            "Fn::Not" => match operands().as_slice() {
                [inner] => !self.holds(inner),
                _ => panic!("Fn::Not takes one condition: {argument}"),
            },
            "Fn::And" => operands().iter().all(|c| self.holds(c)),
            "Fn::Or" => operands().iter().any(|c| self.holds(c)),
            other => panic!("the test does not model the condition function {other}"),
        }
    }

    /// [`Template::resolve`], with `None` for `AWS::NoValue`: the property or
    /// list item holding it is left out.
    fn resolve_present(&self, value: &Value) -> Option<Value> {
        match value {
            Value::Object(map) if map.len() == 1 => {
                let (key, argument) = map.iter().next().expect("one entry");
                match key.as_str() {
                    "Ref" if argument == "AWS::NoValue" => None,
                    "Ref" => Some(Value::String(
                        self.reference(argument.as_str().expect("Ref names a string")),
                    )),
                    "Fn::If" => match argument.as_array().map(Vec::as_slice) {
                        Some([Value::String(condition), then, otherwise]) => {
                            let chosen = if self.condition(condition) {
                                then
                            } else {
                                otherwise
                            };
                            self.resolve_present(chosen)
                        }
                        _ => panic!("unsupported Fn::If {argument}"),
                    },
                    "Fn::GetAtt" => {
                        let parts = argument
                            .as_array()
                            .expect("GetAtt takes [resource, attribute]");
                        let (Some(Value::String(id)), Some(Value::String(attribute))) =
                            (parts.first(), parts.get(1))
                        else {
                            panic!("unsupported GetAtt {argument}");
                        };
                        Some(Value::String(self.get_att(id, attribute)))
                    }
                    "Fn::Sub" => Some(Value::String(self.sub(argument))),
                    other if other.starts_with("Fn::") || other == "Condition" => {
                        panic!("the test does not model {other}: {argument}")
                    }
                    _ => Some(self.resolve_entries(map)),
                }
            }
            Value::Object(map) => Some(self.resolve_entries(map)),
            Value::Array(items) => Some(Value::Array(
                items
                    .iter()
                    .filter_map(|v| self.resolve_present(v))
                    .collect(),
            )),
            other => Some(other.clone()),
        }
    }

    fn resolve_entries(&self, map: &Map<String, Value>) -> Value {
        Value::Object(
            map.iter()
                .filter_map(|(k, v)| Some((k.clone(), self.resolve_present(v)?)))
                .collect(),
        )
    }

    /// `Ref`: a parameter's value, a pseudo parameter, or a resource's name.
    fn reference(&self, name: &str) -> String {
        match name {
            "AWS::Region" => return self.region.clone(),
            "AWS::AccountId" => return self.account.clone(),
            "AWS::Partition" => return "aws".to_owned(),
            _ => {}
        }
        if let Some(value) = self.parameters.get(name) {
            return value.clone();
        }
        match self.resource(name)["Type"].as_str() {
            Some("AWS::DynamoDB::Table") => self.property(name, "TableName"),
            Some("AWS::Events::EventBus") => self.property(name, "Name"),
            Some("AWS::SQS::Queue") => format!(
                "https://sqs.{}.amazonaws.com/{}/{}",
                self.region,
                self.account,
                self.property(name, "QueueName")
            ),
            other => panic!("the test does not model Ref of {name} ({other:?})"),
        }
    }

    /// `Fn::GetAtt`: the ARNs the template uses, as CloudFormation returns
    /// them. A stream's label is only known once deployed; any stream of
    /// the table stands for it (a pattern, matched as IAM matches).
    fn get_att(&self, id: &str, attribute: &str) -> String {
        let (region, account) = (&self.region, &self.account);
        let kind = self.resource(id)["Type"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        match (kind.as_str(), attribute) {
            ("AWS::DynamoDB::Table", "Arn") => {
                format!(
                    "arn:aws:dynamodb:{region}:{account}:table/{}",
                    self.property(id, "TableName")
                )
            }
            ("AWS::DynamoDB::Table", "StreamArn") => format!(
                "arn:aws:dynamodb:{region}:{account}:table/{}/stream/*",
                self.property(id, "TableName")
            ),
            ("AWS::Events::EventBus", "Arn") => {
                format!(
                    "arn:aws:events:{region}:{account}:event-bus/{}",
                    self.property(id, "Name")
                )
            }
            ("AWS::Events::Archive", "Arn") => format!(
                "arn:aws:events:{region}:{account}:archive/{}",
                self.property(id, "ArchiveName")
            ),
            ("AWS::Events::Rule", "Arn") => format!(
                "arn:aws:events:{region}:{account}:rule/{}/{}",
                self.property(id, "EventBusName"),
                self.property(id, "Name")
            ),
            ("AWS::SQS::Queue", "Arn") => {
                format!(
                    "arn:aws:sqs:{region}:{account}:{}",
                    self.property(id, "QueueName")
                )
            }
            ("AWS::SQS::Queue", "QueueName") => self.property(id, "QueueName"),
            ("AWS::IAM::Role", "Arn") => {
                format!(
                    "arn:aws:iam::{account}:role/{}",
                    self.property(id, "RoleName")
                )
            }
            _ => panic!("the test does not model GetAtt {id}.{attribute} ({kind})"),
        }
    }

    /// `Fn::Sub`, in both its forms.
    fn sub(&self, argument: &Value) -> String {
        let (text, variables) = match argument {
            Value::String(text) => (text.as_str(), HashMap::new()),
            Value::Array(parts) => match parts.as_slice() {
                [Value::String(text), Value::Object(vars)] => (
                    text.as_str(),
                    vars.iter()
                        .map(|(k, v)| match self.resolve(v) {
                            Value::String(s) => (k.clone(), s),
                            other => panic!("Sub variable {k} is not a string: {other}"),
                        })
                        .collect(),
                ),
                _ => panic!("unsupported Sub {argument}"),
            },
            _ => panic!("unsupported Sub {argument}"),
        };
        let mut out = String::new();
        let mut rest = text;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let end = after.find('}').expect("a closed ${...} in Sub");
            let name = &after[..end];
            if let Some(literal) = name.strip_prefix('!') {
                out.push_str("${");
                out.push_str(literal);
                out.push('}');
            } else if let Some(value) = variables.get(name) {
                out.push_str(value);
            } else if let (false, Some((id, attribute))) =
                (name.starts_with("AWS::"), name.split_once('.'))
            {
                out.push_str(&self.get_att(id, attribute));
            } else {
                out.push_str(&self.reference(name));
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// YAML to the template's JSON form: `!Ref x` is `{"Ref": "x"}`,
/// `!GetAtt a.b` is `{"Fn::GetAtt": ["a", "b"]}`, `!Sub s` is
/// `{"Fn::Sub": "s"}`, and so on.
fn to_json(value: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Y;
    match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => {
            if let Some(i) = n.as_i64() {
                json!(i)
            } else if let Some(f) = n.as_f64() {
                json!(f)
            } else {
                panic!("unsupported number {n}")
            }
        }
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| match k {
                    Y::String(k) => (k, to_json(v)),
                    other => panic!("non-string key {other:?}"),
                })
                .collect(),
        ),
        Y::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            let name = tag.trim_start_matches('!');
            let inner = to_json(tagged.value);
            match (name, inner) {
                ("Ref", inner) => json!({ "Ref": inner }),
                ("Condition", inner) => json!({ "Condition": inner }),
                ("GetAtt", Value::String(dotted)) => {
                    let (id, attribute) = dotted
                        .split_once('.')
                        .unwrap_or_else(|| panic!("GetAtt {dotted} lacks an attribute"));
                    json!({ "Fn::GetAtt": [id, attribute] })
                }
                (name, inner) => json!({ format!("Fn::{name}"): inner }),
            }
        }
    }
}
