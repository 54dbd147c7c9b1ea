//! Secret values and the credentials made of them. A secret can be handed around freely but
//! cannot be printed by accident: Debug and Display say `[redacted]`, and there is no Serialize.

use std::fmt;

/// A secret string (client secret, password, access or refresh token).
///
/// `Debug` and `Display` print `[redacted]`; the value is reachable only through
/// [`SecretString::expose`], so every place that uses it is easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct SecretString(String);

impl SecretString {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The secret value. Call it only where the value is sent or stored, never to print it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for SecretString {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for SecretString {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The OAuth client issued by the service provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: SecretString,
}

/// The subscriber whose scope the token gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriberCredentials {
    pub username: String,
    pub password: SecretString,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = SecretString::new("hunter2-very-secret".to_owned());
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret:#?}"), "[redacted]");
        assert_eq!(secret.expose(), "hunter2-very-secret");
    }

    #[test]
    fn credentials_debug_hides_secrets_but_keeps_ids() {
        let client = ClientCredentials {
            client_id: "my-client".to_owned(),
            client_secret: SecretString::from("client-secret-value"),
        };
        let subscriber = SubscriberCredentials {
            username: "111@abc-company".to_owned(),
            password: SecretString::from("subscriber-password"),
        };
        let printed = format!("{client:?} {subscriber:?} {client:#?}");
        assert!(printed.contains("my-client"));
        assert!(printed.contains("111@abc-company"));
        assert!(!printed.contains("client-secret-value"));
        assert!(!printed.contains("subscriber-password"));
    }

    #[test]
    fn equality_compares_values() {
        assert_eq!(SecretString::from("a"), SecretString::new("a".to_owned()));
        assert_ne!(SecretString::from("a"), SecretString::from("b"));
    }
}
