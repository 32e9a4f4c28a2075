//! The event schema registry's content: a JSON Schema (draft 4, the dialect
//! EventBridge's registry takes) of the published envelope for every shape
//! in [`crate::upcast::SHAPES`], generated from the descriptors of `proto/`
//! as the ProtoJSON mapping writes them: camelCase names, 64-bit integers
//! as strings, enums by name, timestamps as RFC 3339.
//!
//! The generated documents are kept in `schemas/events/` and in the
//! `AWS::EventSchemas::Schema` resources of
//! `deploy/cloudformation/event-schemas.yaml`; tests
//! hold both to this generator, and every golden fixture to its schema.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use prost::Message;
use prost_types::field_descriptor_proto::{Label, Type};
use prost_types::{DescriptorProto, FieldDescriptorProto, FileDescriptorSet};
use serde_json::{Map, Value, json};

use crate::upcast::{SHAPES, Shape};

const PACKAGE: &str = "dynabridge.v1";
const ENVELOPE: &str = "EventEnvelope";
/// The envelope's fields that an entry may leave out: ProtoJSON omits an
/// empty field, and these are empty on most entries.
const ENVELOPE_OPTIONAL: &[&str] = &["replay_id"];

/// The registry's name for a shape: `OrderCreated.v2`.
pub fn schema_name(shape: &Shape) -> String {
    format!("{}.v{}", shape.event_type, shape.schema_version)
}

/// Every shape's schema, by [`schema_name`].
pub fn all() -> BTreeMap<String, Value> {
    let descriptors = Descriptors::load();
    SHAPES
        .iter()
        .map(|shape| (schema_name(shape), descriptors.envelope_schema(shape)))
        .collect()
}

/// The template's markers around the generated schema resources.
pub const TEMPLATE_BEGIN: &str = "  # BEGIN generated event schemas";
pub const TEMPLATE_END: &str = "  # END generated event schemas";

/// The CloudFormation resources of every schema, as they stand between the
/// template's markers: one `AWS::EventSchemas::Schema` per shape, in the
/// registry `EventSchemaRegistry`, its content the schema as one line of
/// JSON without its descriptions: CloudFormation caps a template at 51,200
/// bytes, and the proto comments, repeated in every schema, would pass it.
/// The files in `schemas/events/` keep them.
pub fn template_resources() -> String {
    let mut yaml = String::new();
    for (shape, (name, mut schema)) in SHAPES.iter().zip(all()) {
        let id = format!("EventSchema{}V{}", shape.event_type, shape.schema_version);
        strip_descriptions(&mut schema);
        let content = serde_json::to_string(&schema).expect("a schema serialises");
        yaml.push_str(&format!(
            "  {id}:\n    Type: AWS::EventSchemas::Schema\n    Properties:\n      \
             RegistryName: !GetAtt EventSchemaRegistry.RegistryName\n      \
             SchemaName: {name}\n      Type: JSONSchemaDraft4\n      \
             Description: The detail of {} events of schema version {}.\n      \
             Content: >-\n        {content}\n",
            shape.event_type, shape.schema_version
        ));
    }
    yaml
}

