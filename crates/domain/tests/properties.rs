//! Property tests of the two aggregates, through the public API only.
//!
//! Each case generates a sequence of commands for one aggregate, decides each
//! on the current state and folds the events it returns, as the command side
//! does, then checks a property of every step. Refusals are told apart with
//! `is_err` only: which `DomainError` a refusal is belongs to the unit tests.
#![allow(clippy::unwrap_used)]

use std::fmt::Debug;

use dynabridge_domain::{
    AddressParts, Aggregate, Currency, DomainError, Email, Event, Money, Order, OrderCommand,
    OrderId, OrderLine, OrderLines, OrderState, OrderStatus, Quantity, Requirement,
    ShippingAddress, Sku, UniqueScope, User, UserCommand, UserId, UserName, UserState, Version,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use uuid::Uuid;

// ---------------------------------------------------------------------------
// Running commands

/// One command of a run: the state it was decided on, what `decide` said,
/// and the state after folding the events (the same state when refused).
struct Step<'a, A: Aggregate> {
    before: A,
    command: &'a A::Command,
    outcome: Result<Vec<Event>, DomainError>,
    after: A,
}

impl<A: Aggregate> Step<'_, A> {
    /// The events the step appended: none when the command was refused.
    fn events(&self) -> &[Event] {
        self.outcome.as_deref().unwrap_or(&[])
    }
}

fn fold<A: Aggregate>(state: A, events: &[Event]) -> A {
    events.iter().fold(state, A::apply)
}

/// Decides each command on the state the previous ones left, from a new
/// aggregate, and folds the events of those accepted.
fn run<'a, A: Aggregate>(commands: impl IntoIterator<Item = &'a A::Command>) -> Vec<Step<'a, A>> {
    let mut state = A::default();
    commands
        .into_iter()
        .map(|command| {
            let outcome = state.decide(command);
            let after = match &outcome {
                Ok(events) => fold(state.clone(), events),
                Err(_) => state.clone(),
            };
            Step {
                before: std::mem::replace(&mut state, after.clone()),
                command,
                outcome,
                after,
            }
        })
        .collect()
}

// ---------------------------------------------------------------------------
// Strategies

/// Small pools, so that a command often repeats what the user already has.
/// `" Ann "` is `"Ann"` once parsed, and `"ANN@Example.com"` is
/// `"ann@example.com"`.
const NAMES: &[&str] = &["Ann", " Ann ", "Bob", "Cleo"];
const EMAILS: &[&str] = &[
    "ann@example.com",
    "ANN@Example.com",
    "bob@example.com",
    "cleo@example.org",
];

fn name() -> impl Strategy<Value = UserName> {
    prop::sample::select(NAMES).prop_map(|raw| UserName::parse(raw).unwrap())
}

fn email() -> impl Strategy<Value = Email> {
    prop::sample::select(EMAILS).prop_map(|raw| Email::parse(raw).unwrap())
}

fn uuid() -> impl Strategy<Value = Uuid> {
    any::<u128>().prop_map(Uuid::from_u128)
}

fn user_command(id: UserId) -> impl Strategy<Value = UserCommand> {
    prop_oneof![
        1 => (email(), name())
            .prop_map(move |(email, name)| UserCommand::Create { id, email, name }),
        3 => (prop::option::of(name()), prop::option::of(email()))
            .prop_map(move |(name, email)| UserCommand::UpdateProfile { id, name, email }),
    ]
}

/// A user's id and up to 30 commands for it.
fn user_run() -> impl Strategy<Value = (UserId, Vec<UserCommand>)> {
    uuid()
        .prop_map(UserId::from_uuid)
        .prop_flat_map(|id| (Just(id), prop::collection::vec(user_command(id), 0..=30)))
}

fn currency() -> impl Strategy<Value = Currency> {
    prop::sample::select(&["USD", "EUR"][..]).prop_map(|raw| Currency::parse(raw).unwrap())
}

fn sku() -> impl Strategy<Value = Sku> {
    prop::sample::select(&["laptop", "mouse", "USB-C.cable_2m"][..])
        .prop_map(|raw| Sku::parse(raw).unwrap())
}

/// 1 to 5 valid lines in one currency, whose total fits.
fn lines() -> impl Strategy<Value = OrderLines> {
    (
        currency(),
        prop::collection::vec((sku(), 1..=1_000_i64, 0..=100_000_i64), 1..=5),
    )
        .prop_map(|(currency, raw)| {
            let lines = raw
                .into_iter()
                .map(|(sku, quantity, price)| OrderLine {
                    sku,
                    quantity: Quantity::parse(quantity).unwrap(),
                    unit_price: Money::new(currency, price).unwrap(),
                })
                .collect();
            OrderLines::new(lines).unwrap()
        })
}

