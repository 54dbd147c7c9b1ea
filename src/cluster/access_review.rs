//! Who may read `/metrics`, asked of the Kubernetes API the way kube-rbac-proxy and
//! controller-runtime's `WithAuthenticationAndAuthorization` filter ask it: a TokenReview
//! (authentication.k8s.io/v1) names the user behind a Bearer token, then a SubjectAccessReview
//! (authorization.k8s.io/v1) asks whether that user may `get` the non-resource URL. Each call
//! has a deadline. The token is sent only to the API server, and never logged.

use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Api;
use kube::api::PostParams;

/// What the API server said about one token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// The token names no user (invalid, expired, or of a deleted ServiceAccount): 401.
    Unauthenticated,
    /// The user may not `get` the path: 403.
    Forbidden { user: String },
    /// The user may `get` the path.
    Allowed { user: String },
}

/// The review could not be completed (the API server did not answer in time, or refused the
/// review itself, e.g. for lack of RBAC on tokenreviews): nothing to cache, the scrape fails.
#[derive(Debug, thiserror::Error)]
pub enum ReviewError {
    #[error("the {0} did not complete within {1:?}")]
    Timeout(&'static str, Duration),
    #[error("the {0} failed: {1}")]
    Kube(&'static str, #[source] kube::Error),
}

/// Checks `token` with a TokenReview, then the user it names with a SubjectAccessReview for
/// `get` on the non-resource URL `path`. Each call may take at most `timeout`.
pub async fn review(
    client: &kube::Client,
    token: &str,
    path: &str,
    timeout: Duration,
) -> Result<Access, ReviewError> {
    let token_review = TokenReview {
        spec: TokenReviewSpec {
            token: token.to_owned(),
            audiences: None,
        },
        ..TokenReview::default()
    };
    let reviewed = tokio::time::timeout(
        timeout,
        Api::<TokenReview>::all(client.clone()).create(&PostParams::default(), &token_review),
    )
    .await
    .map_err(|_| ReviewError::Timeout("TokenReview", timeout))?
    .map_err(|e| ReviewError::Kube("TokenReview", e))?;
    let status = reviewed.status.unwrap_or_default();
    let user = match (status.authenticated, status.user) {
        (Some(true), Some(user)) if user.username.as_deref().is_some_and(|u| !u.is_empty()) => user,
        _ => return Ok(Access::Unauthenticated),
    };
    let username = user.username.clone().unwrap_or_default();
    let access_review = SubjectAccessReview {
        spec: SubjectAccessReviewSpec {
            user: user.username,
            groups: user.groups,
            uid: user.uid,
            extra: user.extra,
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some(path.to_owned()),
                verb: Some("get".to_owned()),
            }),
            ..SubjectAccessReviewSpec::default()
        },
        ..SubjectAccessReview::default()
    };
    let decided = tokio::time::timeout(
        timeout,
        Api::<SubjectAccessReview>::all(client.clone())
            .create(&PostParams::default(), &access_review),
    )
    .await
    .map_err(|_| ReviewError::Timeout("SubjectAccessReview", timeout))?
    .map_err(|e| ReviewError::Kube("SubjectAccessReview", e))?;
    let allowed = decided.status.is_some_and(|s| s.allowed);
    Ok(if allowed {
        Access::Allowed { user: username }
    } else {
        Access::Forbidden { user: username }
    })
}