/// Removes every `description` keyword of a schema, at any depth (a
/// property named `description` stays: it sits under `properties`).
fn strip_descriptions(schema: &mut Value) {
    match schema {
        Value::Object(object) => {
            object.remove("description");
            for (key, value) in object.iter_mut() {
                if key == "properties" {
                    if let Value::Object(properties) = value {
                        properties.values_mut().for_each(strip_descriptions);
                    }
                } else {
                    strip_descriptions(value);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(strip_descriptions),
        _ => {}
    }
}

struct Descriptors {
    messages: HashMap<String, DescriptorProto>,
    enums: HashMap<String, Vec<String>>,
    /// Leading comments of messages and fields, by their full name
    /// (`.dynabridge.v1.Money`, `.dynabridge.v1.Money.currency_code`).
    comments: HashMap<String, String>,
}

impl Descriptors {
    fn load() -> Self {
        let set = FileDescriptorSet::decode(crate::pb::FILE_DESCRIPTOR_SET)
            .expect("the build's own descriptor set decodes");
        let mut descriptors = Self {
            messages: HashMap::new(),
            enums: HashMap::new(),
            comments: HashMap::new(),
        };
        for file in &set.file {
            let package = format!(".{}", file.package());
            for (i, message) in file.message_type.iter().enumerate() {
                let name = format!("{package}.{}", message.name());
                // Source paths: 4 = message_type, 2 = field.
                descriptors.comment(file, &[4, i as i32], &name);
                for (j, field) in message.field.iter().enumerate() {
                    descriptors.comment(
                        file,
                        &[4, i as i32, 2, j as i32],
                        &format!("{name}.{}", field.name()),
                    );
                }
                descriptors.messages.insert(name, message.clone());
            }
            for enumeration in &file.enum_type {
                let values = enumeration
                    .value
                    .iter()
                    .map(|v| v.name().to_owned())
                    .collect();
                descriptors
                    .enums
                    .insert(format!("{package}.{}", enumeration.name()), values);
            }
        }
        descriptors
    }

    fn comment(&mut self, file: &prost_types::FileDescriptorProto, path: &[i32], name: &str) {
        let Some(info) = &file.source_code_info else {
            return;
        };
        if let Some(location) = info.location.iter().find(|l| l.path == path) {
            let text = location.leading_comments().trim();
            if !text.is_empty() {
                let text = text.lines().map(str::trim).collect::<Vec<_>>().join("\n");
                self.comments.insert(name.to_owned(), text);
            }
        }
    }

    fn message(&self, name: &str) -> &DescriptorProto {
        self.messages
            .get(name)
            .unwrap_or_else(|| panic!("{name} is not in proto/"))
    }

    /// The envelope with the payload of `shape` as its only payload field,
    /// the event type and schema version fixed.
    fn envelope_schema(&self, shape: &Shape) -> Value {
        let envelope_name = format!(".{PACKAGE}.{ENVELOPE}");
        let envelope = self.message(&envelope_name);
        let payload_name = format!(".{PACKAGE}.{}", shape.message);
        let mut definitions = BTreeSet::new();
        let mut properties = Map::new();
        let mut required = Vec::new();
        for field in &envelope.field {
            let is_payload = field.oneof_index.is_some() && !field.proto3_optional();
            let schema = if is_payload {
                // The payload's field for this type, with this version's
                // message; the other types' fields are not allowed.
                if self.message(field.type_name()).name() != shape.event_type {
                    continue;
                }
                self.reference(&payload_name, &mut definitions)
            } else {
                let mut schema = self.field_schema(field, &mut definitions);
                match field.name() {
                    "event_type" => schema = json!({ "enum": [shape.event_type] }),
                    "schema_version" => schema = json!({ "enum": [shape.schema_version] }),
                    _ => {}
                }
                schema
            };
            let schema = self.described(schema, &format!("{envelope_name}.{}", field.name()));
            if !ENVELOPE_OPTIONAL.contains(&field.name()) {
                required.push(Value::String(field.json_name().to_owned()));
            }
            properties.insert(field.json_name().to_owned(), schema);
        }
        let mut done = BTreeMap::new();
        while let Some(name) = definitions.pop_first() {
            if done.contains_key(&name) {
                continue;
            }
            let schema = self.message_schema(&name, &mut definitions);
            done.insert(name, schema);
        }
        let definitions: Map<String, Value> = done
            .into_iter()
            .map(|(name, schema)| (definition_key(&name), schema))
            .collect();
        let payload_comment = self
            .comments
            .get(&payload_name)
            .cloned()
            .unwrap_or_default();
        json!({
            "$schema": "http://json-schema.org/draft-04/schema#",
            "title": schema_name(shape),
            "description": format!(
                "The EventBridge detail of a {} event, schema version {}: a dynabridge.v1.EventEnvelope in the ProtoJSON mapping. Generated from proto/ by dynabridge::event_schemas.\n\n{payload_comment}",
                shape.event_type, shape.schema_version
            ).trim_end().to_owned(),
            "type": "object",
            "properties": properties,
            "required": required,
            "additionalProperties": false,
            "definitions": definitions,
        })
    }

    fn message_schema(&self, name: &str, definitions: &mut BTreeSet<String>) -> Value {
        let message = self.message(name);
        let properties: Map<String, Value> = message
            .field
            .iter()
            .map(|field| {
                let schema = self.field_schema(field, definitions);
                (
                    field.json_name().to_owned(),
                    self.described(schema, &format!("{name}.{}", field.name())),
                )
            })
            .collect();
        self.described(
            json!({
                "type": "object",
                "properties": properties,
                "additionalProperties": false,
            }),
            name,
        )
    }

    fn field_schema(
        &self,
        field: &FieldDescriptorProto,
        definitions: &mut BTreeSet<String>,
    ) -> Value {
        let single = match field.r#type() {
            Type::String => json!({ "type": "string" }),
            Type::Bool => json!({ "type": "boolean" }),
            Type::Int32 | Type::Sint32 | Type::Sfixed32 => json!({ "type": "integer" }),
            Type::Uint32 | Type::Fixed32 => json!({ "type": "integer", "minimum": 0 }),
            Type::Int64 | Type::Sint64 | Type::Sfixed64 => {
                json!({ "type": "string", "pattern": "^-?[0-9]+$" })
            }
            Type::Uint64 | Type::Fixed64 => json!({ "type": "string", "pattern": "^[0-9]+$" }),
            Type::Double | Type::Float => json!({ "type": "number" }),
            Type::Bytes => json!({ "type": "string", "contentEncoding": "base64" }),
            Type::Enum => {
                let values = self
                    .enums
                    .get(field.type_name())
                    .unwrap_or_else(|| panic!("enum {} is not in proto/", field.type_name()));
                json!({ "type": "string", "enum": values })
            }
            Type::Message if field.type_name() == ".google.protobuf.Timestamp" => {
                json!({ "type": "string", "format": "date-time" })
            }
            Type::Message => self.reference(field.type_name(), definitions),
            Type::Group => panic!("{}: groups are not proto3", field.name()),
        };
        if field.label() == Label::Repeated {
            json!({ "type": "array", "items": single })
        } else {
            single
        }
    }

    fn reference(&self, name: &str, definitions: &mut BTreeSet<String>) -> Value {
        definitions.insert(name.to_owned());
        json!({ "$ref": format!("#/definitions/{}", definition_key(name)) })
    }

    fn described(&self, mut schema: Value, name: &str) -> Value {
        if let (Some(comment), Some(object)) = (self.comments.get(name), schema.as_object_mut()) {
            // A $ref takes no siblings in draft 4: describe it through allOf.
            if object.contains_key("$ref") {
                return json!({ "description": comment, "allOf": [schema] });
            }
            object.insert("description".into(), Value::String(comment.clone()));
        }
        schema
    }
}

/// `.dynabridge.v1.Money` -> `dynabridge.v1.Money`.
fn definition_key(name: &str) -> String {
    name.trim_start_matches('.').to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::golden::FIXTURES;

    fn root() -> std::path::PathBuf {
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
    }

    fn validator(schema: &Value) -> jsonschema::Validator {
        jsonschema::draft4::new(schema).expect("a valid draft 4 schema")
    }

    /// `schemas/events/` is what the generator makes of `proto/` today.
    /// `DYNABRIDGE_BLESS=1` rewrites it after a change to the events.
    #[test]
    fn the_committed_schemas_are_generated_from_proto() {
        let dir = root().join("schemas/events");
        let schemas = all();
        if std::env::var_os("DYNABRIDGE_BLESS").is_some() {
            std::fs::create_dir_all(&dir).unwrap();
            for (name, schema) in &schemas {
                let text = serde_json::to_string_pretty(schema).unwrap() + "\n";
                std::fs::write(dir.join(format!("{name}.json")), text).unwrap();
            }
        }
        let mut on_disk = BTreeSet::new();
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            let name = path.file_stem().unwrap().to_str().unwrap().to_owned();
            let committed: Value =
                serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
            let generated = schemas
                .get(&name)
                .unwrap_or_else(|| panic!("{} is no shape's schema", path.display()));
            assert_eq!(
                &committed, generated,
                "{name}: regenerate with DYNABRIDGE_BLESS=1 cargo test -p dynabridge --lib event_schemas"
            );
            on_disk.insert(name);
        }
        assert_eq!(on_disk, schemas.keys().cloned().collect());
    }

    /// The template's schema resources are the generator's; bless rewrites
    /// them with the files.
    #[test]
    fn the_template_registers_every_schema() {
        let path = root().join("deploy/cloudformation/event-schemas.yaml");
        let template = std::fs::read_to_string(&path).unwrap();
        let begin = template.find(TEMPLATE_BEGIN).expect("the begin marker");
        let body = begin + template[begin..].find('\n').unwrap() + 1;
        let end = template.find(TEMPLATE_END).expect("the end marker");
        let generated = template_resources();
        if std::env::var_os("DYNABRIDGE_BLESS").is_some() {
            let text = format!("{}{generated}{}", &template[..body], &template[end..]);
            std::fs::write(&path, text).unwrap();
            return;
        }
        assert!(
            template[body..end] == generated,
            "the template's schemas are stale: DYNABRIDGE_BLESS=1 cargo test -p dynabridge --lib event_schemas"
        );
    }

    #[test]
    fn every_fixture_validates_against_its_schema_and_no_other_version() {
        let schemas = all();
        for fixture in FIXTURES {
            let detail: Value = serde_json::from_str(fixture.published).unwrap();
            let (event_type, version) = fixture.shape();
            for shape in SHAPES.iter().filter(|s| s.event_type == event_type) {
                let name = schema_name(shape);
                let errors: Vec<String> = validator(&schemas[&name])
                    .iter_errors(&detail)
                    .map(|e| format!("{} at {}", e, e.instance_path()))
                    .collect();
                if shape.schema_version == version {
                    assert!(
                        errors.is_empty(),
                        "{} against {name}: {errors:?}",
                        fixture.name
                    );
                } else {
                    assert!(!errors.is_empty(), "{} passed {name}", fixture.name);
                }
            }
        }
    }

    #[test]
    fn a_schema_refuses_what_its_shape_does_not_allow() {
        let schemas = all();
        let v2 = FIXTURES
            .iter()
            .find(|f| f.name == "OrderCreated.v2")
            .unwrap();
        let detail: Value = serde_json::from_str(v2.published).unwrap();
        let validator = validator(&schemas["OrderCreated.v2"]);
        assert!(validator.is_valid(&detail));
        let broken = |edit: &dyn Fn(&mut Value)| {
            let mut copy = detail.clone();
            edit(&mut copy);
            copy
        };
        for bad in [
            broken(&|d| d["version"] = json!(1)),
            broken(&|d| d["eventType"] = json!("OrderStatusUpdated")),
            broken(&|d| d["orderCreated"]["items"][0]["unitPrice"]["amountMinor"] = json!("1.5")),
            broken(&|d| d["orderCreated"]["surprise"] = json!(true)),
            broken(&|d| d["occurredAt"] = json!(17)),
            broken(&|d| {
                d.as_object_mut().unwrap().remove("orderCreated");
            }),
            broken(&|d| d["userCreated"] = json!({})),
        ] {
            assert!(!validator.is_valid(&bad), "{bad}");
        }
    }
}
