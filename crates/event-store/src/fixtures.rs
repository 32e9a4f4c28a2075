//! Ready-made appends for tests, here and in other crates (feature
//! `fixtures`).
#![allow(clippy::unwrap_used)]

use dynabridge_domain::{Email, Event, Requirement, StoredEvent, UniqueScope, UserId, UserName};

use crate::{Append, CommandOutcome, IdempotencyRecord};

/// `CreateUser`'s append for a new user with `email`, under `request_id`,
/// claiming the email.
pub fn new_user_append(request_id: &str, email: &str) -> (UserId, Append) {
    let user_id = UserId::new_random();
    let now = chrono::Utc::now();
    let correlation_id = format!("corr-{request_id}");
    let event = StoredEvent {
        event_id: uuid::Uuid::new_v4(),
        version: 1,
        occurred_at: now,
        request_id: request_id.into(),
        correlation_id: correlation_id.clone(),
        trace_parent: None,
        event: Event::UserCreated {
            user_id,
            email: Email::parse(email).unwrap(),
            name: UserName::parse("Test User").unwrap(),
        },
    };
    let append = Append {
        idempotency: IdempotencyRecord {
            request_id: request_id.into(),
            request_hash: "hash".into(),
            outcome: CommandOutcome {
                aggregate_id: user_id.to_string(),
                version: 1,
                event_ids: vec![event.event_id.to_string()],
                correlation_id,
                total: None,
            },
        },
        record: crate::RecordIn::IdempotencyTable,
        requirements: vec![Requirement::Claim {
            scope: UniqueScope::Email,
            value: Email::parse(email).unwrap().as_str().to_owned(),
            owner: *user_id.as_uuid(),
        }],
        events: vec![event],
        now,
    };
    (user_id, append)
}
