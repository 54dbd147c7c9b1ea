//! Pure: the credentials a token is obtained with, read from the referenced Secrets, and a
//! digest of every input a token depends on. Talks to nothing.

use k8s_openapi::api::core::v1::Secret;

use crate::core::conditions::{Problem, Reason};
use crate::core::crd::{ClientAuthSpec, NsApiCredentialSpec};
use crate::core::credentials::{
    ClientAuth, ClientCredentials, Confidential, SubscriberCredentials,
};
use crate::core::policy::ValidSpec;
use crate::core::totp::TotpSeed;

/// Values longer than this are refused: no client id, username, password or client secret is
/// this long, and the refresh grant would carry it in a URL.
pub const MAX_VALUE_BYTES: usize = 4096;

/// The value of `key` in `secret`, without one trailing newline (`kubectl create secret
/// --from-file` of a file written by an editor adds it). Nothing else is trimmed: a password may
/// begin or end with a space.
fn value(
    secret: Option<&Secret>,
    secret_name: &str,
    field: &str,
    key: &str,
) -> Result<String, Problem> {
    let secret = secret.ok_or_else(|| {
        Problem::new(
            Reason::SecretMissing,
            format!("Secret {secret_name:?} ({field}) does not exist in this namespace"),
        )
    })?;
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .ok_or_else(|| {
            Problem::new(
                Reason::KeyMissing,
                format!("Secret {secret_name:?} ({field}) has no key {key:?}"),
            )
        })?;
    let text = std::str::from_utf8(&bytes.0).map_err(|_| {
        Problem::new(
            Reason::KeyMissing,
            format!("key {key:?} of Secret {secret_name:?} ({field}) is not UTF-8 text"),
        )
    })?;
    let text = text
        .strip_suffix("\r\n")
        .or_else(|| text.strip_suffix('\n'))
        .unwrap_or(text);
    let unusable = |why: &str| {
        Problem::new(
            Reason::KeyMissing,
            format!("key {key:?} of Secret {secret_name:?} ({field}) {why}"),
        )
    };
    if text.trim().is_empty() {
        return Err(unusable("is empty or only whitespace"));
    }
    if text.len() > MAX_VALUE_BYTES {
        return Err(unusable(&format!(
            "is {} bytes long; values longer than {MAX_VALUE_BYTES} bytes are refused",
            text.len()
        )));
    }
    Ok(text.to_owned())
}

/// The OAuth client named by `spec.clientSecretRef`.
pub fn client_credentials(
    spec: &NsApiCredentialSpec,
    secret: Option<&Secret>,
) -> Result<ClientCredentials, Problem> {
    let r = &spec.client_secret_ref;
    let (client_id, client_secret) = pair(
        secret,
        &r.name,
        "clientSecretRef",
        [&r.client_id_key, &r.client_secret_key],
    )?;
    Ok(ClientCredentials {
        client_id,
        client_secret,
        auth: match spec.client_auth {
            ClientAuthSpec::Body => ClientAuth::Body,
            ClientAuthSpec::Basic => ClientAuth::Basic,
        },
    })
}

/// The subscriber named by `spec.subscriberSecretRef`, without a TOTP seed (see
/// [`credentials`]).
pub fn subscriber_credentials(
    spec: &NsApiCredentialSpec,
    secret: Option<&Secret>,
) -> Result<SubscriberCredentials, Problem> {
    let r = &spec.subscriber_secret_ref;
    let (username, password) = pair(
        secret,
        &r.name,
        "subscriberSecretRef",
        [&r.username_key, &r.password_key],
    )?;
    Ok(SubscriberCredentials {
        username,
        password,
        totp: None,
    })
}

