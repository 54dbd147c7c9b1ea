//! Confidential values and the credentials made of them. A confidential value can be handed
//! around freely but cannot be printed by accident: Debug and Display say `[redacted]`, and there
//! is no Serialize. (Not to be confused with a Kubernetes `Secret`, which is where these values
//! come from.)

use std::fmt;

use super::totp::TotpSeed;

/// A confidential string (client secret, password, access or refresh token).
///
/// `Debug` and `Display` print `[redacted]`; the value is reachable only through
/// [`Confidential::expose`], so every place that uses it is easy to find.
#[derive(Clone, PartialEq, Eq)]
pub struct Confidential(String);

impl Confidential {
    pub fn new(value: String) -> Self {
        Self(value)
    }

    /// The value. Call it only where the value is sent or stored, never to print it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl From<String> for Confidential {
    fn from(value: String) -> Self {
        Self(value)
    }
}

impl From<&str> for Confidential {
    fn from(value: &str) -> Self {
        Self(value.to_owned())
    }
}

impl fmt::Debug for Confidential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Confidential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// The OAuth client issued by the service provider.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCredentials {
    pub client_id: String,
    pub client_secret: Confidential,
    /// How they are sent (`spec.clientAuth`).
    pub auth: ClientAuth,
}

/// How the client id and secret reach the token endpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum ClientAuth {
    /// As `client_id` and `client_secret` fields of the request.
    #[default]
    Body,
    /// As an HTTP Basic `Authorization` header (RFC 6749 2.3.1), not in the fields.
    Basic,
}

impl ClientAuth {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientAuth::Body => "body",
            ClientAuth::Basic => "basic",
        }
    }
}

/// The subscriber whose scope the token gets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriberCredentials {
    pub username: String,
    pub password: Confidential,
    /// The seed of the subscriber's authenticator (`spec.mfa.totpSecretRef`), for a user with
    /// MFA enforced: the password grant's second step answers with its passcode.
    pub totp: Option<TotpSeed>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_and_display_never_show_the_value() {
        let secret = Confidential::new("hunter2-very-secret".to_owned());
        assert_eq!(format!("{secret}"), "[redacted]");
        assert_eq!(format!("{secret:?}"), "[redacted]");
        assert_eq!(format!("{secret:#?}"), "[redacted]");
        assert_eq!(secret.expose(), "hunter2-very-secret");
    }

    #[test]
    fn credentials_debug_hides_secrets_but_keeps_ids() {
        let client = ClientCredentials {
            client_id: "my-client".to_owned(),
            client_secret: Confidential::from("client-secret-value"),
            auth: ClientAuth::Basic,
        };
        let subscriber = SubscriberCredentials {
            username: "111@abc-company".to_owned(),
            password: Confidential::from("subscriber-password"),
            totp: Some(TotpSeed::parse("JBSWY3DPEHPK3PXP").unwrap()),
        };
        let printed = format!("{client:?} {subscriber:?} {client:#?}");
        assert!(printed.contains("my-client"));
        assert!(printed.contains("111@abc-company"));
        assert!(!printed.contains("client-secret-value"));
        assert!(!printed.contains("subscriber-password"));
        assert!(!printed.contains("JBSW"), "{printed}");
    }

    #[test]
    fn equality_compares_values() {
        assert_eq!(Confidential::from("a"), Confidential::new("a".to_owned()));
        assert_ne!(Confidential::from("a"), Confidential::from("b"));
    }
}