/// The total a client sends with an order.
#[derive(Clone, Copy, Debug)]
enum Expected {
    Nothing,
    Right,
    /// The right currency, this much too much.
    TooMuch(i64),
    /// The right amount in the other currency.
    OtherCurrency,
}

fn expected() -> impl Strategy<Value = Expected> {
    prop_oneof![
        Just(Expected::Nothing),
        Just(Expected::Right),
        (1..=1_000_i64).prop_map(Expected::TooMuch),
        Just(Expected::OtherCurrency),
    ]
}

fn expected_total(items: &OrderLines, expected: Expected) -> Option<Money> {
    let total = items.total().unwrap();
    let other = |currency: Currency| {
        let usd = Currency::parse("USD").unwrap();
        if currency == usd {
            Currency::parse("EUR").unwrap()
        } else {
            usd
        }
    };
    match expected {
        Expected::Nothing => None,
        Expected::Right => Some(total),
        Expected::TooMuch(by) => Some(Money {
            amount_minor: total.amount_minor + by,
            ..total
        }),
        Expected::OtherCurrency => Some(Money {
            currency: other(total.currency),
            ..total
        }),
    }
}

fn order_command(id: OrderId) -> impl Strategy<Value = OrderCommand> {
    prop_oneof![
        1 => (uuid(), lines(), expected(), prop::option::of(address())).prop_map(
            move |(user_id, items, expected, shipping_address)| OrderCommand::Create {
                id,
                user_id: UserId::from_uuid(user_id),
                expected_total: expected_total(&items, expected),
                items,
                shipping_address,
                purchase_id: None,
            }
        ),
        4 => prop::sample::select(OrderStatus::ALL.to_vec())
            .prop_map(move |status| OrderCommand::UpdateStatus { id, status }),
    ]
}

fn address() -> impl Strategy<Value = ShippingAddress> {
    (
        "[A-Za-z ]{1,20}",
        "[A-Za-z0-9 ]{1,30}",
        "[0-9]{0,6}",
        "[A-Z]{2}",
    )
        .prop_map(|(recipient, line1, postal_code, country_code)| {
            ShippingAddress::parse(AddressParts {
                recipient: &format!("R {recipient}"),
                line1: &format!("L {line1}"),
                line2: "",
                city: "City",
                postal_code: &postal_code,
                country_code: &country_code,
            })
            .expect("a valid address")
        })
}

/// Up to 30 commands for one order.
fn order_run() -> impl Strategy<Value = Vec<OrderCommand>> {
    uuid()
        .prop_map(OrderId::from_uuid)
        .prop_flat_map(|id| prop::collection::vec(order_command(id), 0..=30))
}

// ---------------------------------------------------------------------------
// Properties shared by both aggregates

