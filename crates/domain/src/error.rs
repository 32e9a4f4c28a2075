use std::fmt;

use crate::{OrderStatus, UniqueScope, Version};

/// One invalid field of a request, named by its protobuf field path
/// (`items[2].quantity`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldViolation {
    pub field: String,
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            description: description.into(),
        }
    }

    /// The same violation, with its field path under `parent`.
    pub fn under(mut self, parent: &str) -> Self {
        self.field = if self.field.is_empty() {
            parent.to_owned()
        } else {
            format!("{parent}.{}", self.field)
        };
        self
    }
}

/// Every field of a request that failed validation, not only the first.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ValidationError {
    pub violations: Vec<FieldViolation>,
}

impl ValidationError {
    pub fn single(field: impl Into<String>, description: impl Into<String>) -> Self {
        Self {
            violations: vec![FieldViolation::new(field, description)],
        }
    }

    pub fn push(&mut self, violation: FieldViolation) {
        self.violations.push(violation);
    }

    pub fn extend(&mut self, other: ValidationError) {
        self.violations.extend(other.violations);
    }

    /// Collects the error of `result`, if any, and returns its value.
    pub fn check<T>(&mut self, result: Result<T, ValidationError>) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(err) => {
                self.extend(err);
                None
            }
        }
    }

    pub fn is_empty(&self) -> bool {
        self.violations.is_empty()
    }

    /// `Ok(())` when nothing was collected.
    pub fn into_result(self) -> Result<(), ValidationError> {
        if self.is_empty() { Ok(()) } else { Err(self) }
    }

    /// The same violations, with their field paths under `parent`.
    pub fn under(self, parent: &str) -> Self {
        Self {
            violations: self
                .violations
                .into_iter()
                .map(|v| v.under(parent))
                .collect(),
        }
    }
}

impl fmt::Display for ValidationError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for v in &self.violations {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            write!(f, "{}: {}", v.field, v.description)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationError {}

/// Why an aggregate refused a command. Each variant is one cause a client
/// can tell apart (the gRPC edge gives each its own `ErrorInfo.reason`), and
/// carries what a client needs to act on it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    #[error("invalid request: {0}")]
    Invalid(#[from] ValidationError),
    #[error("{kind} {id} not found")]
    NotFound { kind: &'static str, id: String },
    #[error("{kind} {id} already exists")]
    AlreadyExists { kind: &'static str, id: String },
    /// A status change the order's life cycle forbids.
    #[error("order {id} cannot move from {} to {}", from.as_str(), to.as_str())]
    InvalidTransition {
        id: String,
        from: OrderStatus,
        to: OrderStatus,
    },
    /// A unique value another aggregate holds (see [`UniqueScope`]).
    #[error("{}", .0.taken_message())]
    Taken(UniqueScope),
    /// A unique value the aggregate gives up was not its own in the store:
    /// the store is out of step with the aggregate's events.
    #[error("a released {0:?} value was not held")]
    NotHeld(UniqueScope),
    /// A step of a process that the aggregate's state does not allow.
    #[error("{kind} {id} is {state}: it cannot {step}")]
    InvalidStep {
        kind: &'static str,
        id: String,
        state: &'static str,
        step: &'static str,
    },
    /// A product has fewer units left than asked for.
    #[error("{sku} has {available} units left, not the {requested} asked for")]
    OutOfStock {
        sku: String,
        requested: i64,
        available: i64,
    },
    /// Another writer changed an aggregate after the version a decision
    /// read: read it again and retry.
    #[error("{kind} {id} changed after version {version}; read it again and retry")]
    Changed {
        kind: &'static str,
        id: String,
        version: Version,
    },
}
