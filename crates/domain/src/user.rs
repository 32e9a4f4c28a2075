use super::{DomainError, Email, Event, UserId, UserName, Version};

/// A user as the command side sees it: folded from its events.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct User {
    /// `None` until the user is created.
    pub state: Option<UserState>,
    pub version: Version,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserState {
    pub id: UserId,
    pub email: Email,
    pub name: UserName,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UserCommand {
    Create {
        id: UserId,
        email: Email,
        name: UserName,
    },
    /// Sets each field that is `Some`.
    UpdateProfile {
        id: UserId,
        name: Option<UserName>,
        email: Option<Email>,
    },
}

impl User {
    pub fn decide(&self, command: &UserCommand) -> Result<Vec<Event>, DomainError> {
        match (command, &self.state) {
            (UserCommand::Create { id, email, name }, None) => Ok(vec![Event::UserCreated {
                user_id: *id,
                email: email.clone(),
                name: name.clone(),
            }]),
            (UserCommand::Create { id, .. }, Some(_)) => Err(DomainError::AlreadyExists {
                kind: "user",
                id: id.to_string(),
            }),
            (UserCommand::UpdateProfile { id, .. }, None) => Err(DomainError::NotFound {
                kind: "user",
                id: id.to_string(),
            }),
            (UserCommand::UpdateProfile { id, name, email }, Some(state)) => {
                let name = name.clone().filter(|n| *n != state.name);
                let email = email.clone().filter(|e| *e != state.email);
                if name.is_none() && email.is_none() {
                    // Nothing changes, so nothing happened.
                    return Ok(Vec::new());
                }
                Ok(vec![Event::UserProfileUpdated {
                    user_id: *id,
                    name,
                    email,
                }])
            }
        }
    }

    /// Folds one event. Events of other aggregates are ignored; the store
    /// never hands them to this aggregate.
    pub fn apply(mut self, event: &Event) -> Self {
        match event {
            Event::UserCreated {
                user_id,
                email,
                name,
            } => {
                self.state = Some(UserState {
                    id: *user_id,
                    email: email.clone(),
                    name: name.clone(),
                });
            }
            Event::UserProfileUpdated { name, email, .. } => {
                if let Some(state) = self.state.as_mut() {
                    if let Some(name) = name {
                        state.name = name.clone();
                    }
                    if let Some(email) = email {
                        state.email = email.clone();
                    }
                }
            }
            _ => return self,
        }
        self.version += 1;
        self
    }
}

/// The changes to email ownership that appending `events` to `before` makes:
/// an address to claim for the user, and one to release.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct EmailClaims {
    pub claim: Option<Email>,
    pub release: Option<Email>,
}

pub(crate) fn email_claims(before: &User, events: &[Event]) -> EmailClaims {
    let mut claims = EmailClaims::default();
    let mut current = before.state.as_ref().map(|s| s.email.clone());
    for event in events {
        let new_email = match event {
            Event::UserCreated { email, .. } => email,
            Event::UserProfileUpdated {
                email: Some(email), ..
            } => email,
            _ => continue,
        };
        if claims.release.is_none() {
            claims.release = current.take();
        }
        claims.claim = Some(new_email.clone());
        current = Some(new_email.clone());
    }
    claims
}

#[cfg(test)]
mod tests {
    use super::*;

    fn email(raw: &str) -> Email {
        Email::parse(raw).unwrap()
    }
    fn name(raw: &str) -> UserName {
        UserName::parse(raw).unwrap()
    }

    fn given(events: &[Event]) -> User {
        events.iter().fold(User::default(), User::apply)
    }

    fn created(id: UserId) -> Event {
        Event::UserCreated {
            user_id: id,
            email: email("ann@example.com"),
            name: name("Ann"),
        }
    }

    #[test]
    fn create_on_a_new_user_emits_user_created() {
        let id = UserId::new_random();
        let user = given(&[]);
        let events = user
            .decide(&UserCommand::Create {
                id,
                email: email("ann@example.com"),
                name: name("Ann"),
            })
            .unwrap();
        assert_eq!(events, vec![created(id)]);
        let after = events.iter().fold(user, User::apply);
        assert_eq!(after.version, 1);
    }

    #[test]
    fn create_twice_is_already_exists() {
        let id = UserId::new_random();
        let err = given(&[created(id)])
            .decide(&UserCommand::Create {
                id,
                email: email("ann@example.com"),
                name: name("Ann"),
            })
            .unwrap_err();
        assert!(matches!(err, DomainError::AlreadyExists { .. }));
    }

    #[test]
    fn update_of_a_missing_user_is_not_found() {
        let err = given(&[])
            .decide(&UserCommand::UpdateProfile {
                id: UserId::new_random(),
                name: Some(name("Bob")),
                email: None,
            })
            .unwrap_err();
        assert!(matches!(err, DomainError::NotFound { kind: "user", .. }));
    }

    #[test]
    fn update_emits_only_changed_fields() {
        let id = UserId::new_random();
        let events = given(&[created(id)])
            .decide(&UserCommand::UpdateProfile {
                id,
                name: Some(name("Ann")),
                email: Some(email("ann@work.example.com")),
            })
            .unwrap();
        assert_eq!(
            events,
            vec![Event::UserProfileUpdated {
                user_id: id,
                name: None,
                email: Some(email("ann@work.example.com")),
            }]
        );
    }

    #[test]
    fn update_that_changes_nothing_emits_nothing() {
        let id = UserId::new_random();
        let events = given(&[created(id)])
            .decide(&UserCommand::UpdateProfile {
                id,
                name: Some(name("Ann")),
                email: Some(email("ANN@example.com")),
            })
            .unwrap();
        assert!(events.is_empty());
    }

    #[test]
    fn changing_the_email_claims_the_new_one_and_releases_the_old() {
        let id = UserId::new_random();
        let user = given(&[created(id)]);
        let update = Event::UserProfileUpdated {
            user_id: id,
            name: None,
            email: Some(email("new@example.com")),
        };
        assert_eq!(
            email_claims(&user, &[update]),
            EmailClaims {
                claim: Some(email("new@example.com")),
                release: Some(email("ann@example.com")),
            }
        );
        assert_eq!(
            email_claims(&given(&[]), &[created(id)]),
            EmailClaims {
                claim: Some(email("ann@example.com")),
                release: None,
            }
        );
        let rename = Event::UserProfileUpdated {
            user_id: id,
            name: Some(name("Annie")),
            email: None,
        };
        assert_eq!(email_claims(&user, &[rename]), EmailClaims::default());
    }

    #[test]
    fn apply_folds_profile_changes_and_counts_versions() {
        let id = UserId::new_random();
        let user = given(&[
            created(id),
            Event::UserProfileUpdated {
                user_id: id,
                name: Some(name("Annie")),
                email: None,
            },
        ]);
        assert_eq!(user.version, 2);
        let state = user.state.unwrap();
        assert_eq!(state.name, name("Annie"));
        assert_eq!(state.email, email("ann@example.com"));
    }
}