fn check_versions_are_consecutive<A: Aggregate + Debug>(
    steps: &[Step<'_, A>],
) -> Result<(), TestCaseError> {
    prop_assert_eq!(A::default().version(), 0, "a new aggregate is at version 0");
    let mut seen: Version = 0;
    for step in steps {
        let before = step.before.version();
        prop_assert_eq!(before, seen, "a step starts where the previous one ended");
        let mut state = step.before.clone();
        for (k, event) in (1..).zip(step.events()) {
            state = state.apply(event);
            prop_assert_eq!(
                state.version(),
                before + k,
                "event {} of {:?}, decided at version {}",
                k,
                step.events(),
                before
            );
            if matches!(
                event,
                Event::UserCreated { .. } | Event::OrderCreated { .. }
            ) {
                prop_assert_eq!(
                    state.version(),
                    1,
                    "the event that creates an aggregate is its first: {:?}",
                    event
                );
            }
        }
        let appended = Version::try_from(step.events().len()).unwrap();
        prop_assert_eq!(step.after.version(), before + appended);
        seen = step.after.version();
    }
    let appended: usize = steps.iter().map(|step| step.events().len()).sum();
    prop_assert_eq!(seen, Version::try_from(appended).unwrap());
    Ok(())
}

fn check_a_refusal_changes_nothing<A: Aggregate + Debug + PartialEq>(
    steps: &[Step<'_, A>],
) -> Result<(), TestCaseError>
where
    A::Command: Debug,
{
    for step in steps.iter().filter(|step| step.outcome.is_err()) {
        prop_assert_eq!(
            step.after.version(),
            step.before.version(),
            "the version moved on a refusal of {:?}",
            step.command
        );
        prop_assert_eq!(&step.after, &step.before);
        prop_assert!(
            step.before.decide(step.command).is_err(),
            "{:?} was refused once on {:?}, then accepted",
            step.command,
            step.before
        );
    }
    // Without the refused commands, the run is the same.
    let accepted = steps
        .iter()
        .filter(|step| step.outcome.is_ok())
        .map(|step| step.command);
    let again = run::<A>(accepted);
    prop_assert!(
        again.iter().all(|step| step.outcome.is_ok()),
        "a command accepted in the full run was refused without the refused ones"
    );
    let end = |steps: &[Step<'_, A>]| steps.last().map_or_else(A::default, |s| s.after.clone());
    prop_assert_eq!(end(&again), end(steps));
    Ok(())
}

// ---------------------------------------------------------------------------
// Users

/// The email requirements the events of one decision on `before`, which
/// lead to `after`, must declare: when the address changes, a claim of the
/// new one and a release of the old one (none for a new user); when it does
/// not, nothing of the email scope.
fn expected_email_requirements(id: UserId, before: &User, after: &User) -> Vec<Requirement> {
    let old = before.state.as_ref().map(|s| &s.email);
    let new = after.state.as_ref().map(|s| &s.email);
    if old == new {
        return Vec::new();
    }
    let owner = *id.as_uuid();
    let claim = new.map(|email| Requirement::Claim {
        scope: UniqueScope::Email,
        value: email.as_str().to_owned(),
        owner,
    });
    let release = old.map(|email| Requirement::Release {
        scope: UniqueScope::Email,
        value: email.as_str().to_owned(),
        owner,
    });
    claim.into_iter().chain(release).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn applying_a_users_decided_events_agrees_with_the_decision((_id, commands) in user_run()) {
        for step in run::<User>(&commands) {
            let Ok(events) = &step.outcome else { continue };
            let after = step.after.state.as_ref();
            match step.command {
                UserCommand::Create { id, email, name } => {
                    let created = UserState { id: *id, email: email.clone(), name: name.clone() };
                    prop_assert_eq!(after, Some(&created), "after {:?}", step.command);
                }
                UserCommand::UpdateProfile { name, email, .. } => {
                    let (Some(before), Some(after)) = (step.before.state.as_ref(), after) else {
                        return Err(TestCaseError::fail(format!(
                            "{:?} was accepted on {:?}", step.command, step.before
                        )));
                    };
                    if events.is_empty() {
                        prop_assert!(
                            name.as_ref().is_none_or(|name| *name == before.name)
                                && email.as_ref().is_none_or(|email| *email == before.email),
                            "{:?} changes {:?}, yet decided nothing", step.command, before
                        );
                    }
                    prop_assert_eq!(after.id, before.id);
                    prop_assert_eq!(&after.name, name.as_ref().unwrap_or(&before.name));
                    prop_assert_eq!(&after.email, email.as_ref().unwrap_or(&before.email));
                }
            }
            if !events.is_empty() {
                let again = step.after.decide(step.command);
                prop_assert!(
                    again.as_ref().is_ok_and(Vec::is_empty) || again.is_err(),
                    "{:?} decided again after its events gave {:?}", step.command, again
                );
            }
        }
    }

    #[test]
    fn a_users_versions_are_consecutive((_id, commands) in user_run()) {
        check_versions_are_consecutive(&run::<User>(&commands))?;
    }

    #[test]
    fn a_user_command_is_refused_exactly_when_the_rules_forbid_it((_id, commands) in user_run()) {
        for step in run::<User>(&commands) {
            let exists = step.before.state.is_some();
            let forbidden = match step.command {
                UserCommand::Create { .. } => exists,
                UserCommand::UpdateProfile { .. } => !exists,
            };
            prop_assert_eq!(
                step.outcome.is_err(), forbidden,
                "{:?} on {:?} gave {:?}", step.command, step.before, step.outcome
            );
        }
    }

    #[test]
    fn a_refused_user_command_changes_nothing((_id, commands) in user_run()) {
        check_a_refusal_changes_nothing(&run::<User>(&commands))?;
    }

    #[test]
    fn changing_a_users_email_claims_the_new_one_and_releases_the_old(
        (id, commands) in user_run()
    ) {
        // Each decision's events, as the command side appends them; a
        // refusal appends nothing and so requires nothing.
        for step in run::<User>(&commands) {
            let requirements = step.before.requirements(step.events());
            let expected = expected_email_requirements(id, &step.before, &step.after);
            prop_assert_eq!(
                requirements.len(),
                expected.len(),
                "{:?} appended to {:?} requires {:?}, expected {:?}",
                step.events(),
                step.before,
                requirements,
                expected
            );
            for requirement in &expected {
                prop_assert!(
                    requirements.contains(requirement),
                    "{:?} appended to {:?} requires {:?}, without {:?}",
                    step.events(),
                    step.before,
                    requirements,
                    requirement
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------
// Orders

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn applying_an_orders_decided_events_agrees_with_the_decision(commands in order_run()) {
        for step in run::<Order>(&commands) {
            let Ok(events) = &step.outcome else { continue };
            let after = step.after.state.as_ref();
            match step.command {
                OrderCommand::Create { id, user_id, items, expected_total, shipping_address, purchase_id } => {
                    let total = items.total();
                    prop_assert!(total.is_ok(), "{:?} was accepted without a total", step.command);
                    let total = total.unwrap();
                    if let Some(expected) = expected_total {
                        prop_assert_eq!(*expected, total, "accepted a wrong expected total");
                    }
                    let created = OrderState {
                        id: *id,
                        user_id: *user_id,
                        items: items.as_slice().to_vec(),
                        total,
                        status: OrderStatus::Created,
                        shipping_address: shipping_address.clone(),
                        purchase_id: *purchase_id,
                    };
                    prop_assert_eq!(after, Some(&created), "after {:?}", step.command);
                }
                OrderCommand::UpdateStatus { status, .. } => {
                    let (Some(before), Some(after)) = (step.before.state.as_ref(), after) else {
                        return Err(TestCaseError::fail(format!(
                            "{:?} was accepted on {:?}", step.command, step.before
                        )));
                    };
                    prop_assert_eq!(after.status, *status);
                    let only_the_status_moved =
                        OrderState { status: before.status, ..after.clone() };
                    prop_assert_eq!(&only_the_status_moved, before);
                }
            }
            if !events.is_empty() {
                let again = step.after.decide(step.command);
                prop_assert!(
                    again.as_ref().is_ok_and(Vec::is_empty) || again.is_err(),
                    "{:?} decided again after its events gave {:?}", step.command, again
                );
            }
        }
    }

    #[test]
    fn an_orders_versions_are_consecutive(commands in order_run()) {
        check_versions_are_consecutive(&run::<Order>(&commands))?;
    }

    #[test]
    fn an_order_status_never_takes_a_forbidden_transition(commands in order_run()) {
        for step in run::<Order>(&commands) {
            let before = step.before.state.as_ref().map(|s| s.status);
            let after = step.after.state.as_ref().map(|s| s.status);
            if let (Some(from), Some(to)) = (before, after) {
                prop_assert!(
                    from == to || from.can_move_to(to),
                    "the order moved from {:?} to {:?} on {:?}", from, to, step.command
                );
            }
            let OrderCommand::UpdateStatus { id, status: to } = *step.command else { continue };
            let Some(from) = before else {
                prop_assert!(step.outcome.is_err(), "a missing order's status was updated");
                continue;
            };
            if to == from {
                // Not a transition: asking for the status an order is in is
                // refused, not accepted as a no-op.
                prop_assert!(
                    step.outcome.is_err(),
                    "{:?} -> {:?} gave {:?}", from, to, step.outcome
                );
            } else if from.can_move_to(to) {
                let moved = Event::OrderStatusUpdated {
                    order_id: id,
                    status: to,
                    previous_status: from,
                };
                prop_assert_eq!(&step.outcome, &Ok(vec![moved]), "{:?} -> {:?}", from, to);
            } else {
                prop_assert!(
                    step.outcome.is_err(),
                    "{:?} -> {:?} is forbidden, yet gave {:?}", from, to, step.outcome
                );
            }
        }
    }

    #[test]
    fn an_order_command_is_refused_exactly_when_the_rules_forbid_it(commands in order_run()) {
        for step in run::<Order>(&commands) {
            let forbidden = match (step.command, &step.before.state) {
                (OrderCommand::Create { .. }, Some(_)) => true,
                (OrderCommand::Create { items, expected_total, .. }, None) => {
                    let total = items.total();
                    total.is_err() || expected_total.is_some_and(|e| Ok(e) != total)
                }
                (OrderCommand::UpdateStatus { .. }, None) => true,
                (OrderCommand::UpdateStatus { status, .. }, Some(state)) => {
                    !state.status.can_move_to(*status)
                }
            };
            prop_assert_eq!(
                step.outcome.is_err(), forbidden,
                "{:?} on {:?} gave {:?}", step.command, step.before, step.outcome
            );
        }
    }

    #[test]
    fn a_refused_order_command_changes_nothing(commands in order_run()) {
        check_a_refusal_changes_nothing(&run::<Order>(&commands))?;
    }
}