/// The seed named by `spec.mfa.totpSecretRef`, if the spec names one.
pub fn totp_seed(
    spec: &NsApiCredentialSpec,
    secret: Option<&Secret>,
) -> Result<Option<TotpSeed>, Problem> {
    let Some(mfa) = &spec.mfa else {
        return Ok(None);
    };
    let r = &mfa.totp_secret_ref;
    let text = value(secret, &r.name, "mfa.totpSecretRef", &r.key)?;
    TotpSeed::parse(&text).map(Some).map_err(|why| {
        Problem::new(
            Reason::KeyMissing,
            format!(
                "key {:?} of Secret {:?} (mfa.totpSecretRef) {why}: it must hold the base32 seed of the subscriber's authenticator",
                r.key, r.name
            ),
        )
    })
}

/// The names of the Secrets the credentials are read from, each once.
pub fn input_secret_names(spec: &NsApiCredentialSpec) -> Vec<&str> {
    let mut names = vec![
        spec.client_secret_ref.name.as_str(),
        spec.subscriber_secret_ref.name.as_str(),
    ];
    if let Some(mfa) = &spec.mfa {
        names.push(&mfa.totp_secret_ref.name);
    }
    let mut seen = std::collections::BTreeSet::new();
    names.retain(|name| seen.insert(*name));
    names
}

/// Both credentials, from the input Secrets as `secret` finds them by name (`None`: no such
/// Secret): the client, the subscriber and, with `spec.mfa`, the subscriber's TOTP seed. The
/// operator and the CLI's `check` read them through this one function.
pub fn credentials<'a>(
    spec: &NsApiCredentialSpec,
    secret: impl Fn(&str) -> Option<&'a Secret>,
) -> Result<(ClientCredentials, SubscriberCredentials), Problem> {
    let client = client_credentials(spec, secret(&spec.client_secret_ref.name))?;
    let mut subscriber = subscriber_credentials(spec, secret(&spec.subscriber_secret_ref.name))?;
    if let Some(mfa) = &spec.mfa {
        subscriber.totp = totp_seed(spec, secret(&mfa.totp_secret_ref.name))?;
    }
    Ok((client, subscriber))
}

/// An identity and its secret (client id and secret, username and password) from two keys.
fn pair(
    secret: Option<&Secret>,
    secret_name: &str,
    field: &str,
    [identity_key, secret_key]: [&str; 2],
) -> Result<(String, Confidential), Problem> {
    let identity = value(secret, secret_name, field, identity_key)?;
    let confidential = value(secret, secret_name, field, secret_key)?;
    Ok((identity, Confidential::new(confidential)))
}

