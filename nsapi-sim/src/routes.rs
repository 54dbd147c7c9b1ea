//! The routing table: the NetSapiens endpoints under the base path (handlers in `api`), the
//! admin API under `/_sim/` (`admin`) and the 404 page for anything else. Paths and handlers
//! only: it holds no state and serves nothing; every node serves it (see `server`).

use std::sync::Arc;

use axum::Router;
use axum::routing::{any, delete, get, post};

use crate::server::Shared;
use crate::{admin, api};

/// The whole application but its state. `base` is normalised: empty or `/x` without a
/// trailing slash.
pub(crate) fn routes(base: &str) -> Router<Arc<Shared>> {
    let api = Router::new()
        .route(&format!("{base}/oauth2/token"), any(api::v1_token))
        .route(&format!("{base}/oauth2/token/"), any(api::v1_token))
        .route(&format!("{base}/oauth2/read"), get(api::read))
        .route(&format!("{base}/oauth2/read/"), get(api::read))
        .route(&format!("{base}/v2/tokens"), any(api::v2_tokens))
        .route(&format!("{base}/v2/tokens/"), any(api::v2_tokens))
        .route(&format!("{base}/v2/version"), get(api::v2_version))
        .route(&format!("{base}/v2/version/"), get(api::v2_version))
        .route(
            &format!("{base}/v2/jwt"),
            post(api::jwt_post)
                .get(api::jwt_get)
                .delete(api::jwt_delete),
        )
        .route(
            &format!("{base}/v2/jwt/"),
            post(api::jwt_post)
                .get(api::jwt_get)
                .delete(api::jwt_delete),
        )
        .route(
            &format!("{base}/v2/jwt/{{jti}}"),
            delete(api::jwt_delete_one),
        );
    api.merge(admin::router()).fallback(api::not_found)
}