/// A digest of everything a token depends on: the API URL, the token API, both credentials
/// and how the client's are sent (`spec.clientAuth`: a change is a new password grant). It is an HMAC keyed with the client secret, so a pod that can read the output
/// Secret (where the digest is stored) cannot use it to guess the password offline.
pub fn fingerprint(
    spec: &ValidSpec,
    client: &ClientCredentials,
    subscriber: &SubscriberCredentials,
) -> String {
    let key = ring::hmac::Key::new(
        ring::hmac::HMAC_SHA256,
        client.client_secret.expose().as_bytes(),
    );
    let mut ctx = ring::hmac::Context::with_key(&key);
    for part in [
        spec.base_url.as_str(),
        spec.token_api.as_str(),
        &client.client_id,
        client.client_secret.expose(),
        &subscriber.username,
        subscriber.password.expose(),
    ] {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    // Only when not the default, so that the fingerprints recorded before `clientAuth`
    // existed stay valid (an upgrade costs no password grant).
    if client.auth != ClientAuth::Body {
        let part = client.auth.as_str();
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let tag = ctx.sign();
    let hex: String = tag.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("v1:{hex}")
}

/// The two digests of one attempt, as the operator keys them: `token` is stored with the token
/// (see [`fingerprint`]) and says whether the token in place was obtained with the inputs of
/// now; `attempt` is stored in the status by a failure and keys its backoff
/// (`status::failure_gate`). The reconciler and the CLI's `check` both take them from
/// [`fingerprints`], so that `check` predicts a backoff exactly as the operator applies it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fingerprints {
    pub token: String,
    pub attempt: String,
}

/// The fingerprints of an attempt with these inputs; `ca_digest` is the digest of the
/// credential's CA bundle ([`ca_bundle_digest`]), if it has one.
pub fn fingerprints(
    spec: &ValidSpec,
    client: &ClientCredentials,
    subscriber: &SubscriberCredentials,
    ca_digest: Option<&str>,
) -> Fingerprints {
    let token = fingerprint(spec, client, subscriber);
    let totp = subscriber.totp.as_ref().map(TotpSeed::key);
    let attempt = attempt_fingerprint(&token, spec, ca_digest, totp);
    Fingerprints { token, attempt }
}

/// A digest of a CA bundle's text (`spec.caBundle`): the key of the client that trusts it, and
/// part of the attempt fingerprint (so that a fixed bundle is tried at once).
pub fn ca_bundle_digest(text: &str) -> String {
    let digest = ring::digest::digest(&ring::digest::SHA256, text.as_bytes());
    digest.as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A digest of everything an attempt depends on: the token's inputs (`fingerprint`), and what
/// reaches the API without changing the token (the fallback nodes, the CA bundle's digest, the
/// TOTP seed's digest). Kept in the status, it lets a fix of any of them retry at once, past a
/// backoff, without replacing a valid token. Without any, it is the token's own fingerprint.
fn attempt_fingerprint(
    fingerprint: &str,
    spec: &ValidSpec,
    ca_digest: Option<&str>,
    totp_key: Option<&str>,
) -> String {
    if spec.fallbacks.is_empty() && ca_digest.is_none() && totp_key.is_none() {
        return fingerprint.to_owned();
    }
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    let fallbacks = spec.fallbacks.iter().map(|u| u.as_str());
    // The seed's digest only when there is one, so that the attempts recorded before
    // `spec.mfa` existed keep their fingerprint.
    let totp = totp_key.map(|key| format!("totp:{key}"));
    for part in std::iter::once(fingerprint)
        .chain(fallbacks)
        .chain(std::iter::once(ca_digest.unwrap_or("")))
        .chain(totp.as_deref())
    {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part.as_bytes());
    }
    let hex: String = ctx.finish().as_ref()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    format!("a1:{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::policy::tests::spec;
    use crate::core::policy::{Policy, validate};
    use crate::core::token::{RefreshMethod, TokenApi};
    use k8s_openapi::ByteString;

    fn secret(pairs: &[(&str, &[u8])]) -> Secret {
        Secret {
            data: Some(
                pairs
                    .iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    #[test]
    fn credentials_come_from_the_referenced_keys() {
        let s = spec();
        let client = secret(&[("client_id", b"abc"), ("client_secret", b"s3cr3t\n")]);
        let subscriber = secret(&[("username", b"111@abc-company"), ("pw", b"pa55")]);
        let c = client_credentials(&s, Some(&client)).unwrap();
        assert_eq!(c.client_id, "abc");
        assert_eq!(c.client_secret.expose(), "s3cr3t");
        assert_eq!(c.auth, ClientAuth::Body);
        let mut basic = s.clone();
        basic.client_auth = ClientAuthSpec::Basic;
        let c = client_credentials(&basic, Some(&client)).unwrap();
        assert_eq!(c.auth, ClientAuth::Basic);
        let u = subscriber_credentials(&s, Some(&subscriber)).unwrap();
        assert_eq!(u.username, "111@abc-company");
        assert_eq!(u.password.expose(), "pa55");
    }

    #[test]
    fn only_one_trailing_newline_is_removed() {
        let s = spec();
        for (stored, used) in [
            (&b"pa55\n"[..], "pa55"),
            (b"pa55\r\n", "pa55"),
            (b" pa55 ", " pa55 "),
            (b"pa55\n\n", "pa55\n"),
            (b"\tpa55", "\tpa55"),
        ] {
            let subscriber = secret(&[("username", b"u"), ("pw", stored)]);
            let u = subscriber_credentials(&s, Some(&subscriber)).unwrap();
            assert_eq!(u.password.expose(), used, "{stored:?}");
        }
    }

    #[test]
    fn whitespace_only_and_oversized_values_are_refused() {
        let s = spec();
        let huge = vec![b'x'; MAX_VALUE_BYTES + 1];
        for bad in [&b" \n"[..], b"\n", b"\t ", &huge] {
            let subscriber = secret(&[("username", b"u"), ("pw", bad)]);
            let problem = subscriber_credentials(&s, Some(&subscriber)).unwrap_err();
            assert_eq!(problem.reason, Reason::KeyMissing);
            assert!(problem.message.contains("\"pw\""), "{problem:?}");
            assert!(!problem.message.contains("xxxx"), "{problem:?}");
        }
    }

    #[test]
    fn missing_inputs_are_reported_without_values() {
        let s = spec();
        let problem = client_credentials(&s, None).unwrap_err();
        assert_eq!(problem.reason, Reason::SecretMissing);
        assert!(problem.message.contains("\"client\""));
        let no_password = secret(&[("username", b"u"), ("password", b"wrong-key")]);
        let problem = subscriber_credentials(&s, Some(&no_password)).unwrap_err();
        assert_eq!(problem.reason, Reason::KeyMissing);
        assert!(problem.message.contains("\"pw\""));
        assert!(!problem.message.contains("wrong-key"));
        let empty = secret(&[("client_id", b"  "), ("client_secret", b"x")]);
        assert_eq!(
            client_credentials(&s, Some(&empty)).unwrap_err().reason,
            Reason::KeyMissing
        );
    }

    #[test]
    fn the_totp_seed_comes_from_its_own_key_and_keys_the_attempt_only() {
        let mut s = spec();
        s.mfa = Some(crate::core::crd::MfaSpec {
            totp_secret_ref: crate::core::crd::SecretKeyRef {
                name: "mfa".into(),
                key: "seed".into(),
            },
        });
        let client = secret(&[("client_id", b"abc"), ("client_secret", b"s3cr3t")]);
        let user = secret(&[("username", b"111@abc"), ("pw", b"pa55")]);
        let mfa = secret(&[("seed", b"jbsw y3dp ehpk 3pxp\n")]);
        let by_name = |name: &str| match name {
            "client" => Some(&client),
            "mfa" => Some(&mfa),
            _ => Some(&user),
        };
        let (c, u) = credentials(&s, by_name).unwrap();
        assert_eq!(c.client_id, "abc");
        let seed = u.totp.clone().expect("a seed");
        assert_eq!(seed, TotpSeed::parse("JBSWY3DPEHPK3PXP").unwrap());
        assert_eq!(input_secret_names(&s), ["client", "subscriber", "mfa"]);

        // A missing Secret or key, or a value that is no seed: a problem that names the field,
        // never the value.
        let problem =
            credentials(&s, |name| (name != "mfa").then(|| by_name(name)).flatten()).unwrap_err();
        assert_eq!(problem.reason, Reason::SecretMissing);
        assert!(problem.message.contains("mfa.totpSecretRef"), "{problem:?}");
        let not_a_seed = secret(&[("seed", b"not-a-seed!")]);
        let problem = credentials(&s, |name| match name {
            "mfa" => Some(&not_a_seed),
            other => by_name(other),
        })
        .unwrap_err();
        assert_eq!(problem.reason, Reason::KeyMissing);
        assert!(problem.message.contains("base32"), "{problem:?}");
        assert!(!problem.message.contains("not-a-seed"), "{problem:?}");

        // The seed keys the attempt (a fixed seed is tried at once), not the token (a new seed
        // needs no new login).
        let valid = validate(&s, &Policy::default()).unwrap();
        let mut without = u.clone();
        without.totp = None;
        let plain = fingerprints(&valid, &c, &without, None);
        let with = fingerprints(&valid, &c, &u, None);
        assert_eq!(plain.attempt, plain.token);
        assert_eq!(with.token, plain.token);
        assert_ne!(with.attempt, plain.attempt);
        let mut other = u.clone();
        other.totp = Some(TotpSeed::parse("GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ").unwrap());
        assert_ne!(fingerprints(&valid, &c, &other, None).attempt, with.attempt);
    }

    #[test]
    fn fingerprint_changes_with_every_input_and_hides_them() {
        let valid = validate(&spec(), &Policy::default()).unwrap();
        let client = ClientCredentials {
            client_id: "abc".into(),
            client_secret: Confidential::from("s3cr3t"),
            auth: ClientAuth::Body,
        };
        let user = SubscriberCredentials {
            username: "111@abc".into(),
            password: Confidential::from("pa55"),
            totp: None,
        };
        let base = fingerprint(&valid, &client, &user);
        assert!(base.starts_with("v1:") && base.len() == 35, "{base}");
        assert_eq!(base, fingerprint(&valid, &client, &user));
        let mut other_pw = user.clone();
        other_pw.password = Confidential::from("pa56");
        assert_ne!(base, fingerprint(&valid, &client, &other_pw));
        let mut other_secret = client.clone();
        other_secret.client_secret = Confidential::from("s3cr3u");
        assert_ne!(base, fingerprint(&valid, &other_secret, &user));
        let mut other_api = valid.clone();
        other_api.token_api = TokenApi::V1;
        assert_ne!(base, fingerprint(&other_api, &client, &user));
        let mut basic = client.clone();
        basic.auth = ClientAuth::Basic;
        assert_ne!(base, fingerprint(&valid, &basic, &user));
        let mut other_method = valid.clone();
        other_method.refresh_method = RefreshMethod::Get;
        assert_eq!(base, fingerprint(&other_method, &client, &user));
    }

    #[test]
    fn the_attempt_fingerprint_adds_fallbacks_and_the_ca_bundle_to_the_tokens() {
        let valid = validate(&spec(), &Policy::default()).unwrap();
        let client = ClientCredentials {
            client_id: "abc".into(),
            client_secret: Confidential::from("s3cr3t"),
            auth: ClientAuth::Body,
        };
        let user = SubscriberCredentials {
            username: "111@abc".into(),
            password: Confidential::from("pa55"),
            totp: None,
        };
        let token = fingerprint(&valid, &client, &user);
        // Neither fallbacks nor a CA bundle: the attempt is keyed by the token's inputs.
        let plain = fingerprints(&valid, &client, &user, None);
        assert_eq!(plain.token, token);
        assert_eq!(plain.attempt, token);
        // A CA bundle changes the attempt, not the token; a different bundle, another attempt.
        let digest = ca_bundle_digest("-----BEGIN CERTIFICATE-----\nA\n");
        assert_eq!(digest.len(), 32);
        assert_eq!(digest, ca_bundle_digest("-----BEGIN CERTIFICATE-----\nA\n"));
        let with_ca = fingerprints(&valid, &client, &user, Some(&digest));
        assert_eq!(with_ca.token, token);
        assert!(with_ca.attempt.starts_with("a1:"), "{with_ca:?}");
        assert_ne!(with_ca.attempt, token);
        let other_ca = ca_bundle_digest("-----BEGIN CERTIFICATE-----\nB\n");
        assert_ne!(
            fingerprints(&valid, &client, &user, Some(&other_ca)).attempt,
            with_ca.attempt
        );
        // So do the fallback nodes.
        let mut with_fallback = spec();
        with_fallback.fallback_api_base_urls = vec!["https://node2.example.com".into()];
        let with_fallback = validate(&with_fallback, &Policy::default()).unwrap();
        let fallback = fingerprints(&with_fallback, &client, &user, None);
        assert_eq!(fallback.token, token);
        assert_ne!(fallback.attempt, token);
        assert_ne!(fallback.attempt, with_ca.attempt);
        // The password reaches both.
        let mut other_pw = user.clone();
        other_pw.password = Confidential::from("pa56");
        let moved = fingerprints(&valid, &client, &other_pw, Some(&digest));
        assert_ne!(moved.token, with_ca.token);
        assert_ne!(moved.attempt, with_ca.attempt);
    }
}
